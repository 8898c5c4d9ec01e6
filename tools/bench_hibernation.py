"""`arbiter bench hibernation`: memory of hibernated matches, wake latency, alarm lateness.

Starts `arbiter up --workers N` (N is `--workers`, default 1; with the turn-based bench game
`Tally` below and a short hibernation delay) in a subprocess on a fresh data directory, then, over
real loopback WebSockets:

1. wake: `--wake-matches` matches each get `--moves` moves (default 1,000) logged; then, 1 +
   `--wakes` times, once all are hibernated, one more move is sent to each, one match at a time:
   the time from sending it to the state frame that acknowledges it is the wake latency, measured
   by the client (this process). The first round warms up (a process's first wake runs code for
   the first time) and is reported apart (`wake_warmup_ms`), the others make `wake_ms`.
2. alarms: `--alarm-matches` matches (one client each, held by this process) connect and
   hibernate; once all are connected each sets a timer due in a 10 s window that opens after the
   wakes this causes (20 ms a match, plus 3 s); the matches hibernate again; the game reports the
   step time at which each timer ran; lateness = that - due. Alarms over 10 ms late are listed with
   when they came (seconds into the window), beside this process's own stalls over 20 ms: late
   alarms in one burst that this process saw too point at the machine, not the server.
3. memory: `--matches` matches with 2 connected clients each, all hibernated. The clients are held
   by separate client processes (this module run as `python -m tools.bench_hibernation hold SPEC`,
   at most 8,000 connections each, so that no process needs more open files than the machine
   allows). Each worker's RSS is read, each time once no match is live and the node has given
   freed memory back (it trims the heap 1 s after a hibernation): (a) at the start (after one
   spectator of a match of its own connected, so that a hibernation trimmed the heap), (b) after
   `--bare` more spectators (authenticated connections that own no match) of that match
   connected, (c) after the matches were created, their players connected and every match
   hibernated, (d) after `--bare` more spectators connected. A connection's own cost on a worker is
   (b - a) / bare; per hibernated match beyond its 2 connections: the sum over workers of
   (c - b - 2 x its matches x its connection cost), divided by the matches (so a match's creation
   and its bookkeeping in the node count). (d - c) / bare, the order used before `--workers`
   existed, is reported for comparison: at scale it can come out near zero or below, as the late
   spectators' objects fill the holes the matches' activations and hibernations left in the heap.
   With N > 1 the HTTP parent holds no match: its RSS is reported apart.

Phases 1 and 2 run against one server, so with `--workers N` the wake and alarm matches are
spread over the N workers; phase 3 runs against a fresh server of N workers too (what the earlier
phases leave in a heap would hide the connections' cost). The server's processes run on the first
N CPUs and this process and the client processes on the others, where the machine has more than
N CPUs; otherwise nothing is pinned and they share every CPU (the report says so). Each phase
reports the 1-minute load average at its start and end, the CPU other processes of the machine
used while it ran and the virtual machine's steal time.

Prints one JSON object (`--json`) with `hibernated_bytes_per_match`, `wake_ms` and
`alarm_lateness_ms`, and the raw figures behind them.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import attrs
import httpx
import trio
from trio_websocket import (
    ConnectionClosed,
    HandshakeError,
    connect_websocket_url,
    open_websocket_url,
)

from gameserver.game import Context, Game, PlayerInput

ROOT = Path(__file__).resolve().parent.parent
HIBERNATE_AFTER_S = 0.5
MOVES_PER_S = 50  # below the server's per-connection input limit (60/s)
ALARM_SETUP_S = 3.0  # the window opens this long after the last client connected (and set its timer)
ALARM_WINDOW_S = 10.0  # spread over this many seconds
WAKE_BUDGET_S = 0.02  # per match, for the wakes that setting the timers causes
FD_RESERVE = 2000  # open files a server process keeps for everything but the held connections
CLIENTS_PER_PROCESS = 8000  # connections one client process holds (well under the open-file limit)
CONNECT_CONCURRENCY = 100  # connections a client process opens at once
CONNECT_TIMEOUT_S = 60.0  # one connection's handshake and welcome
HOLD_TIMEOUT_S = 900.0  # every client process has connected everything
SETTLE_TIMEOUT_S = 600.0  # every match hibernated once its clients connected
TRIM_WAIT_S = 3.0  # after the last hibernation, before reading RSS: the node trims the heap 1 s after one
SERVER_READY_TIMEOUT_S = 30.0
MAX_SPECTATORS = 1_000_000  # the server's cap per match (default 64), raised: --bare spectators watch one match


@attrs.define
class Count:
    moves: int = 0
    timer_due: float | None = None


@attrs.frozen
class Move:
    timer_in: float | None = None


class Tally(Game):
    """The bench's turn-based game: counts moves; a move may set a timer, which reports its lateness."""

    name = "tally"
    version = "1"
    tick_rate = 0
    min_players = 1
    max_players = 2
    state_type = Count
    input_type = Move
    empty_timeout_s = None

    def init(self, params: object, ctx: Context) -> Count:
        return Count()

    def tick(self, state: Count, inputs: list[PlayerInput[Move]], ctx: Context) -> None:
        for entry in inputs:
            state.moves += 1
            if entry.data.timer_in is not None:
                state.timer_due = ctx.now + entry.data.timer_in
                ctx.set_timer("t", state.timer_due)

    def on_timer(self, state: Count, name: str, ctx: Context) -> None:
        ctx.emit("fired", {"due": state.timer_due, "ran": ctx.now})
        state.timer_due = None


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50": pick(0.50), "p99": pick(0.99), "max": round(ordered[-1], 3), "n": len(ordered)}


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time every process of the machine spent, all CPUs, from /proc/stat."""
    with open("/proc/stat") as file:
        ticks = [int(n) for n in file.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def steal_seconds() -> float:
    """Time this virtual machine's CPUs were ready to run but the host ran something else (/proc/stat)."""
    with open("/proc/stat") as file:
        ticks = [int(n) for n in file.readline().split()[1:]]
    return ticks[7] / os.sysconf("SC_CLK_TCK") if len(ticks) > 7 else 0.0


