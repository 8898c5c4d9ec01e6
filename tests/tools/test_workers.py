"""A real `arbiter up --workers 2` on loopback: matches spread over both workers, clients play through
the ws_url they were given, admin calls reach the owner, a worker killed with SIGKILL is started again
while the other goes on, and a restarted server finds every match again. Then the pool in this
process with two real workers: a worker that cannot be started again (EMFILE), one stopped with
SIGSTOP (left out, unresponsive, skipped, killed, started again; its shutdown bounded; its late
requests not run), and a request cut short."""

import json
import os
import signal
import socket
import subprocess
import sys
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio
import trio.testing

from clients.client import ArbiterHTTP, MatchClient, State, Welcome

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent.parent
ENV = {key: value for key, value in os.environ.items() if key != "ARBITER_ADMIN_TOKEN"}  # admin calls open


def free_ports():
    """A free port for HTTP and two consecutive free ports for the workers' WebSockets."""
    while True:
        with socket.socket() as http, socket.socket() as first, socket.socket() as second:
            http.bind(("127.0.0.1", 0))
            first.bind(("127.0.0.1", 0))
            ws_port = first.getsockname()[1]
            try:
                second.bind(("127.0.0.1", ws_port + 1))
            except OSError:
                continue
            return http.getsockname()[1], ws_port


async def start_server(data_dir, port, ws_port, workers=2):
    """`arbiter up --workers N`, once it serves: (process, the ready file's contents)."""
    ready = data_dir.parent / "ready.json"
    ready.unlink(missing_ok=True)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tools.cli", "up", "--workers", str(workers), "--data-dir", str(data_dir),
         "--port", str(port), "--ws-port", str(ws_port), "--ready-file", str(ready)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    seen = b""
    with trio.fail_after(60):
        while b"Arbiter is up." not in seen:  # printed after the ready file is in place
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"server exited: {seen.decode()}")
            seen += chunk
    return process, json.loads(ready.read_text())


async def stop_server(process):
    process.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await process.wait() == 0  # a clean shutdown of the parent and every worker


def port_of(ws_url):
    return urlsplit(ws_url).port


async def move(clients, state):
    """The player whose turn it is drops a piece in the first column with room; the state once the
    move is acknowledged (committed) and applied."""
    player = state["turn"]
    client = clients[player]
    column = next(c for c in range(7) if state["board"][5][c] == "")
    seq = await client.send_input({"column": column})
    moves = state["moves"]
    while True:
        message = await client.receive()
        if isinstance(message, (State, Welcome)) and client.acked >= seq and message.state["moves"] > moves:
            return message.state


async def first_state(clients):
    """Once both players are in: the running match's state, as the first player to move sees it."""
    while True:
        for client in clients.values():
            message = await client.receive()
            if isinstance(message, (State, Welcome)) and message.state["turn"]:
                return message.state


