"""`arbiter bench hibernation`: memory of hibernated matches, wake latency, alarm lateness.

Starts `arbiter up` (with the turn-based bench game `Tally` below and a short hibernation delay)
in a subprocess on a fresh data directory, then, over real loopback WebSockets:

1. wake: `--wake-matches` matches each get `--moves` moves (default 1,000) logged; then, several
   times, once all are hibernated, one more move is sent to each, one match at a time: the time
   from sending it to the state frame that acknowledges it is the wake latency, measured by the
   client. The server runs on the first CPU, this driver on the others.
2. alarms: `--alarm-matches` matches (one client each) connect and hibernate; once all are
   connected each sets a timer due in a 10 s window that opens after the wakes this causes
   (20 ms a match, plus 3 s); the matches hibernate again; the game reports the step time at which
   each timer ran; lateness = that - due.
3. memory: `--matches` matches with 2 connected clients each, all hibernated. The server's RSS is
   read before the matches connect and after all of them hibernated; then `--bare` spectators of
   one of the matches (authenticated connections that own no match) give the cost of a connection
   alone. Per hibernated match: (RSS after - RSS before - 2 x matches x connection cost) / matches.

Prints one JSON object (`--json`) with `hibernated_bytes_per_match`, `wake_ms` and
`alarm_lateness_ms`, and the raw figures behind them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import logging

import attrs
import httpx
import trio
from trio_websocket import open_websocket_url

from gameserver.game import Context, Game, PlayerInput

ROOT = Path(__file__).resolve().parent.parent
HIBERNATE_AFTER_S = 0.5
MOVES_PER_S = 50  # below the server's per-connection input limit (60/s)
ALARM_SETUP_S = 3.0  # the window opens this long after the last client connected (and set its timer)
ALARM_WINDOW_S = 10.0  # spread over this many seconds
WAKE_BUDGET_S = 0.02  # per match, for the wakes that setting the timers causes


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


class Bench:
    def __init__(self, args: argparse.Namespace, http_url: str, pid: int):
        self.args = args
        self.http_url = http_url
        self.pid = pid

    async def create(self, http: httpx.AsyncClient, count: int) -> list[str]:
        ids: list[str] = []
        limit = trio.CapacityLimiter(16)

        async def one() -> None:
            async with limit:
                response = await http.post("/v1/matches", json={"game": "tally"})
                response.raise_for_status()
                ids.append(response.json()["match_id"])

        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
        return ids

    async def grant(self, http: httpx.AsyncClient, match_id: str, player: str, role: str = "player") -> dict:
        response = await http.post(f"/v1/matches/{match_id}/tokens", json={"player_id": player, "role": role})
        response.raise_for_status()
        return response.json()

    async def health(self, http: httpx.AsyncClient) -> dict:
        return (await http.get("/healthz")).json()

    async def until_hibernated(self, http: httpx.AsyncClient, count: int, timeout: float) -> None:
        with trio.fail_after(timeout):
            while (await self.health(http))["hibernated_matches"] < count:
                await trio.sleep(0.1)

    # -- phase 1: wake latency ------------------------------------------------------------------

    async def wake(self, http: httpx.AsyncClient) -> list[float]:
        """Build each match's history concurrently; then wake the hibernated matches one at a time,
        so that each wake is measured alone, as a player's move on an idle node would be."""
        samples: list[float] = []
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
            for _ in range(self.args.wakes):
                await self.until_hibernated(http, len(ids), timeout=60)
                for match_id in ids:
                    ws = sockets[match_id]
                    seqs[match_id] += 1
                    sent = time.perf_counter()
                    await ws.send_message(json.dumps({"t": "input", "seq": seqs[match_id], "data": {}}))
                    await _until_ack(ws, seqs[match_id])
                    samples.append((time.perf_counter() - sent) * 1000)
            done.set()
        return samples

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
                                return
            finally:
                if not released:
                    joined.release()

        async with trio.open_nursery() as nursery:
            for match_id in ids:
                nursery.start_soon(wait_for_timer, match_id)
        return lateness

    # -- phase 3: memory of hibernated matches ----------------------------------------------------

    async def memory(self, http: httpx.AsyncClient) -> dict:
        matches = self.args.matches
        ids = await self.create(http, matches)
        await trio.sleep(1)
        before = rss_bytes(self.pid)
        sockets: list = []
        limit = trio.CapacityLimiter(100)
        stop = trio.Event()

        async def hold(match_id: str, player: str) -> None:
            released = False
            await limit.acquire()  # bounds the connecting, not the holding
            try:
                grant = await self.grant(http, match_id, player)
                async with open_websocket_url(grant["ws_url"]) as ws:
                    await ws.send_message(json.dumps({"t": "auth", "token": grant["token"]}))
                    await _until_ack(ws, 0)
                    limit.release()
                    released = True
                    sockets.append(ws)
                    await stop.wait()
            finally:
                if not released:
                    limit.release()

        async with trio.open_nursery() as nursery:
            for match_id in ids:
                for player in ("a", "b"):
                    nursery.start_soon(hold, match_id, player)
            with trio.fail_after(600):
                while len(sockets) < 2 * matches:
                    await trio.sleep(0.2)
            await self.until_hibernated(http, matches, timeout=600)
            await trio.sleep(1)
            hibernated = rss_bytes(self.pid)
            # A connection's own cost: authenticated spectators of one match, which own no match.
            watchers = [await self.grant(http, ids[0], f"w{i}", role="spectator") for i in range(self.args.bare)]
            watching = [0]
            all_watching = trio.Event()

            async def watch(grant: dict) -> None:
                async with open_websocket_url(grant["ws_url"]) as ws:
                    await ws.send_message(json.dumps({"t": "auth", "token": grant["token"]}))
                    await _until_ack(ws, 0)
                    watching[0] += 1
                    if watching[0] == self.args.bare:
                        all_watching.set()
                    await stop.wait()

            for grant in watchers:
                nursery.start_soon(watch, grant)
            with trio.fail_after(300):
                await all_watching.wait()
            await self.until_hibernated(http, matches, timeout=120)
            await trio.sleep(2)
            with_bare = rss_bytes(self.pid)
            stop.set()
        per_connection = (with_bare - hibernated) / self.args.bare
        per_match = (hibernated - before - 2 * matches * per_connection) / matches
        return {"hibernated_bytes_per_match": round(per_match), "connection_bytes": round(per_connection),
                "rss_before_mb": round(before / 2**20, 1), "rss_hibernated_mb": round(hibernated / 2**20, 1),
                "rss_with_spectators_mb": round(with_bare / 2**20, 1), "spectators": self.args.bare,
                "matches": matches, "connections": 2 * matches}


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