class PhaseClock:
    """Wall time, load average, the CPU other processes used and the host's steal, over one phase."""

    def __init__(self, ours: list[int]):
        self.ours = ours  # PIDs counted as the bench's own (the server, this process, client processes)
        self.at, self.load, self.busy, self.own = time.monotonic(), os.getloadavg()[0], machine_busy_seconds(), \
            self._own()
        self.steal = steal_seconds()

    def _own(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.ours)

    def done(self, clients: list[int] = ()) -> dict:
        """`clients`: processes started during the phase (counted whole), read before they exit."""
        elapsed = time.monotonic() - self.at
        own = self._own() + sum(cpu_seconds(pid) for pid in clients) - self.own
        other = max(0.0, machine_busy_seconds() - self.busy - own)
        return {"seconds": round(elapsed, 1), "load_avg_1m": [round(self.load, 2), round(os.getloadavg()[0], 2)],
                "bench_cpu_pct": round(own / elapsed * 100, 1), "other_cpu_pct": round(other / elapsed * 100, 1),
                "steal_pct": round((steal_seconds() - self.steal) / elapsed * 100, 1)}


@attrs.frozen
class Worker:
    """A process that holds matches: a worker of `arbiter up --workers N`, or the whole server with N = 1."""

    index: int
    pid: int
    ws_url: str


@attrs.define
class Server:
    process: subprocess.Popen
    http_url: str
    workers: list[Worker]
    cpus: list[int] | None  # where its processes run (None: not pinned)

    @property
    def http_pid(self) -> int | None:
        """The HTTP parent when it holds no match (workers > 1), else None: it is worker 0 itself."""
        return self.process.pid if len(self.workers) > 1 else None

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers] + ([self.process.pid] if self.http_pid else [])

    def owner(self, ws_url: str) -> Worker:
        for worker in self.workers:
            if ws_url.startswith(worker.ws_url + "/"):
                return worker
        raise RuntimeError(f"no worker serves {ws_url}")


