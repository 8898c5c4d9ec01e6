"""Bots of workload "arena" (../shared/workloads/arena.md): many bot players in one trio process.

    python -m clients.arena_bots BOTS_FILE

BOTS_FILE is JSON: {"seed": int, "bots": [{"index": int, "ws_url": str, "token": str}, ...]}.
Each bot opens its own WebSocket, authenticates, and once welcomed sends an input every 50 ms
(absolute deadlines, a random phase in [0, 50) ms), with new dx, dy from {-1, 0, 1} every 20
inputs, from a generator seeded with seed + index. It reads every frame, but only decodes the
state frames' acks for its own last processed seq.

The driver (tools/bench_arena.py) and this process talk in lines:

    stdout  ready {"joined": N, "join_failed": M}   every bot is welcomed or has failed to join
    stdin   go WINDOW_START WINDOW_END               the measured window, in time.time() seconds
    stdout  result {...}                             raw figures (see `Figures.report`), sent
                                                     GRACE_S after the window ends

Latency of an input: from just before it is sent to the first state frame whose acks show the
bot's own last_seq >= its seq. Only inputs sent inside the window are measured; one not
acknowledged GRACE_S after the window ends is lost. Bots keep sending during the grace.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections import Counter, deque

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, connect_websocket_url

PERIOD_S = 0.05  # 20 Hz
INPUTS_PER_DIRECTION = 20  # a new dx, dy every second
STEPS = (-1, 0, 1)
INPUT_FRAME = '{"t":"input","seq":%d,"data":{"dx":%d,"dy":%d}}'
GRACE_S = 1.0  # an input of the window still unacknowledged this long after the window is lost
LATE_SEND_S = 0.025  # a send this late after its deadline counts in late_sends (bot overload)
BUCKET_MS = 0.1  # latency histogram resolution
JOIN_TIMEOUT_S = 60.0  # for every bot of the process to be welcomed or to fail
JOINING_AT_ONCE = 50  # concurrent connection handshakes
GO_TIMEOUT_S = 300.0  # the driver's "go" line
CLOSE_TIMEOUT_S = 3.0


class Window:
    """The measured window in trio time; empty until the driver says go."""

    def __init__(self) -> None:
        self.start = math.inf
        self.end = math.inf

    def holds(self, t: float) -> bool:
        return self.start <= t < self.end


class Figures:
    """What the bots of this process measured, merged by the driver."""

    def __init__(self) -> None:
        self.joined = 0
        self.join_failed = 0
        self.sent = 0  # inputs sent in the window
        self.acked = 0  # of those, acknowledged before the grace ended
        self.lost = 0
        self.state_frames = 0  # received in the window
        self.latency_buckets: Counter[int] = Counter()  # floor(ms / BUCKET_MS) -> inputs
        self.latency_max_ms = 0.0
        self.late_sends = 0  # in the window
        self.errors: Counter[str] = Counter()

    def ack(self, latency_s: float) -> None:
        ms = latency_s * 1000.0
        self.acked += 1
        self.latency_buckets[int(ms / BUCKET_MS)] += 1
        self.latency_max_ms = max(self.latency_max_ms, ms)

    def report(self) -> dict:
        return {"joined": self.joined, "join_failed": self.join_failed, "sent": self.sent, "acked": self.acked,
                "lost": self.lost, "state_frames": self.state_frames, "bucket_ms": BUCKET_MS,
                "latency_buckets": {str(k): n for k, n in sorted(self.latency_buckets.items())},
                "latency_max_ms": self.latency_max_ms, "late_sends": self.late_sends, "errors": dict(self.errors)}


class Bot:
    def __init__(self, index: int, ws_url: str, token: str, seed: int):
        self.index = index
        self.ws_url = ws_url
        self.token = token
        self.rng = random.Random(seed + index)
        self.ws: WebSocketConnection | None = None
        self.player = ""
        self.seq = 0
        self.unacked: deque[tuple[int, float]] = deque()  # (seq, sent at), oldest first

    async def join(self, sockets: trio.Nursery, limiter: trio.CapacityLimiter, figures: Figures) -> bool:
        """Connect, authenticate and wait for the welcome. False (and an error counted) if that fails."""
        async with limiter:
            try:
                self.ws = await connect_websocket_url(sockets, self.ws_url)
                await self.ws.send_message(json.dumps({"t": "auth", "token": self.token}))
                while True:
                    frame = json.loads(await self.ws.get_message())
                    if frame["t"] == "welcome":
                        break
                    if frame["t"] == "error":
                        figures.errors[f"error_frame_{frame.get('code')}"] += 1
            except (OSError, HandshakeError):
                figures.errors["join_connect_failed"] += 1
                return False
            except ConnectionClosed as closed:
                figures.errors[f"join_closed_{closed.reason.code}"] += 1
                return False
        self.player = frame["player"]
        self.seq = frame["last_seq"]
        return True

    async def play(self, figures: Figures, window: Window) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_inputs, figures, window)
            await self._read_frames(figures, window)
            nursery.cancel_scope.cancel()

    async def _send_inputs(self, figures: Figures, window: Window) -> None:
        rng, ws = self.rng, self.ws
        deadline = trio.current_time() + rng.random() * PERIOD_S
        count = 0
        dx = dy = 0
        while True:
            await trio.sleep_until(deadline)
            if count % INPUTS_PER_DIRECTION == 0:
                dx, dy = rng.choice(STEPS), rng.choice(STEPS)
            self.seq += 1
            sent_at = trio.current_time()
            self.unacked.append((self.seq, sent_at))
            if window.holds(sent_at):
                figures.sent += 1
                figures.late_sends += sent_at - deadline > LATE_SEND_S
            try:
                await ws.send_message(INPUT_FRAME % (self.seq, dx, dy))
            except ConnectionClosed:
                return  # the reader counts the disconnect
            count += 1
            deadline += PERIOD_S

    async def _read_frames(self, figures: Figures, window: Window) -> None:
        ws, player, unacked = self.ws, self.player, self.unacked
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as closed:
                figures.errors[f"disconnected_{closed.reason.code}"] += 1
                return
            now = trio.current_time()
            frame = json.loads(message)
            kind = frame["t"]
            if kind == "state":
                if window.holds(now):
                    figures.state_frames += 1
                ack = frame["acks"].get(player, 0)
                while unacked and unacked[0][0] <= ack:
                    _, sent_at = unacked.popleft()
                    if window.holds(sent_at):
                        figures.ack(now - sent_at)
            elif kind == "error":
                figures.errors[f"error_frame_{frame.get('code')}"] += 1

    def count_lost(self, figures: Figures, window: Window) -> None:
        figures.lost += sum(1 for _, sent_at in self.unacked if window.holds(sent_at))

    async def close(self) -> None:
        if self.ws is not None:
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await self.ws.aclose()


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def read_go(window: Window) -> bool:
    """Wait for the driver's go line; set the window in trio time. False: no go (EOF or junk)."""
    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    parts = line.split()
    if len(parts) != 3 or parts[0] != "go":
        return False
    offset = trio.current_time() - time.time()
    window.start, window.end = float(parts[1]) + offset, float(parts[2]) + offset
    return True


