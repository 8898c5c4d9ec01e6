"""kill -9 a real `arbiter up` mid-match, start it again: the match goes on from exactly its state."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest
import trio

from clients.client import ArbiterHTTP, MatchClient, State, Welcome
from gameserver import storage
from gameserver.games.arena import Arena
from gameserver.recovery import restore
from gameserver.storage import MatchStore

pytestmark = pytest.mark.slow


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_server(data_dir, port, ws_port, extra=()):
    # One process: SIGKILL then hits the process that runs the matches (a worker of several would
    # instead see its parent die and stop cleanly). tools/faults_crash.py kills workers too.
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tools.cli", "up", "--data-dir", str(data_dir), "--port", str(port),
         "--ws-port", str(ws_port), "--snapshot-every", "25", "--workers", "1", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = b""
    with trio.fail_after(30):
        while b"Arbiter is up." not in seen:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"server exited: {seen.decode()}")
            seen += chunk
    return process


async def terminate(server):
    """SIGTERM: a clean shutdown exits 0."""
    server.send_signal(signal.SIGTERM)
    with trio.fail_after(15):
        assert await server.wait() == 0


async def ensure_dead(server):
    if server.returncode is None:
        server.kill()
        await server.wait()


async def test_kill9_mid_match_then_resume(tmp_path):
    port, ws_port = free_port(), free_port()
    server = await start_server(tmp_path, port, ws_port)
    try:
        async with ArbiterHTTP(f"http://127.0.0.1:{port}") as http:
            match = await http.create_match("arena")
            grant = await http.join_token(match["match_id"], "alice")
        async with MatchClient(grant["ws_url"], grant["token"], max_reconnect_s=30) as alice:
            assert isinstance(await alice.receive(), Welcome)
            with trio.fail_after(20):
                for i in range(60):
                    await alice.send_input({"dx": (i % 3) - 1, "dy": 1})
                    await alice.receive_state()
                while alice.acked < 60:
                    await alice.receive()
                seen = await alice.receive_state()
            assert alice.unacked == {}
            os.kill(server.pid, signal.SIGKILL)
            await server.wait()
            # two more inputs while the server is down: never acknowledged, so kept and resent
            await alice.send_input({"dx": 1, "dy": 1})
            await alice.send_input({"dx": -1, "dy": 0})
            server = await start_server(tmp_path, port, ws_port)
            with trio.fail_after(30):
                welcome = await alice.receive()
                while isinstance(welcome, State):  # sent just before the kill: committed too
                    seen, welcome = welcome, await alice.receive()
                assert isinstance(welcome, Welcome) and welcome.resumed
                assert welcome.last_seq >= 60  # nothing acknowledged was lost
                assert welcome.tick > seen.tick
                while alice.acked < 62:
                    await alice.receive()
            assert alice.reconnects == 1
        # the state the client saw before the kill is exactly what the file re-simulates at that tick
        store = MatchStore.open(storage.match_path(tmp_path, match["match_id"]), read_only=True)
        try:
            rebuilt = restore(store, Arena(), until=seen.tick)
            logged = {seq for (seq,) in store.conn.execute(
                "SELECT seq FROM inputs WHERE kind = 'input' AND player_id = 'alice'")}
        finally:
            store.close()
        assert json.loads(rebuilt.canonical()) == seen.state
        assert set(range(1, 63)) <= logged
        await terminate(server)
    finally:
        await ensure_dead(server)


async def test_alarms_due_while_the_process_was_dead_fire_after_restart(tmp_path):
    """A timer is set, the server is killed before it is due, and started again after: it fires."""
    port, ws_port = free_port(), free_port()
    argv = ["--game", "tools.bench_hibernation:Tally", "--hibernate-after", "0.2"]
    server = await start_server(tmp_path, port, ws_port, argv)
    try:
        async with ArbiterHTTP(f"http://127.0.0.1:{port}") as http:
            match = await http.create_match("tally")
            grant = await http.join_token(match["match_id"], "tim")
        async with MatchClient(grant["ws_url"], grant["token"], reconnect=False) as tim:
            await tim.receive()
            seq = await tim.send_input({"timer_in": 1.0})
            with trio.fail_after(10):
                while tim.acked < seq:
                    await tim.receive()
            os.kill(server.pid, signal.SIGKILL)  # the timer is committed, not yet due
            await server.wait()
        server = await start_server(tmp_path, port, ws_port, argv)
        path = storage.match_path(tmp_path, match["match_id"])
        with trio.fail_after(30):
            while True:  # no client: the node's scheduler alone must wake the match
                store = MatchStore.open(path, read_only=True, check=False)
                try:
                    fired = [data for _tick, kind, data in store.events_after(0) if kind == "fired"]
                finally:
                    store.close()
                if fired:
                    break
                await trio.sleep(0.05)
        assert len(fired) == 1 and fired[0]["ran"] >= fired[0]["due"]
        await terminate(server)
    finally:
        await ensure_dead(server)