class Bench:
    def __init__(self, args: argparse.Namespace, server: Server, client_cpus: list[int] | None, work: Path):
        self.args = args
        self.server = server
        self.client_cpus = client_cpus
        self.work = work
        self.clients: list[subprocess.Popen] = []  # the client processes of the memory phase, stopped by run()
        self.late_alarms: list[list[float]] = []  # [seconds into the alarm window when it came, lateness ms]
        self.own_stalls: list[list[float]] = []  # [seconds into the alarm window, ms this process stalled]

    async def create_matches(self, http: httpx.AsyncClient, count: int) -> list[tuple[str, str]]:
        """`count` Tally matches: [(match id, ws_url)]."""
        created: list[tuple[str, str]] = []
        limit = trio.CapacityLimiter(16)

        async def one() -> None:
            async with limit:
                response = await http.post("/v1/matches", json={"game": "tally"})
                response.raise_for_status()
                body = response.json()
                created.append((body["match_id"], body["ws_url"]))

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        return created

    async def create(self, http: httpx.AsyncClient, count: int) -> list[str]:
        return [match_id for match_id, _ in await self.create_matches(http, count)]

    async def grant(self, http: httpx.AsyncClient, match_id: str, player: str, role: str = "player") -> dict:
        response = await http.post(f"/v1/matches/{match_id}/tokens", json={"player_id": player, "role": role})
        response.raise_for_status()
        return response.json()

    async def grants(self, http: httpx.AsyncClient, wanted: list[tuple[str, str, str]]) -> list[dict]:
        """Tokens for [(match id, player, role)], in that order: [{"ws_url", "token"}]."""
        found: list[dict | None] = [None] * len(wanted)
        limit = trio.CapacityLimiter(16)

        async def one(i: int) -> None:
            async with limit:
                grant = await self.grant(http, *wanted[i])
                found[i] = {"ws_url": grant["ws_url"], "token": grant["token"]}

        async with trio.open_nursery() as nursery:
            for i in range(len(wanted)):
                nursery.start_soon(one, i)
        return found  # type: ignore[return-value]

    async def health(self, http: httpx.AsyncClient) -> dict:
        return (await http.get("/healthz")).json()

    async def until_hibernated(self, http: httpx.AsyncClient, count: int, timeout: float) -> None:
        with trio.fail_after(timeout):
            while (await self.health(http))["hibernated_matches"] < count:
                await trio.sleep(0.1)

    async def until_settled(self, http: httpx.AsyncClient, count: int, timeout: float) -> None:
        """No match live on any worker, and at least `count` hibernated."""
        with trio.fail_after(timeout):
            while True:
                workers = (await http.get("/v1/node/workers")).json()
                if (all(w["live_matches"] == 0 for w in workers)
                        and (await self.health(http))["hibernated_matches"] >= count):
                    return
                await trio.sleep(0.2)

    # -- phase 1: wake latency ------------------------------------------------------------------

    async def wake(self, http: httpx.AsyncClient) -> list[list[float]]:
        """Build each match's history concurrently; then wake the hibernated matches one at a time,
        so that each wake is measured alone, as a player's move on an idle node would be: a warm-up
        round (the first wakes in a process run code for the first time: 10 to 20 ms for the very
        first one here), then `--wakes` rounds. The wake latencies (ms), a list per round."""
        rounds: list[list[float]] = []
        ids = await self.create(http, self.args.wake_matches)
        sockets: dict[str, object] = {}
        seqs: dict[str, int] = {}
        ready = trio.Event()
        done = trio.Event()

        async def play(match_id: str) -> None:
            grant = await self.grant(http, match_id, "p")
            async with open_websocket_url(grant["ws_url"]) as ws:
                await ws.send_message(json.dumps({"t": "auth", "token": grant["token"]}))
                await _until_ack(ws, 0)
                start = trio.current_time()
                for seq in range(1, self.args.moves + 1):  # the logged moves, within the input rate limit
                    await trio.sleep_until(start + seq / MOVES_PER_S)
                    await ws.send_message(json.dumps({"t": "input", "seq": seq, "data": {}}))
                    await _until_ack(ws, seq)
                sockets[match_id], seqs[match_id] = ws, self.args.moves
                if len(sockets) == len(ids):
                    ready.set()
                await done.wait()

        async with trio.open_nursery() as nursery:
            for match_id in ids:
                nursery.start_soon(play, match_id)
            await ready.wait()
            for _ in range(1 + self.args.wakes):  # a warm-up round first
                await self.until_hibernated(http, len(ids), timeout=60)
                rounds.append([])
                for match_id in ids:
                    ws = sockets[match_id]
                    seqs[match_id] += 1
                    sent = time.perf_counter()
                    await ws.send_message(json.dumps({"t": "input", "seq": seqs[match_id], "data": {}}))
                    await _until_ack(ws, seqs[match_id])
                    rounds[-1].append((time.perf_counter() - sent) * 1000)
            done.set()
        return rounds

    async def _until_live(self, http: httpx.AsyncClient, match_id: str, live: bool) -> None:
        with trio.fail_after(30):
            while (await http.get(f"/v1/matches/{match_id}")).json()["live"] != live:
                await trio.sleep(0.05)

    # -- phase 2: alarm lateness ----------------------------------------------------------------

    async def alarms(self, http: httpx.AsyncClient) -> list[float]:
        """Every client connects first; then each sets a timer due in a 10 s window that opens 2 s
        later, when every match is idle (hibernated): the lateness of an idle node's alarms."""
        lateness: list[float] = []
        ids = await self.create(http, self.args.alarm_matches)
        rng = random.Random(7)
        joined = trio.CapacityLimiter(64)
        connected = [0]
        all_connected = trio.Event()
        window: list[float] = []

        async def wait_for_timer(match_id: str) -> None:
            released = False
            await joined.acquire()  # bounds the connecting, not the waiting
            try:
                grant = await self.grant(http, match_id, "p")
                async with open_websocket_url(grant["ws_url"]) as ws:
                    await ws.send_message(json.dumps({"t": "auth", "token": grant["token"]}))
                    await _until_ack(ws, 0)
                    joined.release()
                    released = True
                    connected[0] += 1
                    if connected[0] == len(ids):
                        # setting the timers wakes every match once: leave time for those wakes
                        window.append(time.time() + ALARM_SETUP_S + WAKE_BUDGET_S * len(ids))
                        all_connected.set()
                    await all_connected.wait()
                    timer_in = window[0] + rng.uniform(0, ALARM_WINDOW_S) - time.time()
                    await ws.send_message(json.dumps({"t": "input", "seq": 1, "data": {"timer_in": timer_in}}))
                    with trio.fail_after(ALARM_SETUP_S + ALARM_WINDOW_S + 60):
                        while True:
                            frame = json.loads(await ws.get_message())
                            if frame.get("kind") == "fired":
                                lateness.append((frame["data"]["ran"] - frame["data"]["due"]) * 1000)
                                if lateness[-1] > 10:  # when, in the window: a stall or spread out?
                                    self.late_alarms.append([round(time.time() - window[0], 3),
                                                             round(lateness[-1], 3)])
                                return
            finally:
                if not released:
                    joined.release()

        async with trio.open_nursery() as watching:
            watching.start_soon(self._watch_own_loop, window)
            async with trio.open_nursery() as nursery:
                for match_id in ids:
                    nursery.start_soon(wait_for_timer, match_id)
            watching.cancel_scope.cancel()
        return lateness

    async def _watch_own_loop(self, window: list[float]) -> None:
        """This process's own stalls during the alarm window (a 5 ms sleep that took 20 ms more): a stall
        seen here and in the server's alarms at once is the machine's, not the server's."""
        while True:
            asked = time.monotonic()
            await trio.sleep(0.005)
            lag = (time.monotonic() - asked - 0.005) * 1000
            if lag > 20 and window:
                self.own_stalls.append([round(time.time() - window[0], 3), round(lag, 1)])

    # -- phase 3: memory of hibernated matches ----------------------------------------------------

    def rss(self) -> dict[int, int]:
        """RSS of each process of the server, by PID."""
        return {pid: rss_bytes(pid) for pid in self.server.pids}

    async def hold(self, seats: list[dict], name: str) -> None:
        """Start client processes holding `seats` open; return once each has connected all of its own."""
        started = _start_clients(self.work, seats, name, self.client_cpus)
        self.clients.extend(started)
        print(f"memory: {len(seats)} {name} connections in {len(started)} client processes", file=sys.stderr)
        with trio.fail_after(HOLD_TIMEOUT_S):
            lines = []
            for client in started:
                lines.append(await trio.to_thread.run_sync(client.stdout.readline, abandon_on_cancel=True))
        failed = []
        for client, line in zip(started, lines):
            word, _, body = line.partition(" ")
            if word != "ready":
                raise RuntimeError(f"client process {client.pid} exited (status {client.wait()}) before it connected")
            report = json.loads(body)
            if report["failed"]:
                failed.append(report)
        if failed:
            raise RuntimeError(f"{name}: connections failed: {failed}")

    async def spectate(self, http: httpx.AsyncClient, watched: list[str], name: str, count: int | None = None) -> None:
        """`count` (default `--bare`) authenticated spectators of each match in `watched` (one per worker),
        which own no match."""
        seats = await self.grants(http, [(match_id, f"{name}{i}", "spectator") for match_id in watched
                                         for i in range(count or self.args.bare)])
        await self.hold(seats, name)

    async def anchors(self, http: httpx.AsyncClient) -> dict[int, str]:
        """A match on each worker for the first spectators to watch, created before anything is measured."""
        found: dict[int, str] = {}
        with trio.fail_after(60):
            while len(found) < len(self.server.workers):
                for match_id, ws_url in await self.create_matches(http, len(self.server.workers)):
                    found.setdefault(self.server.owner(ws_url).index, match_id)
        return found

    async def reading(self, http: httpx.AsyncClient, hibernated: int) -> dict[int, int]:
        """Each server process's RSS once no match is live and the node gave freed memory back to the OS
        (it trims about 1 s after a hibernation)."""
        await self.until_settled(http, hibernated, timeout=SETTLE_TIMEOUT_S)
        await trio.sleep(TRIM_WAIT_S)
        return self.rss()

    async def memory(self, http: httpx.AsyncClient) -> dict:
        matches = self.args.matches
        anchors = await self.anchors(http)
        # one spectator per worker first: its match hibernates, so the node trims what starting left
        await self.spectate(http, list(anchors.values()), "primer", count=1)
        readings = {"before": await self.reading(http, 0)}
        # A connection's own cost, before the matches exist: later, the spectators' objects would
        # partly fill the holes that thousands of activations and hibernations leave in the heap.
        await self.spectate(http, list(anchors.values()), "spectators")
        readings["spectators"] = await self.reading(http, 0)
        # Everything a match costs from here on counts: its creation's bookkeeping too.
        created = await self.create_matches(http, matches)
        owned: dict[int, list[str]] = {w.index: [] for w in self.server.workers}
        for match_id, ws_url in created:
            owned[self.server.owner(ws_url).index].append(match_id)
        players = await self.grants(http, [(match_id, p, "player") for match_id, _ in created for p in ("a", "b")])
        await self.hold(players, "players")
        readings["hibernated"] = await self.reading(http, matches)
        # The same measure once the matches hibernated (the order before --workers existed), for comparison.
        await self.spectate(http, [ids[0] for ids in owned.values() if ids], "late_spectators")
        readings["late_spectators"] = await self.reading(http, matches)
        return memory_figures(self.server, owned, self.args.bare, readings, client_processes=len(self.clients))


