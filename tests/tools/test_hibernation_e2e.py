"""Hibernation and failed alarms through a real server on loopback."""

import json

import attrs
import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from clients.client import ArbiterHTTP, MatchClient, State, Welcome
from gameserver import storage
from gameserver.config import NodeConfig
from gameserver.storage import MatchStore
from gameserver.game import Game
from tools.alarms import collect
from tools.up import ServerConfig, run_server


@attrs.define
class Counter:
    moves: int = 0


@attrs.frozen
class Move:
    alarm_in: float | None = None


class Stubborn(Game):
    """Turn-based: counts moves; a move may set the alarm, whose handler always raises."""
    name = "stubborn"
    tick_rate = 0
    max_players = 2
    state_type = Counter
    input_type = Move

    def init(self, params, ctx):
        return Counter()

    def tick(self, state, inputs, ctx):
        for entry in inputs:
            state.moves += 1
            if entry.data.alarm_in is not None:
                ctx.set_alarm(ctx.now + entry.data.alarm_in)

    def on_alarm(self, state, ctx):
        raise RuntimeError("the handler always fails")


@pytest.fixture
async def running(tmp_path, nursery):
    stop = trio.Event()
    config = ServerConfig(node=NodeConfig(data_dir=tmp_path, hibernate_after_s=0.2, alarm_max_retries=0),
                          games={"stubborn": Stubborn}, port=0, ws_port=0)
    running = await nursery.start(run_server, config, stop)
    yield running
    stop.set()


async def until(condition, timeout=10):
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.01)


async def test_a_hibernated_match_answers_pings_asleep_and_wakes_on_a_move(running):
    node = running.node
    async with ArbiterHTTP(running.http_url) as http:
        match = await http.create_match("stubborn")
        grant = await http.join_token(match["match_id"], "ann")
    match_id = match["match_id"]
    async with MatchClient(grant["ws_url"], grant["token"], attachment={"client": "bench", "v": 3}) as ann:
        assert isinstance(await ann.receive(), Welcome)
        # hibernating: the node holds the connections first, then the actor closes its store and leaves
        await until(lambda: match_id in node.hibernated and match_id not in node.actors)
        # the connection and its attachment are kept by the node, and recorded in the match file
        assert [c.attachment for c in node.hibernated[match_id]] == [{"client": "bench", "v": 3}]
        store = MatchStore.open(storage.match_path(running.node.data_dir, match_id), read_only=True, check=False)
        try:
            assert [(p, a) for _i, p, _r, a, _at in store.connections()] == [("ann", {"client": "bench", "v": 3})]
        finally:
            store.close()
        async with open_websocket_url(grant["ws_url"]) as other:  # a second socket, not in the match
            await other.send_message('{"t":"ping","id":1}')
            assert json.loads(await other.get_message()) == {"t": "pong", "id": 1}
        with trio.fail_after(5):
            await ann._ws.ping(b"are you there")  # a WebSocket ping on the match's own connection: ponged
        assert match_id in node.hibernated and match_id not in node.actors  # pings did not wake it
        async with httpx.AsyncClient(base_url=running.http_url) as client:
            status = (await client.get(f"/v1/matches/{match_id}")).json()
            assert status["live"] is False and status["players"][0]["connected"] is True
            assert status["players"][0]["attachment"] == {"client": "bench", "v": 3}
            assert (await client.get("/healthz")).json()["hibernated_matches"] == 1
        seq = await ann.send_input({})
        with trio.fail_after(10):
            while ann.acked < seq:
                message = await ann.receive()
        assert isinstance(message, State) and message.state["moves"] == 1
        assert match_id in node.actors or match_id in node.hibernated


async def test_a_failed_alarm_shows_in_the_http_api_and_the_cli(running, tmp_path):
    async with ArbiterHTTP(running.http_url) as http:
        match = await http.create_match("stubborn")
        grant = await http.join_token(match["match_id"], "bob")
        async with MatchClient(grant["ws_url"], grant["token"]) as bob:
            await bob.receive()
            seq = await bob.send_input({"alarm_in": -1})  # due at once; its handler raises; no retries
            with trio.fail_after(10):
                while bob.acked < seq:
                    await bob.receive()
        async with httpx.AsyncClient(base_url=running.http_url) as client:
            with trio.fail_after(10):
                while not (failed := (await client.get("/v1/alarms/failed")).json()):
                    await trio.sleep(0.01)
            assert failed[0]["match_id"] == match["match_id"] and failed[0]["name"] == "alarm"
            assert "always fails" in failed[0]["last_error"]
            status = await http.match(match["match_id"])
            assert status["failed_alarms"] == 1 and "failed" in status["status_reason"]
    rows, problems = collect(tmp_path, failed_only=True)
    assert [(r["match_id"], r["name"], r["failed"]) for r in rows] == [(match["match_id"], "alarm", True)]
    assert problems == []


async def test_bad_tokens_never_disturb_seats_or_timers(running, tmp_path):
    from gameserver import tokens

    async with ArbiterHTTP(running.http_url) as http:
        match = await http.create_match("stubborn")
        match_id = match["match_id"]
        grant = await http.join_token(match_id, "ann")
        async with MatchClient(grant["ws_url"], grant["token"], reconnect=False) as ann:
            await ann.receive()
        # ann dropped: her seat is held by a reconnect-grace alarm
        with trio.fail_after(10):
            while not any(a["name"] == "arbiter:grace:ann" for a in (await http.match(match_id))["alarms"]):
                await trio.sleep(0.01)
        before = await http.match(match_id)
        secret = (tmp_path / "secret.key").read_bytes()
        expired = tokens.sign(secret, tokens.Grant(match_id, "ann", "player", 1000.0), 900.0)
        forged = tokens.sign(b"y" * 32, tokens.Grant(match_id, "ann", "player", 4e9), 0)
        other = (await http.create_match("stubborn"))["match_id"]
        wrong_match = (await http.join_token(other, "ann"))["token"]
        for token in (expired, forged, wrong_match, "garbage"):
            async with open_websocket_url(grant["ws_url"]) as ws:
                await ws.send_message(json.dumps({"t": "auth", "token": token}))
                with pytest.raises(Exception):
                    await ws.get_message()
            assert ws.closed.code == 4001
        after = await http.match(match_id)
        assert after["alarms"] == before["alarms"] and after["players"] == before["players"]
        assert [p["player_id"] for p in after["players"] if p["seated"]] == ["ann"]
