"""A whole server (node, WebSocket endpoint, HTTP API) on loopback, driven by the client library."""

import json
from contextlib import AsyncExitStack

import attrs
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from clients.client import ArbiterHTTP, Error, MatchClient, MatchClosed, Welcome
from gameserver import tokens
from gameserver.config import NodeConfig
from gameserver.games import builtin_games
from gameserver.session import Limits
from tools.up import ServerConfig, run_server


@attrs.frozen
class Server:
    http_url: str
    ws_url: str
    stop: trio.Event


@pytest.fixture
async def server(tmp_path, nursery):
    stop = trio.Event()
    config = ServerConfig(node=NodeConfig(data_dir=tmp_path, limits=Limits(auth_timeout_s=1.0)),
                          games=builtin_games(), port=0, ws_port=0)
    running = await nursery.start(run_server, config, stop)
    yield Server(running.http_url, running.ws_url, stop)
    stop.set()


@pytest.fixture
async def http(server):
    async with ArbiterHTTP(server.http_url) as client:
        yield client


async def seat(http, match_id, player, role="player"):
    grant = await http.join_token(match_id, player, role)
    return grant["ws_url"], grant["token"]


async def test_two_players_see_each_other_move(server, http):
    match = await http.create_match("arena")
    with trio.fail_after(10):
        async with MatchClient(*await seat(http, match["match_id"], "alice")) as alice, \
                MatchClient(*await seat(http, match["match_id"], "bob"), fmt="msgpack") as bob:
            assert isinstance(await alice.receive(), Welcome)
            welcome = await bob.receive()
            assert isinstance(welcome, Welcome) and welcome.player == "bob"
            seq = await alice.send_input({"dx": 1, "dy": 0})
            await bob.send_input({"dx": 0, "dy": -1})
            while True:  # bob sees alice's move, acknowledged
                state = await bob.receive_state()
                if state.acks.get("alice", 0) >= seq and state.acks.get("bob", 0) >= 1:
                    break
            assert state.state["players"]["alice"]["vx"] == 5.0
            assert state.state["players"]["bob"]["vy"] == -5.0
            while alice.acked < seq:
                await alice.receive()
            assert alice.unacked == {}
            status = await http.match(match["match_id"])
            assert status["status"] == "running" and status["live"]
            assert {p["player_id"] for p in status["players"]} == {"alice", "bob"}


async def test_state_arrives_at_the_tick_rate(server, http):
    match = await http.create_match("arena")
    async with MatchClient(*await seat(http, match["match_id"], "carl")) as carl:
        await carl.receive()
        with trio.fail_after(10):
            first = await carl.receive_state()
            for _ in range(20):
                last = await carl.receive_state()
        assert last.tick == first.tick + 20  # one frame per tick, none skipped for a reader that keeps up


async def test_invalid_input_earns_an_error_and_the_match_goes_on(server, http):
    match = await http.create_match("arena")
    async with MatchClient(*await seat(http, match["match_id"], "dan")) as dan:
        await dan.receive()
        await dan.send_input({"dx": "far", "dy": 0})
        with trio.fail_after(5):
            while not isinstance(message := await dan.receive(), Error):
                pass
        assert message.code == "invalid_input" and message.seq == 1
        assert 1 not in dan.unacked  # refused for good: never resent
        seq = await dan.send_input({"dx": 0, "dy": 1})
        with trio.fail_after(5):
            while dan.acked < seq:
                await dan.receive()


async def expect_close(url, frames, code):
    with trio.fail_after(10):
        async with open_websocket_url(url) as ws:
            for frame in frames:
                await ws.send_message(frame)
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
    assert closed.value.reason.code == code, closed.value.reason
    return closed.value.reason


async def test_bad_tokens_are_refused(server, http, tmp_path):
    one = await http.create_match("arena")
    two = await http.create_match("arena")
    url_one, token_one = await seat(http, one["match_id"], "eve")
    url_two, _ = await seat(http, two["match_id"], "eve")
    reason = await expect_close(url_two, [json.dumps({"t": "auth", "token": token_one})], 4001)
    assert "another match" in reason.reason
    await expect_close(url_one, [json.dumps({"t": "auth", "token": token_one[:-3] + "abc"})], 4001)
    secret = (tmp_path / "secret.key").read_bytes()
    expired = tokens.sign(secret, tokens.Grant(one["match_id"], "eve", "player", 1000.0), 900.0)
    reason = await expect_close(url_one, [json.dumps({"t": "auth", "token": expired})], 4001)
    assert "expired" in reason.reason
    forged = tokens.sign(b"x" * 32, tokens.Grant(one["match_id"], "eve", "player", 4e9), 0)
    await expect_close(url_one, [json.dumps({"t": "auth", "token": forged})], 4001)
    await expect_close(url_one, [], 4002)  # no auth in time


async def test_spectator_cannot_send_inputs(server, http):
    match = await http.create_match("arena")
    async with MatchClient(*await seat(http, match["match_id"], "sam", role="spectator")) as sam:
        welcome = await sam.receive()
        assert welcome.role == "spectator"
        await sam.send_input({"dx": 1, "dy": 1})
        with trio.fail_after(5):
            while not isinstance(message := await sam.receive(), Error):
                pass
        assert message.code == "forbidden"
    assert (await http.match(match["match_id"]))["players"] == []