READINGS = ("before", "spectators", "hibernated", "late_spectators")  # RSS by PID, in this order


def memory_figures(server: Server, owned: dict[int, list[str]], bare: int, readings: dict[str, dict[int, int]],
                   client_processes: int) -> dict:
    """Per worker, then over all workers: RSS readings (bytes, by PID, named as in READINGS) -> bytes per
    hibernated match beyond its 2 connections, a connection's cost from the spectators measured before
    the matches connected (and, for comparison, from those measured after they hibernated)."""
    before, spectators, hibernated, late = (readings[name] for name in READINGS)
    per_worker = []
    totals = {"grown": 0.0, "beyond": 0.0, "beyond_late": 0.0}  # over the workers that got matches
    for worker in server.workers:
        pid, count = worker.pid, len(owned[worker.index])
        if not count:  # a worker without matches grew by other things
            per_worker.append({"worker": worker.index, "pid": pid, "matches": 0, "connections": 0,
                               **{f"rss_{name}_mb": _mb(readings[name][pid]) for name in READINGS}})
            continue
        connection = (spectators[pid] - before[pid]) / bare
        late_connection = (late[pid] - hibernated[pid]) / bare
        grown = hibernated[pid] - spectators[pid]  # the matches and their connections
        totals["grown"] += grown
        totals["beyond"] += grown - 2 * count * connection
        totals["beyond_late"] += grown - 2 * count * late_connection
        per_worker.append({
            "worker": worker.index, "pid": pid, "matches": count, "connections": 2 * count,
            **{f"rss_{name}_mb": _mb(readings[name][pid]) for name in READINGS},
            "connection_bytes": round(connection), "late_connection_bytes": round(late_connection),
            "bytes_per_match_with_connections": round(grown / count),
            "hibernated_bytes_per_match": round((grown - 2 * count * connection) / count),
            "hibernated_bytes_per_match_late_spectators": round((grown - 2 * count * late_connection) / count),
        })
    matches = sum(len(ids) for ids in owned.values())
    pids = [w.pid for w in server.workers if owned[w.index]]
    watchers = bare * len(pids)

    def per(total: float, n: int) -> int | None:
        return round(total / n) if n else None

    figures = {
        "hibernated_bytes_per_match": per(totals["beyond"], matches),
        "bytes_per_match_with_connections": per(totals["grown"], matches),
        "connection_bytes": per(sum(spectators[p] - before[p] for p in pids), watchers),
        "hibernated_bytes_per_match_late_spectators": per(totals["beyond_late"], matches),
        "late_connection_bytes": per(sum(late[p] - hibernated[p] for p in pids), watchers),
        **{f"rss_{name}_mb": _mb(sum(readings[name][p] for p in pids)) for name in READINGS},
        "spectators": bare, "spectators_total": watchers, "matches": matches, "connections": 2 * matches,
        "workers": len(server.workers), "per_worker": per_worker, "client_processes": client_processes,
        "http_process": None,
    }
    if server.http_pid is not None:
        pid = server.http_pid
        figures["http_process"] = {"pid": pid, **{f"rss_{name}_mb": _mb(readings[name][pid]) for name in READINGS}}
    return figures