def _start_server(work: Path) -> tuple[subprocess.Popen, str]:
    ready = work / "ready.json"
    server = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "--log-level", "WARNING", "up", "--data-dir", str(work / "data"),
         "--port", "0", "--ready-file", str(ready), "--hibernate-after", str(HIBERNATE_AFTER_S),
         "--game", "tools.bench_hibernation:Tally"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"))
    _pin(server.pid, first=True)
    deadline = time.monotonic() + 30
    while not ready.exists():
        if server.poll() is not None or time.monotonic() > deadline:
            if server.poll() is None:
                server.kill()  # ours, by its PID: never leave it running
                server.wait()
            log = (work / "server.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the server did not start within 30 s:\n{log}")
        time.sleep(0.05)
    return server, json.loads(ready.read_text())["http_url"]


def _pin(pid: int, first: bool) -> None:
    """Server on the first CPU, the driver on the others, where the machine has two or more."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    try:
        os.sched_setaffinity(pid, {cpus[0]} if first else set(cpus[1:]))
    except OSError:
        pass


def _stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def fd_budget() -> int:
    """How many matches of 2 clients this process and the server can hold open (RLIMIT_NOFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        hard = soft
    return max(1, (hard - 2000) // 2)


def run(args: argparse.Namespace) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    budget = fd_budget() - args.bare // 2
    notes = []
    if args.matches > budget:
        notes.append(f"--matches {args.matches} lowered to {budget}: the open-file limit "
                     f"({resource.getrlimit(resource.RLIMIT_NOFILE)[1]}) caps the sockets one process holds")
        args.matches = budget
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-hibernation-") as tmp:
        work = Path(tmp)
        server, http_url = _start_server(work)
        _pin(0, first=False)
        try:
            bench = Bench(args, http_url, server.pid)

            async def phases() -> dict:
                async with httpx.AsyncClient(base_url=http_url, timeout=30) as http:
                    wake = await bench.wake(http)
                    print(f"wake: {len(wake)} samples", file=sys.stderr)
                    lateness = await bench.alarms(http)
                    print(f"alarms: {len(lateness)} fired", file=sys.stderr)
                    memory = await bench.memory(http) if args.matches else {}
                    return {"wake": wake, "lateness": lateness, "memory": memory}

            try:
                raw = trio.run(phases)
            except BaseException:
                log = (work / "server.log").read_text(errors="replace").splitlines()
                print("the server's last log lines:\n" + "\n".join(log[-30:]), file=sys.stderr)
                raise
        finally:
            _stop_server(server)
    memory = raw["memory"]
    return {"workload": "hibernation", "hibernated_bytes_per_match": memory.get("hibernated_bytes_per_match"),
            "wake_ms": percentiles(raw["wake"]), "alarm_lateness_ms": percentiles(raw["lateness"]),
            "memory": memory, "moves_logged": args.moves, "wake_matches": args.wake_matches,
            "alarm_matches": args.alarm_matches, "alarms_fired": len(raw["lateness"]),
            "hibernate_after_s": HIBERNATE_AFTER_S, "notes": notes}


def run_cli(args: argparse.Namespace) -> int:
    result = run(args)
    result["command"] = "arbiter " + " ".join(sys.argv[1:])
    print(json.dumps(result))
    if result["alarms_fired"] != args.alarm_matches:
        return 1
    return 0