async def test_a_full_match_refuses_the_fifth_player(server, http):
    match = await http.create_match("arena")
    async with AsyncExitStack() as stack:
        for name in "abcd":
            await stack.enter_async_context(MatchClient(*await seat(http, match["match_id"], name)))
        with pytest.raises(MatchClosed) as closed:
            async with MatchClient(*await seat(http, match["match_id"], "e")):
                pass
        assert closed.value.code == 4005


async def test_unknown_path_and_subprotocol_are_rejected(server):
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(f"{server.ws_url}/nope"):
            pass
    assert rejected.value.status_code == 404
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(f"{server.ws_url}/v1/matches/{'0' * 26}", subprotocols=["chat"]):
            pass
    assert rejected.value.status_code == 400


async def test_ping_is_answered_before_auth(server, http):
    match = await http.create_match("arena")
    url, _ = await seat(http, match["match_id"], "pat")
    with trio.fail_after(5):
        async with open_websocket_url(url) as ws:
            await ws.send_message('{"t":"ping","id":7}')
            assert json.loads(await ws.get_message()) == {"t": "pong", "id": 7}
            await ws.send_message("not json")
            assert json.loads(await ws.get_message())["code"] == "bad_frame"


async def test_shutdown_closes_connections_with_1001(server, http):
    match = await http.create_match("arena")
    async with MatchClient(*await seat(http, match["match_id"], "sid"), reconnect=False) as sid:
        await sid.receive()
        server.stop.set()
        with trio.fail_after(10), pytest.raises(MatchClosed) as closed:
            while True:
                await sid.receive()
    assert closed.value.code == 1001


async def test_http_errors_are_problem_json(server):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        cases = [
            ("POST", "/v1/matches", {"game": "chess"}, 422, "unknown_game"),
            ("POST", "/v1/matches", {"game": "arena", "params": {"duration_s": "long"}}, 422, "invalid_params"),
            ("POST", "/v1/matches", {"gme": "arena"}, 422, "invalid_request"),
            ("GET", "/v1/matches/" + "0" * 26, None, 404, "match_not_found"),
            ("GET", "/v1/matches/..%2F..%2Fsecret.key", None, 404, None),
            ("POST", "/v1/matches/" + "0" * 26 + "/tokens", {"player_id": "a b"}, 422, "invalid_request"),
            ("GET", "/nope", None, 404, "not_found"),
        ]
        for method, path, body, status, code in cases:
            response = await client.request(method, path, json=body)
            assert response.status_code == status, (path, response.text)
            assert response.headers["content-type"].startswith("application/problem+json")
            if code:
                assert response.json()["code"] == code
        response = await client.post("/v1/matches", content=b"x" * 70000, headers={"content-type": "application/json"})
        assert response.status_code == 413

        async def chunks():  # no Content-Length: the limit applies while the body is read
            for _ in range(20):
                yield b" " * 4096

        response = await client.post("/v1/matches", content=chunks(), headers={"content-type": "application/json"})
        assert (response.status_code, response.json()["code"]) == (413, "body_too_large")


async def test_named_matches_are_idempotent(server, http):
    first = await http.create_match("arena", name="tournament-final")
    again = await http.create_match("arena", name="tournament-final")
    assert first["match_id"] == again["match_id"]


async def test_health_metrics_and_openapi(server, http):
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        metrics = (await client.get("/metrics")).text
        for name in ("arbiter_live_matches", "arbiter_connections", "arbiter_tick_duration_seconds_bucket",
                     "arbiter_tick_lateness_seconds_bucket", "arbiter_inputs_total", "arbiter_commit_seconds_bucket"):
            assert name in metrics
        spec = (await client.get("/openapi.json")).json()
        assert {"/v1/matches", "/v1/matches/{match_id}", "/v1/matches/{match_id}/tokens", "/healthz"} <= set(spec["paths"])


async def test_a_restarted_client_numbers_on_from_the_server(server, http):
    match = await http.create_match("arena")
    url, token = await seat(http, match["match_id"], "ria")
    async with MatchClient(url, token) as first:
        await first.receive()
        for _ in range(3):
            seq = await first.send_input({"dx": 1, "dy": 1})
        with trio.fail_after(5):
            while first.acked < seq:
                await first.receive()
    async with MatchClient(url, token) as second:  # a new process: it knows nothing of seq 1..3
        welcome = await second.receive()
        assert welcome.last_seq == 3
        seq = await second.send_input({"dx": -1, "dy": 0})
        assert seq == 4
        with trio.fail_after(5):
            while second.acked < 4:
                await second.receive()


async def test_a_frame_over_the_limit_closes_with_1009(server, http):
    match = await http.create_match("arena")
    url, token = await seat(http, match["match_id"], "big")
    frame = json.dumps({"t": "auth", "token": token, "pad": "x" * 70_000})
    await expect_close(url, [frame], 1009)