def _mb(n: float) -> float:
    return round(n / 2**20, 1)


async def _until_ack(ws, seq: int) -> None:
    """Read frames until a welcome or a state frame acknowledges `seq` for this client."""
    while True:
        frame = json.loads(await ws.get_message())
        if frame["t"] == "welcome" and seq == 0:
            return
        if frame["t"] == "state" and max(frame["acks"].values(), default=0) >= seq:
            return
        if frame["t"] == "error":
            raise RuntimeError(f"server error: {frame}")


def _start_server(work: Path, workers: int, cpus: list[int] | None) -> Server:
    ready = work / "ready.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "--log-level", "WARNING", "up", "--data-dir", str(work / "data"),
         "--port", "0", "--ready-file", str(ready), "--hibernate-after", str(HIBERNATE_AFTER_S),
         "--game", "tools.bench_hibernation:Tally", "--workers", str(workers),
         "--max-spectators", str(MAX_SPECTATORS)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"))  # noqa: SIM115 (the server's)
    _pin(process.pid, cpus)  # its workers inherit it
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while not ready.exists():  # written whole, then renamed
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                process.kill()  # ours, by its PID: never leave it running
                process.wait()
            log = (work / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the server did not start within {SERVER_READY_TIMEOUT_S:g} s:\n{log}")
        time.sleep(0.05)
    found = json.loads(ready.read_text())
    if "workers" in found:
        members = [Worker(w["worker"], w["pid"], w["ws_url"]) for w in found["workers"]]
    else:
        members = [Worker(0, process.pid, found["ws_url"])]
    server = Server(process, found["http_url"], members, cpus)
    for pid in server.pids:
        _pin(pid, cpus)  # threads started while it came up
    return server


def _pin(pid: int, cpus: list[int] | None) -> None:
    """Pin every thread of a process (threads it starts later inherit)."""
    if not cpus:
        return
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return
    for tid in tids:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except OSError:
            pass  # the thread just ended


def placement(workers: int) -> tuple[list[int] | None, list[int] | None]:
    """(server CPUs, client CPUs): the first `workers` CPUs and the rest, or (None, None) if none is left."""
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) > workers:
        return usable[:workers], usable[workers:]
    return None, None