async def test_two_workers_share_the_matches_survive_a_kill_and_a_restart(tmp_path):
    data_dir = tmp_path / "data"
    port, ws_port = free_ports()
    server, ready = await start_server(data_dir, port, ws_port)
    http_url = ready["http_url"]
    try:
        assert [w["ws_url"] for w in ready["workers"]] == [f"ws://127.0.0.1:{ws_port}", f"ws://127.0.0.1:{ws_port + 1}"]
        pids = {w["worker"]: w["pid"] for w in ready["workers"]}
        assert len(set(pids.values()) | {server.pid}) == 3  # three processes

        # four players queue for connect four: two matches, placed one on each worker
        players = [ArbiterHTTP(http_url) for _ in range(4)]
        async with AsyncExitStack() as stack:
            for player in players:
                await stack.enter_async_context(player)
                await player.guest()
            assignments = {}

            async def matchmake(player):
                assignments[player.player_id] = await player.matchmake("connect_four", timeout_s=30)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for player in players:
                        nursery.start_soon(matchmake, player)
            by_match = {}
            for player_id, assignment in assignments.items():
                by_match.setdefault(assignment["match_id"], {})[player_id] = assignment
            assert len(by_match) == 2 and all(len(seats) == 2 for seats in by_match.values())
            ports = {match_id: {port_of(a["ws_url"]) for a in seats.values()} for match_id, seats in by_match.items()}
            assert sorted(p for (p,) in ports.values()) == [ws_port, ws_port + 1]  # one match on each worker
            worker_of = {match_id: port_of(next(iter(seats.values()))["ws_url"]) - ws_port
                         for match_id, seats in by_match.items()}

            # every player connects through the ws_url it was given, and each match takes a move
            clients = {match_id: {} for match_id in by_match}
            for match_id, seats in by_match.items():
                for player_id, assignment in seats.items():
                    clients[match_id][player_id] = await stack.enter_async_context(
                        MatchClient(assignment["ws_url"], assignment["token"], max_reconnect_s=60))
            states = {}
            with trio.fail_after(30):
                for match_id in by_match:
                    states[match_id] = await move(clients[match_id], await first_state(clients[match_id]))
            assert all(state["moves"] == 1 for state in states.values())

            async with httpx.AsyncClient(base_url=http_url, timeout=30) as admin:  # sees both workers' matches
                listed = {m["match_id"]: m for m in (await admin.get("/v1/matches")).json()}
                assert set(listed) == set(by_match)
                for match_id in by_match:
                    status = (await admin.get(f"/v1/matches/{match_id}")).json()
                    assert status["status"] == "running" and status["live"]
                    assert port_of(status["ws_url"]) == ws_port + worker_of[match_id]
                    assert port_of(listed[match_id]["ws_url"]) == ws_port + worker_of[match_id]
                health = (await admin.get("/healthz")).json()
                assert health["workers"] == 2 and health["workers_up"] == 2 and health["unfinished_matches"] == 2
                assert health["connections"] == 4
                metrics = (await admin.get("/metrics")).text
                assert 'arbiter_connections{worker="0"} 2.0' in metrics
                assert 'arbiter_connections{worker="1"} 2.0' in metrics

                # kill -9 the worker of one match: the other match goes on meanwhile
                victim, survivor = sorted(by_match, key=lambda m: worker_of[m] != 1)
                killed = worker_of[victim]
                os.kill(pids[killed], signal.SIGKILL)
                with trio.fail_after(30):
                    states[survivor] = await move(clients[survivor], states[survivor])
                    # the victim's players reconnect once its worker is back (same port), resume, and
                    # the move made before the kill is still there
                    states[victim] = await move(clients[victim], states[victim])
                assert states[survivor]["moves"] == 2 and states[victim]["moves"] == 2
                assert all(c.reconnects == 0 for c in clients[survivor].values())
                with trio.fail_after(30):
                    while True:  # the parent marks the worker up once it says hello (which races its clients)
                        workers = {w["worker"]: w for w in (await admin.get("/v1/node/workers")).json()}
                        if workers[killed]["state"] == "up":
                            break
                        await trio.sleep(0.05)
                assert workers[killed]["restarts"] == 1 and workers[killed]["pid"] != pids[killed]
                assert workers[1 - killed]["restarts"] == 0 and workers[1 - killed]["pid"] == pids[1 - killed]
                assert f'arbiter_worker_restarts_total{{worker="{killed}"}} 1.0' in (
                    await admin.get("/metrics")).text

            # the whole server restarts: every client reconnects to its worker and its match goes on
            await stop_server(server)
            server, ready = await start_server(data_dir, port, ws_port)
            async with httpx.AsyncClient(base_url=http_url, timeout=30) as admin:
                assert {m["match_id"] for m in (await admin.get("/v1/matches")).json()} == set(by_match)
                for match_id in by_match:
                    status = (await admin.get(f"/v1/matches/{match_id}")).json()
                    assert status["status"] == "running" and status["tick"] >= 2
            with trio.fail_after(30):
                for match_id in by_match:
                    states[match_id] = await move(clients[match_id], states[match_id])
            assert all(state["moves"] == 3 for state in states.values())
            # each file stayed with the worker that owns it: the same ports as before
            for match_id in by_match:
                for client in clients[match_id].values():
                    assert port_of(client.ws_url) == ws_port + worker_of[match_id]
        await stop_server(server)
    finally:
        if server.returncode is None:
            server.kill()  # ours, by its PID; its workers stop when its end of their channel closes
            await server.wait()


async def test_a_bad_public_url_or_worker_count_is_refused(tmp_path):
    for args, words in ((["--workers", "2", "--public-ws-url", "wss://game.example/ws"], b"{worker}"),
                        (["--workers", "0"], b"1 to 256"), (["--workers", "two"], b"invalid")):
        done = await trio.run_process([sys.executable, "-m", "tools.cli", "up", "--data-dir", str(tmp_path), *args],
                                      cwd=ROOT, env=ENV, capture_stdout=True, capture_stderr=True, check=False)
        assert done.returncode == 2 and words in done.stderr, done.stderr