async def run(bots: list[Bot]) -> int:
    figures = Figures()
    window = Window()
    limiter = trio.CapacityLimiter(JOINING_AT_ONCE)
    settled = trio.Event()
    pending = len(bots)

    async def join_and_play(bot: Bot) -> None:
        nonlocal pending
        with trio.move_on_after(JOIN_TIMEOUT_S) as timer:
            welcomed = await bot.join(sockets, limiter, figures)
        if timer.cancelled_caught:
            figures.errors["join_timeout"] += 1
            welcomed = False
        figures.joined += welcomed
        figures.join_failed += not welcomed
        pending -= 1
        if pending == 0:
            settled.set()
        if welcomed:
            await bot.play(figures, window)

    async with trio.open_nursery() as sockets:  # the connections' background tasks
        async with trio.open_nursery() as players:
            for bot in bots:
                players.start_soon(join_and_play, bot)
            if bots:
                await settled.wait()  # bounded: every join has its own timeout
            say("ready " + json.dumps({"joined": figures.joined, "join_failed": figures.join_failed}))
            go = False
            with trio.move_on_after(GO_TIMEOUT_S):
                go = await read_go(window)
            if not go:
                print("arena_bots: no go line from the driver; stopping", file=sys.stderr)
                players.cancel_scope.cancel()
                sockets.cancel_scope.cancel()
                return 2
            await trio.sleep_until(window.end + GRACE_S)
            players.cancel_scope.cancel()
        for bot in bots:
            bot.count_lost(figures, window)
        say("result " + json.dumps(figures.report(), separators=(",", ":")))
        async with trio.open_nursery() as closing:
            for bot in bots:
                closing.start_soon(bot.close)
        sockets.cancel_scope.cancel()
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m clients.arena_bots BOTS_FILE", file=sys.stderr)
        return 2
    with open(argv[0]) as file:
        spec = json.load(file)
    bots = [Bot(b["index"], b["ws_url"], b["token"], spec["seed"]) for b in spec["bots"]]
    return trio.run(run, bots)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
