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

Light on purpose, so that one spare core can load a server with thousands of clients: the
WebSockets are clients/lightws.py's (stdlib sockets, no task per connection); one task (`Players`)
reads every bot's socket through one `lightws.Poller` and sends every bot's inputs from a heap of
deadlines; a state frame's ack is found by a scan of its head (`read_ack`) instead of
decoding the whole state, with `json.loads` whenever the scan cannot be sure.
"""

from __future__ import annotations

import heapq
import json
import math
import random
import sys
import time
from collections import Counter, deque
from functools import partial

import trio

from clients import lightws
from clients.lightws import ConnectionClosed, HandshakeFailed

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
STATE_HEAD = '{"t":"state","tick":'  # how the server's JSON state frames begin (gameserver/protocol.py)
ACKS_HEAD = ',"acks":{'


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


def ack_key(player: str) -> str | None:
    """What precedes `player`'s ack in a state frame's acks (`"id":`), or None when the id needs
    escaping or holds a colon: then `read_ack` cannot be sure and frames are decoded whole."""
    encoded = json.dumps(player, ensure_ascii=False)  # as gameserver/canonical.py encodes it
    if not player or ":" in player or encoded != f'"{player}"':
        return None
    return encoded + ":"


def read_ack(message: str, key: str | None) -> int | None:
    """The ack that a JSON state frame (`{"t":"state","tick":N,"acks":{...},...}`) holds for the
    player whose `ack_key` is `key` (0 if it holds none), or None if this scan cannot be sure.

    Sure means: the acks object's text up to its first `}` has no backslash, so no string in it
    has an escaped quote, and an even number of quotes, so that `}` is outside every string and
    ends the object. Every quote in it then opens or closes a key; `"id":` can only start at an
    opening quote (a closing one is followed by a colon, and `id` has none) and so is that key."""
    if key is None:
        return None
    at = message.find(ACKS_HEAD, 20)
    if at < 0 or not message[20:at].isdigit():
        return None
    start = at + 9
    end = message.find("}", start)
    if end < 0:
        return None
    acks = message[start:end]
    if "\\" in acks or acks.count('"') & 1:
        return None
    found = acks.find(key)
    if found < 0:
        return 0
    found += len(key)
    comma = acks.find(",", found)
    value = acks[found:] if comma < 0 else acks[found:comma]
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value)


class Bot:
    def __init__(self, index: int, ws_url: str, token: str, seed: int):
        self.index = index
        self.ws_url = ws_url
        self.token = token
        self.rng = random.Random(seed + index)
        self.ws: lightws.WebSocket | None = None
        self.player = ""
        self.key: str | None = None  # ack_key(player)
        self.seq = 0
        self.sends = 0
        self.dx = self.dy = 0
        self.unacked: deque[tuple[int, float]] = deque()  # (seq, sent at), oldest first
        self.gone = False  # its connection ended while it played

    async def join(self, limiter: trio.CapacityLimiter, figures: Figures) -> bool:
        """Connect, authenticate and wait for the welcome. False (and an error counted) if that fails."""
        async with limiter:
            try:
                self.ws = await lightws.connect(self.ws_url)
                await self.ws.send(json.dumps({"t": "auth", "token": self.token}))
                while True:
                    frame = json.loads(await self.ws.receive())
                    if frame["t"] == "welcome":
                        break
                    if frame["t"] == "error":
                        figures.errors[f"error_frame_{frame.get('code')}"] += 1
            except (OSError, HandshakeFailed):
                figures.errors["join_connect_failed"] += 1
                return False
            except ConnectionClosed as closed:
                figures.errors[f"join_closed_{closed.code}"] += 1
                return False
        self.player = frame["player"]
        self.key = ack_key(self.player)
        self.seq = frame["last_seq"]
        return True

    def first_deadline(self) -> float:
        return trio.current_time() + self.rng.random() * PERIOD_S

    def send_input(self, deadline: float, figures: Figures, window: Window) -> bool:
        """Send the input due at `deadline`. False once the connection is closed."""
        ws = self.ws
        if ws.closed is not None or ws.close_sent:
            self.ended(figures)  # a failed write closes it too, and the reader no longer sees it
            return False
        if self.sends % INPUTS_PER_DIRECTION == 0:
            rng = self.rng
            self.dx, self.dy = rng.choice(STEPS), rng.choice(STEPS)
        self.seq += 1
        sent_at = trio.current_time()
        self.unacked.append((self.seq, sent_at))
        if window.start <= sent_at < window.end:
            figures.sent += 1
            figures.late_sends += sent_at - deadline > LATE_SEND_S
        ws.write(INPUT_FRAME % (self.seq, self.dx, self.dy))  # a lost connection shows in ws.closed
        self.sends += 1
        return True

    def read(self, figures: Figures, window: Window) -> None:
        """Read what the socket holds (without waiting) and take every message in it."""
        ws = self.ws
        messages = ws.read_messages()
        now = trio.current_time()
        for message in messages:
            self.take(message, now, figures, window)
        if ws.closed is not None:
            self.ended(figures)

    def ended(self, figures: Figures) -> None:
        """Count the end of its connection while it played, once."""
        if not self.gone:
            self.gone = True
            code = self.ws.closed.code if self.ws.closed is not None else "closing"
            figures.errors[f"disconnected_{code}"] += 1

    def take(self, message: str | bytes, now: float, figures: Figures, window: Window) -> None:
        ack = None
        if type(message) is str and message.startswith(STATE_HEAD):
            ack = read_ack(message, self.key)
        if ack is None:
            frame = json.loads(message)
            kind = frame.get("t")
            if kind == "error":
                figures.errors[f"error_frame_{frame.get('code')}"] += 1
                return
            if kind != "state":
                return
            ack = frame["acks"].get(self.player, 0)
        if window.start <= now < window.end:
            figures.state_frames += 1
        unacked = self.unacked
        while unacked and unacked[0][0] <= ack:
            _, sent_at = unacked.popleft()
            if window.start <= sent_at < window.end:
                figures.ack(now - sent_at)

    def count_lost(self, figures: Figures, window: Window) -> None:
        figures.lost += sum(1 for _, sent_at in self.unacked if window.holds(sent_at))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.aclose(timeout=CLOSE_TIMEOUT_S)


class Players:
    """Every playing bot, driven by one task: it reads every bot's socket (one `lightws.Poller`)
    and sends every bot's inputs (a heap of deadlines), waking for whichever comes first. A
    wake-up costs about 0.1 ms of CPU on a small VM, so one task waking for both halves them."""

    def __init__(self) -> None:
        self.poller = lightws.Poller()
        self.heap: list[tuple[float, int, Bot]] = []  # (next input's deadline, index, bot)
        self.waiting: trio.CancelScope | None = None  # while the task waits: its deadline is the heap's first

    def add(self, bot: Bot, deadline: float) -> None:
        """A welcomed bot plays from now on; its first input is due at `deadline`."""
        self.poller.add(bot.ws, bot)
        heapq.heappush(self.heap, (deadline, bot.index, bot))
        if self.waiting is not None and deadline < self.waiting.deadline:
            self.waiting.deadline = deadline

    async def run(self, figures: Figures, window: Window) -> None:
        heap, poller = self.heap, self.poller
        while True:
            ready = ()
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as self.waiting:
                ready = await poller.wait()
            self.waiting = None
            for bot in ready:
                bot.read(figures, window)
            now = trio.current_time()
            while heap and heap[0][0] <= now:
                deadline, index, bot = heap[0]
                if bot.send_input(deadline, figures, window):
                    heapq.heapreplace(heap, (deadline + PERIOD_S, index, bot))
                else:
                    heapq.heappop(heap)  # its connection is closed: read() counted that

    def close(self) -> None:
        self.poller.close()


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
    players = Players()

    async def join(bot: Bot) -> None:
        nonlocal pending
        with trio.move_on_after(JOIN_TIMEOUT_S) as timer:
            welcomed = await bot.join(limiter, figures)
        if timer.cancelled_caught:
            figures.errors["join_timeout"] += 1
            welcomed = False
        figures.joined += welcomed
        figures.join_failed += not welcomed
        pending -= 1
        if pending == 0:
            settled.set()
        if welcomed:  # it plays from now on: the reader and the sender take it
            bot.ws.on_pending = partial(flushes.start_soon, bot.ws.flush)
            players.add(bot, bot.first_deadline())

    try:
        async with trio.open_nursery() as flushes:  # what the kernel did not take at once
            async with trio.open_nursery() as playing:
                playing.start_soon(players.run, figures, window)
                for bot in bots:
                    playing.start_soon(join, bot)
                if bots:
                    await settled.wait()  # bounded: every join has its own timeout
                say("ready " + json.dumps({"joined": figures.joined, "join_failed": figures.join_failed}))
                go = False
                with trio.move_on_after(GO_TIMEOUT_S):
                    go = await read_go(window)
                if not go:
                    print("arena_bots: no go line from the driver; stopping", file=sys.stderr)
                    playing.cancel_scope.cancel()
                    flushes.cancel_scope.cancel()
                    return 2
                await trio.sleep_until(window.end + GRACE_S)
                playing.cancel_scope.cancel()
            for bot in bots:
                bot.count_lost(figures, window)
            say("result " + json.dumps(figures.report(), separators=(",", ":")))
            players.close()
            async with trio.open_nursery() as closing:
                for bot in bots:
                    closing.start_soon(bot.close)
            flushes.cancel_scope.cancel()
    finally:
        players.close()
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