async def test_a_worker_that_cannot_start_stops_the_server_with_its_reason(tmp_path):
    port, ws_port = free_ports()
    with socket.socket() as taken:  # worker 1's port is in use
        taken.bind(("127.0.0.1", ws_port + 1))
        taken.listen()
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-m", "tools.cli", "up", "--workers", "2", "--data-dir", str(tmp_path),
                 "--port", str(port), "--ws-port", str(ws_port)],
                cwd=ROOT, env=ENV, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 1
    assert b"worker 1 did not start" in done.stderr and b"in use" in done.stderr.lower(), done.stderr



def running(pid):
    """Whether `pid` is a live process (an exited one not yet reaped by its new parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_workers_of_a_parent_killed_with_sigkill_stop_before_a_new_server_takes_the_directory(tmp_path):
    data_dir = tmp_path / "data"
    port, ws_port = free_ports()
    server, ready = await start_server(data_dir, port, ws_port)
    old_workers = [w["pid"] for w in ready["workers"]]
    try:
        async with httpx.AsyncClient(base_url=ready["http_url"], timeout=30) as admin:
            created = [(await admin.post("/v1/matches", json={"game": "arena"})).json() for _ in range(4)]
        assert {port_of(m["ws_url"]) for m in created} == {ws_port, ws_port + 1}
        os.kill(server.pid, signal.SIGKILL)
        await server.wait()
        # the workers notice their channel closed and stop; the new server waits for the lock they hold
        server, ready = await start_server(data_dir, port, ws_port)
        assert not any(running(pid) for pid in old_workers)
        async with httpx.AsyncClient(base_url=ready["http_url"], timeout=30) as admin:
            listed = {m["match_id"]: m["ws_url"] for m in (await admin.get("/v1/matches")).json()}
        assert listed == {m["match_id"]: m["ws_url"] for m in created}
        await stop_server(server)
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()


# -- the pool in this process, with real workers: failures of the system and stuck workers -------

def free_ws_ports(count):
    """The first of `count` consecutive free loopback ports in 8200-8299."""
    for first in range(8200, 8300 - count + 1):
        with ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
            return first
    raise RuntimeError("no free ports in 8200-8299")


@pytest.fixture
async def pool(tmp_path, nursery):
    """A WorkerPool of 2 workers, serving; stopped at the end (any worker stopped with SIGSTOP
    is continued first)."""
    from gameserver.config import NodeConfig
    from gameserver.games import builtin_games
    from gameserver.tokens import load_or_create_secret
    from tools.workers import WorkerPool

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    load_or_create_secret(data_dir / "secret.key")  # as tools/up.py does, before the workers read it
    pool = WorkerPool(NodeConfig(data_dir=data_dir), builtin_games(), host="127.0.0.1", ws_port=free_ws_ports(2),
                      workers=2, ws_base=lambda worker, port: f"ws://127.0.0.1:{port}")
    with trio.fail_after(60):
        await nursery.start(pool.run)
    yield pool
    for worker in pool.workers:
        if worker.process is not None and worker.process.returncode is None:
            worker.process.send_signal(signal.SIGCONT)
    if not pool.closing:
        with trio.fail_after(30):
            await pool.shutdown()


async def stop(worker):
    """SIGSTOP `worker`'s process; returns once it is stopped."""
    os.kill(worker.pid, signal.SIGSTOP)
    with trio.fail_after(5):
        while True:
            with open(f"/proc/{worker.pid}/stat") as stat:
                if stat.read().rpartition(")")[2].split()[0] == "T":
                    return
            await trio.sleep(0.001)


async def until(pool, index, condition):
    """Wait for `condition()` to hold, checking it at each state change of worker `index`."""
    while not condition():
        await pool._state_changed.setdefault(index, trio.Event()).wait()


async def test_a_worker_that_cannot_be_started_again_is_tried_again_while_the_others_go_on(
        pool, monkeypatch, caplog):
    """No file descriptor left for its channel (EMFILE) when worker 1 is restarted: logged, and
    tried again with its backoff; the parent and worker 0 go on."""
    import errno
    import types

    import tools.workers

    failures = [OSError(errno.EMFILE, "Too many open files")] * 2

    def socketpair():
        if failures:
            raise failures.pop()
        return socket.socketpair()

    monkeypatch.setattr(tools.workers, "socket", types.SimpleNamespace(socketpair=socketpair))
    first, other = pool.workers[1].pid, pool.workers[0].pid
    os.kill(first, signal.SIGKILL)
    with trio.fail_after(30):  # 0.5 + 1 + 2 s of backoff
        await until(pool, 1, lambda: pool.workers[1].restarts == 3 and pool.workers[1].state == "up")
    assert not failures and pool.workers[1].pid != first and pool.workers[0].pid == other
    assert caplog.text.count("worker 1 could not start again: worker 1: cannot make its control channel") == 2
    with trio.fail_after(10):
        assert (await pool.health())["workers_up"] == 2