def _stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _start_clients(work: Path, seats: list[dict], name: str, cpus: list[int] | None) -> list[subprocess.Popen]:
    """Client processes holding `seats`, at most CLIENTS_PER_PROCESS each."""
    processes = max(1, math.ceil(len(seats) / CLIENTS_PER_PROCESS))
    share = math.ceil(len(seats) / processes)
    started = []
    for p in range(processes):
        spec = work / f"{name}-{p}.json"
        spec.write_text(json.dumps({"seats": seats[p * share:(p + 1) * share]}))
        client = subprocess.Popen([sys.executable, "-m", "tools.bench_hibernation", "hold", str(spec)], cwd=ROOT,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        _pin(client.pid, cpus)
        started.append(client)
    return started


def _stop_clients(clients: list[subprocess.Popen]) -> None:
    for client in clients:
        if client.poll() is None:
            try:
                client.stdin.close()  # a client process exits at the end of its input
            except OSError:
                pass
    deadline = time.monotonic() + 30
    for client in clients:
        try:
            client.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            client.kill()  # ours, by its PID
            client.wait()


def fd_limit() -> int:
    """The open-file limit this process and its children run with: the hard limit, if it can be raised to."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        return soft
    return hard


def matches_budget(workers: int, bare: int, limit: int) -> int:
    """How many matches of 2 clients `workers` server processes can hold open, each with 2 x `bare`
    spectators besides. Placement spreads new matches evenly (the least loaded worker), so each gets its share."""
    return workers * max(1, (limit - FD_RESERVE - 2 * bare) // 2)


def run(args: argparse.Namespace) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workers = getattr(args, "workers", None) or 1
    limit = fd_limit()
    budget = matches_budget(workers, args.bare, limit)
    notes = []
    if args.matches > budget:
        notes.append(f"--matches {args.matches} lowered to {budget}: the open-file limit ({limit}) caps the "
                     f"sockets one server process holds; --workers {workers} processes hold {budget // workers} "
                     "matches each")
        args.matches = budget
    server_cpus, client_cpus = placement(workers)
    if server_cpus is None and len(os.sched_getaffinity(0)) > 1:
        notes.append(f"{workers} workers on {len(os.sched_getaffinity(0))} CPUs: nothing is pinned, the server's "
                     "processes and the clients share every CPU")
    driver_cpus = os.sched_getaffinity(0)
    raw: dict = {}

    async def latency(bench: Bench, http: httpx.AsyncClient) -> None:
        ours = [*bench.server.pids, os.getpid()]
        clock = PhaseClock(ours)
        warmup, *rounds = await bench.wake(http)
        raw["wake_warmup"], raw["wake"] = warmup, [ms for one in rounds for ms in one]
        raw["wake_round_max"] = [round(max(one), 3) for one in rounds]
        raw["wake_phase"] = clock.done()
        print(f"wake: {len(raw['wake'])} samples {raw['wake_phase']}", file=sys.stderr)
        clock = PhaseClock(ours)
        raw["lateness"] = await bench.alarms(http)
        raw["late_alarms"] = sorted(bench.late_alarms)
        raw["own_stalls"] = bench.own_stalls
        raw["alarm_phase"] = clock.done()
        print(f"alarms: {len(raw['lateness'])} fired {raw['alarm_phase']}", file=sys.stderr)

    async def memory(bench: Bench, http: httpx.AsyncClient) -> None:
        clock = PhaseClock([*bench.server.pids, os.getpid()])
        raw["memory"] = await bench.memory(http)
        raw["memory_phase"] = clock.done([c.pid for c in bench.clients])
        print(f"memory: {raw['memory']['hibernated_bytes_per_match']} B/match {raw['memory_phase']}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="arbiter-bench-hibernation-") as tmp:
        try:
            if client_cpus:
                os.sched_setaffinity(0, client_cpus)
            server = _serve(args, Path(tmp) / "latency", workers, server_cpus, client_cpus, latency)
            if args.matches:  # on a fresh server: what earlier phases left in its heap would hide connections' cost
                _serve(args, Path(tmp) / "memory", workers, server_cpus, client_cpus, memory)
        finally:
            os.sched_setaffinity(0, driver_cpus)
    memory_found = raw.get("memory", {})
    return {"workload": "hibernation", "hibernated_bytes_per_match": memory_found.get("hibernated_bytes_per_match"),
            "wake_ms": percentiles(raw["wake"]), "alarm_lateness_ms": percentiles(raw["lateness"]),
            "wake_warmup_ms": {"first": round(raw["wake_warmup"][0], 3), **percentiles(raw["wake_warmup"])},
            "wake_round_max_ms": raw["wake_round_max"],
            "memory": memory_found, "moves_logged": args.moves, "wake_matches": args.wake_matches,
            "alarm_matches": args.alarm_matches, "alarms_fired": len(raw["lateness"]),
            "alarms_over_10ms_late": {"count": len(raw["late_alarms"]), "at_s_ms": raw["late_alarms"][:20]},
            "alarm_phase_bench_stalls": {"count": len(raw["own_stalls"]), "at_s_ms": raw["own_stalls"][:20]},
            "hibernate_after_s": HIBERNATE_AFTER_S, "workers": workers,
            "server": {"pid": server.process.pid, "worker_pids": [w.pid for w in server.workers] if workers > 1 else [],
                       "cpus": server_cpus, "client_cpus": client_cpus},
            "phases": {"wake": raw["wake_phase"], "alarms": raw["alarm_phase"], "memory": raw.get("memory_phase")},
            "latency_phases_on": f"a server of {workers} worker{'s' if workers > 1 else ''}; the memory phase on "
                                 "a fresh one of as many",
            "open_file_limit": limit, "notes": notes}


def _serve(args: argparse.Namespace, work: Path, workers: int, server_cpus: list[int] | None,
           client_cpus: list[int] | None, phases) -> Server:
    """Start a server in `work`, run `phases(bench, http)` against it, stop it and the client processes."""
    work.mkdir()
    server = _start_server(work, workers, server_cpus)
    bench = Bench(args, server, client_cpus, work)

    async def main() -> None:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as http:
            await phases(bench, http)

    try:
        trio.run(main)
    except BaseException:
        log = (work / "server.log").read_text(errors="replace").splitlines()
        print("the server's last log lines:\n" + "\n".join(log[-30:]), file=sys.stderr)
        raise
    finally:
        _stop_server(server.process)  # first: the clients' connections then close from the server's side
        _stop_clients(bench.clients)
    return server


def run_cli(args: argparse.Namespace) -> int:
    result = run(args)
    result["command"] = "arbiter " + " ".join(sys.argv[1:])
    print(json.dumps(result))
    if result["alarms_fired"] != args.alarm_matches:
        return 1
    return 0


# -- a client process: holds connections open -----------------------------------------------------


async def hold_seats(seats: list[dict], connected: list[int], failures: dict[str, int]) -> None:
    """Open and authenticate every seat (CONNECT_CONCURRENCY at a time), report, then hold them all
    until standard input ends."""
    limit = trio.CapacityLimiter(CONNECT_CONCURRENCY)
    async with trio.open_nursery() as nursery:  # the connections' reader tasks live here

        async def one(seat: dict) -> None:
            async with limit:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT_S):
                        ws = await connect_websocket_url(nursery, seat["ws_url"])
                        await ws.send_message(json.dumps({"t": "auth", "token": seat["token"]}))
                        await _until_ack(ws, 0)
                except (OSError, HandshakeError, ConnectionClosed, RuntimeError, trio.TooSlowError) as error:
                    kind = f"{type(error).__name__}: {error}"[:200]
                    failures[kind] = failures.get(kind, 0) + 1
                    return
            connected[0] += 1

        async with trio.open_nursery() as connecting:
            for seat in seats:
                connecting.start_soon(one, seat)
        print("ready " + json.dumps({"connected": connected[0], "failed": sum(failures.values()),
                                     "failures": failures}), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(0))
        while await stdin.receive_some():
            pass
        nursery.cancel_scope.cancel()


def hold_main(spec_path: str) -> int:
    fd_limit()
    seats = json.loads(Path(spec_path).read_text())["seats"]
    connected, failures = [0], {}
    trio.run(hold_seats, seats, connected, failures)
    sys.stdout.flush()
    os._exit(0)  # the kernel closes every socket at once: no close handshake per connection


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "hold":
        print("usage: python -m tools.bench_hibernation hold SPEC.json", file=sys.stderr)
        sys.exit(2)
    sys.exit(hold_main(sys.argv[2]))
