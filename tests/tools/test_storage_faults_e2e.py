"""A data directory turned read-only under a running server (HTTP, matchmaker and WebSockets on loopback).

Read-only is `chmod 0555` on `data/matches`; a root process ignores that, so as root it is
`chattr +i` (immutable: nothing can be created, renamed or removed there, not even by root). If
neither is possible here the test is skipped with the reason.
"""

import contextlib
import hashlib
import os
import shutil
import subprocess

import httpx
import pytest
import trio

from clients.client import ArbiterHTTP, MatchClient, MatchClosed, State, Welcome
from gameserver import storage
from gameserver.config import NodeConfig
from gameserver.games.arena import Arena
from gameserver.games.connect_four import ConnectFour
from gameserver.storage import MatchStore
from matchmaker.queues import parse_modes
from tools.replay_open import code_check
from tools.replay_verify import verify
from tools.up import ServerConfig, run_server

QUEUES = """
[queues.connect_four]
game = "connect_four"
players = { min = 2, max = 2 }
"""


def _set_read_only(folder, on):
    if os.geteuid() != 0:
        folder.chmod(0o555 if on else 0o755)
        return
    chattr = shutil.which("chattr")
    if chattr is None:
        pytest.skip("running as root without chattr: no way to make a directory read-only for root here")
    done = subprocess.run([chattr, "+i" if on else "-i", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"running as root and chattr +i does not work here: {done.stderr.strip()}")


@contextlib.contextmanager
def read_only(folder):
    _set_read_only(folder, True)
    try:
        probe = folder / ".probe"
        try:
            probe.write_bytes(b"")
        except OSError:
            pass
        else:
            probe.unlink()
            pytest.skip(f"{folder} stays writable after chmod/chattr here")
        yield
    finally:
        _set_read_only(folder, False)


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
async def running(tmp_path, nursery):
    stop = trio.Event()
    games = {"arena": Arena, "connect_four": ConnectFour}
    config = ServerConfig(node=NodeConfig(data_dir=tmp_path, hibernate_after_s=0.3), games=games, port=0,
                          ws_port=0, queues=parse_modes(QUEUES, set(games)))
    running = await nursery.start(run_server, config, stop)
    yield running
    stop.set()


async def acknowledged(client, seq):
    with trio.fail_after(10):
        while client.acked < seq:
            await client.receive()


async def test_a_read_only_data_directory(running, tmp_path, caplog):
    folder = tmp_path / "matches"
    async with ArbiterHTTP(running.http_url) as http:
        arena = await http.create_match("arena")
        board = await http.create_match("connect_four")
        grants = [await http.join_token(board["match_id"], p) for p in ("p1", "p2")]
        alice_grant = await http.join_token(arena["match_id"], "alice")
        async with MatchClient(alice_grant["ws_url"], alice_grant["token"]) as alice, \
                MatchClient(grants[0]["ws_url"], grants[0]["token"]) as p1, \
                MatchClient(grants[1]["ws_url"], grants[1]["token"]) as p2:
            await acknowledged(alice, await alice.send_input({"dx": 1, "dy": 0}))
            # the board match starts, then hibernates (its file closed, its WAL gone) with both connected
            with trio.fail_after(10):
                while board["match_id"] not in running.node.hibernated or board["match_id"] in running.node.actors:
                    await trio.sleep(0.02)  # a bounded wait for the node's state, not a synchronization
            board_path = storage.match_path(tmp_path, board["match_id"])
            assert not os.path.exists(f"{board_path}-wal")
            before = digest(board_path)

            with read_only(folder):
                # a new match: refused with a clear error, nothing left behind
                with pytest.raises(httpx.HTTPStatusError) as refused:
                    await http.create_match("arena")
                assert refused.value.response.status_code == 503
                assert refused.value.response.json()["code"] == "storage_unavailable"
                # the matchmaker cannot place a match either: it says so and keeps the tickets queued
                async with ArbiterHTTP(running.http_url) as g1, ArbiterHTTP(running.http_url) as g2:
                    await g1.guest()
                    await g2.guest()
                    t1 = await g1.create_ticket("connect_four")
                    await g2.create_ticket("connect_four")
                    with trio.fail_after(10):
                        while "placing a connect_four match failed" not in caplog.text:
                            await g1.ticket(t1["ticket_id"], wait_s=0.5, version=t1["version"])
                    assert (await g1.ticket(t1["ticket_id"]))["status"] == "queued"
                # the live match goes on: its files are open
                await acknowledged(alice, await alice.send_input({"dx": 0, "dy": 1}))
                # the hibernated one cannot be woken (SQLite cannot create its log): the player is told
                # to try again later (1013) and why, the file is listed as unusable with the reason, and
                # is not touched
                p1.reconnect = False  # to see the close, instead of the client trying again
                await p1.send_input({"column": 3})
                with pytest.raises(MatchClosed) as closed:
                    while True:
                        await p1.receive()
                assert closed.value.code == 1013 and closed.value.reason.startswith("try again later")
                assert "storage error" in closed.value.reason
                unusable = (await http._call("GET", "/v1/node/unusable"))
                assert [u["path"] for u in unusable] == [str(board_path)]
                assert "storage error" in unusable[0]["reason"]
                assert (await http._call("GET", "/healthz"))["unusable_files"] == 1
                assert digest(board_path) == before
                assert sorted(p.name for p in folder.iterdir() if p.name.startswith(board["match_id"])) == [
                    board_path.name]

            # writable again: the match wakes, nothing was lost, the report is gone
            async with MatchClient(grants[0]["ws_url"], grants[0]["token"]) as again:
                welcome = await again.receive()
                assert isinstance(welcome, Welcome) and welcome.state["turn"] in ("p1", "p2")
            assert await http._call("GET", "/v1/node/unusable") == []
            await acknowledged(alice, await alice.send_input({"dx": -1, "dy": 0}))
    for match_id, game in ((arena["match_id"], Arena), (board["match_id"], ConnectFour)):
        store = MatchStore.open(storage.match_path(tmp_path, match_id), read_only=True)
        try:
            assert verify(store, game(), code_check(store.meta(), game))["ok"]
        finally:
            store.close()