async def test_a_stuck_worker_is_left_out_skipped_by_placement_then_killed_and_started_again(
        pool, monkeypatch, caplog):
    import tools.workers

    monkeypatch.setattr(tools.workers, "STATUS_TIMEOUT_S", 1.0)
    monkeypatch.setattr(tools.workers, "UNRESPONSIVE_S", 4.0)
    stuck = pool.workers[1]
    first = stuck.pid
    await stop(stuck)
    for ask in (pool.health, pool.worker_info, pool.listing, pool.metrics, pool.unusable, pool.failed_alarms):
        with trio.fail_after(2):  # what asks every worker answers without it, after STATUS_TIMEOUT_S
            answer = await ask()
        if ask == pool.health:
            assert answer["workers"] == 2 and answer["workers_up"] == 1
        elif ask == pool.worker_info:
            assert [w.state for w in answer] == ["up", "unresponsive"]
            assert answer[1].pid == first and answer[1].live_matches is None
        elif ask == pool.metrics:
            assert b"\narbiter_workers_up 1.0\n" in answer
    assert not stuck.answering
    with trio.fail_after(10):  # new matches all go to worker 0
        created = [await pool.create_match("arena") for _ in range(4)]
    assert {pool.owner_of(match.match_id).index for match in created} == {0}
    with trio.fail_after(30):  # killed after UNRESPONSIVE_S, and started again
        await until(pool, 1, lambda: stuck.restarts == 1 and stuck.state == "up")
    assert stuck.pid != first and "worker 1 (pid %d) has not answered for" % first in caplog.text
    with trio.fail_after(10):
        assert (await pool.health())["workers_up"] == 2


async def test_a_stuck_worker_with_a_full_channel_holds_neither_the_shutdown_nor_the_other_worker(
        pool, monkeypatch, caplog, nursery):
    import tools.workers
    from matchmaker.hosts import WorkerUnavailable

    monkeypatch.setattr(tools.workers, "STOP_TIMEOUT_S", 3.0)
    stuck = pool.workers[1]
    await stop(stuck)

    async def fill():  # a request larger than the socket's buffers: its send blocks
        with pytest.raises(WorkerUnavailable):
            await pool._call(stuck, "describe", match_id="x" * 8_000_000)

    nursery.start_soon(fill)
    await trio.testing.wait_all_tasks_blocked()
    with trio.fail_after(10):
        assert not await pool.shutdown()
    assert "workers [1] did not stop within 3 s" in caplog.text  # worker 0 stopped on its own


async def test_a_request_that_reaches_a_worker_after_its_caller_gave_up_is_not_run(pool):
    """A create sent to a stopped worker times out; once the worker goes on, it does not create the
    match the parent was told failed (the matchmaker would place those players again)."""
    from matchmaker.hosts import WorkerUnavailable

    stuck = pool.workers[1]
    await stop(stuck)
    with trio.fail_after(10):
        with pytest.raises(WorkerUnavailable, match="did not answer within 2 s"):
            await pool._call(stuck, "create", timeout=2, game="arena", params=None, name=None, roster=["ann", "bob"],
                             lobby_s=None, labels=None)
    os.kill(stuck.pid, signal.SIGCONT)
    with trio.fail_after(10):
        while (await pool._call(stuck, "status"))["creates_done"] < 1:  # the create was answered
            pass
        assert await pool._call(stuck, "listing") == []


async def test_a_request_cut_short_breaks_the_channel_and_the_worker_stops_cleanly_and_is_started_again(
        pool, caplog):
    """A request larger than the socket's buffers to a stopped worker: its deadline passes in the
    middle of the send, the parent closes the channel; the worker, once it goes on, reads the part
    that was written, then EOF, stops cleanly (exit 0), and is started again."""
    from matchmaker.hosts import WorkerUnavailable

    stuck = pool.workers[1]
    first = stuck.pid
    await stop(stuck)
    with trio.fail_after(10):
        with pytest.raises(WorkerUnavailable):
            await pool._call(stuck, "describe", timeout=1, match_id="x" * 8_000_000)
    assert stuck.link is None or stuck.link.channel.broken
    os.kill(first, signal.SIGCONT)
    with trio.fail_after(30):
        await until(pool, 1, lambda: stuck.restarts == 1 and stuck.state == "up")
    assert f"worker 1 (pid {first}) exited with status 0" in caplog.text
    with trio.fail_after(10):
        assert (await pool.health())["workers_up"] == 2
