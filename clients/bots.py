"""Bot players: a small base class for a game's bot, the demo games' strategies, and `play`, which
runs one bot through one match over a `MatchClient` (see docs/bots.md).

A bot only decides: `Bot` gets the frames (`on_welcome`, `on_state`, `on_event`) and is asked for
an input every `period_s` seconds (`next_input`: the input's data, or None to send nothing). `play`
does the I/O: it reads frames, sends what the bot returns, and measures each input from its send
to the first frame that acknowledges it. Reconnecting, resuming and resending after a drop are
the client's (`MatchClient`), so a bot never sees a drop except as a second `on_welcome`.

    async with MatchClient(assignment["ws_url"], assignment["token"]) as client:
        outcome = await play(client, ArenaWalker(seed=1))
"""

from __future__ import annotations

import random
from collections import Counter, deque
from typing import Any

import attrs
import httpx
import trio

from clients.client import ArbiterHTTP, Error, Event, MatchClient, MatchClosed, State, Welcome

LATENCY_BUCKET_MS = 0.1  # latency histogram resolution
STOP_GRACE_S = 1.0  # after `stop`: how long `play` waits for its inputs' acknowledgements


class Bot:
    """One player's decisions. Subclass it per game; every hook runs in the same trio task order
    as the frames arrive, and `next_input` between them, so a bot needs no locks.

    `play` asks `next_input` every `period_s` seconds (with a random phase), only once the match
    has started and until it ends. Count in `mistakes` what your bot should never see (for
    example an invalid-move event): the soak reports it as an error."""

    period_s: float = 0.05

    def __init__(self, seed: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.player: str | None = None
        self.mistakes: Counter[str] = Counter()

    def on_welcome(self, welcome: Welcome) -> None:
        """Admitted, or admitted again after a reconnect (`welcome.resumed`): the full state."""
        self.player = welcome.player

    def on_state(self, state: State) -> None:
        """A committed step: the state, and every player's acknowledged seq (`state.acks`)."""

    def on_event(self, event: Event) -> None:
        """A game event, or the runtime's (`join`, `leave`, `start`, `end`)."""

    def next_input(self) -> Any | None:
        """The data of the input to send now (the game's input class as a dict), or None."""
        return None


class ArenaWalker(Bot):
    """The random walker of workload arena (../shared/workloads/arena.md): an input every 50 ms,
    and every 20 inputs a new `dx, dy`, each drawn uniformly from {-1, 0, 1}."""

    period_s = 0.05
    INPUTS_PER_DIRECTION = 20
    STEPS = (-1, 0, 1)

    def __init__(self, seed: int | None = None, period_s: float | None = None) -> None:
        super().__init__(seed)
        if period_s is not None:
            self.period_s = period_s
        self.count = 0
        self.dx = self.dy = 0

    def next_input(self) -> dict[str, int]:
        if self.count % self.INPUTS_PER_DIRECTION == 0:
            self.dx, self.dy = self.rng.choice(self.STEPS), self.rng.choice(self.STEPS)
        self.count += 1
        return {"dx": self.dx, "dy": self.dy}


class ConnectFourPlayer(Bot):
    """Connect four: on its turn, a uniformly random column that is not full. It looks at the
    board every `period_s` seconds (its thinking time) and moves at most once per turn, also
    across a reconnect (a move not yet acknowledged is resent by the client, not chosen again)."""

    period_s = 0.5
    COLUMNS = 7
    ROWS = 6

    def __init__(self, seed: int | None = None, period_s: float | None = None) -> None:
        super().__init__(seed)
        if period_s is not None:
            self.period_s = period_s
        self.state: dict[str, Any] | None = None
        self.moved_at: int | None = None  # state["moves"] when this bot last moved

    def on_welcome(self, welcome: Welcome) -> None:
        super().on_welcome(welcome)
        self.state = welcome.state

    def on_state(self, state: State) -> None:
        self.state = state.state

    def on_event(self, event: Event) -> None:
        if event.kind == "invalid_move" and isinstance(event.data, dict) and event.data.get("player") == self.player:
            self.mistakes["invalid_move"] += 1

    def next_input(self) -> dict[str, int] | None:
        s = self.state
        if s is None or s["turn"] != self.player or s["moves"] == self.moved_at:
            return None
        top = s["board"][self.ROWS - 1]
        legal = [column for column in range(self.COLUMNS) if not top[column]]
        if not legal:
            return None
        self.moved_at = s["moves"]
        return {"column": self.rng.choice(legal)}


STRATEGIES: dict[str, type[Bot]] = {"arena": ArenaWalker, "connect_four": ConnectFourPlayer}


class Meter:
    """What `play` counts, shared by any number of bots (one trio loop: no locks)."""

    def __init__(self) -> None:
        self.sent = 0  # inputs sent (a resend after a reconnect is not counted again)
        self.acked = 0  # of those, acknowledged
        self.unacked = 0  # still unacknowledged when their `play` returned
        self.refused = 0  # refused with an error frame carrying their seq
        self.reconnects = 0  # welcomes after the first, in every match
        self.latency_buckets: Counter[int] = Counter()  # floor(ms / LATENCY_BUCKET_MS) -> inputs
        self.latency_max_ms = 0.0
        self.reconnect_buckets: Counter[int] = Counter()  # deliberate drop to welcome, floor(ms) -> drops
        self.errors: Counter[str] = Counter()

    def ack(self, latency_s: float) -> None:
        ms = latency_s * 1000.0
        self.acked += 1
        self.latency_buckets[int(ms / LATENCY_BUCKET_MS)] += 1
        self.latency_max_ms = max(self.latency_max_ms, ms)


@attrs.define
class Outcome:
    """How one bot's match went.

    `status`: `ended`, `cancelled` or `crashed` (the match's `end` event), `over` (the match ended
    while this bot was away after a deliberate drop, or 4012), `stopped` (`stop` was set), or `closed`
    (closed for another reason: `close_code`, `close_reason`). `acked` is this player's last
    acknowledged seq; `refused` the seqs the server refused with an error frame; `players` the
    match's players at its start."""

    status: str = "closed"
    match_id: str | None = None
    player: str | None = None
    result: Any = None
    close_code: int | None = None
    close_reason: str | None = None
    acked: int = 0
    sent: int = 0
    refused: set[int] = attrs.Factory(set)
    welcomes: int = 0
    drops: int = 0  # deliberate drops (`drops_per_min`)
    players: list[str] = attrs.Factory(list)  # from the `start` event


async def play(client: MatchClient, bot: Bot, *, meter: Meter | None = None, stop: trio.Event | None = None,
               wait_for_start: bool = True, grace_s: float = STOP_GRACE_S, drops_per_min: float = 0.0) -> Outcome:
    """Play one match with `bot` until it ends, the connection closes for good, or `stop` is set
    (then inputs stop, and `play` waits up to `grace_s` for their acknowledgements).

    With `wait_for_start` (matchmade matches, which always have a lobby) inputs start at the
    `start` event; pass False for a match created without a lobby. With `drops_per_min` > 0 the
    connection is dropped at random (a Poisson process of that rate, until the match ends; see
    `drop_connection`): the seat is kept, and the client reconnects, resumes and resends."""
    run = _Run(client, bot, meter or Meter(), started=not wait_for_start)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run.send_inputs)
        if stop is not None:
            nursery.start_soon(run.stop_on, stop, grace_s, nursery.cancel_scope)
        if drops_per_min > 0:
            nursery.start_soon(run.drop_now_and_then, drops_per_min)
        await run.read_frames()
        nursery.cancel_scope.cancel()
    return run.finish()


class _Run:
    def __init__(self, client: MatchClient, bot: Bot, meter: Meter, started: bool):
        self.client, self.bot, self.meter = client, bot, meter
        self.started = started
        self.over = False  # the end event came, or stop was set: send nothing more
        self.pending: deque[tuple[int, float]] = deque()  # (seq, sent at), oldest first
        self.dropped_at: float | None = None  # when `drop_now_and_then` last cut the connection
        self.settled = trio.Event()  # set whenever `pending` becomes empty
        self.outcome = Outcome()

    async def send_inputs(self) -> None:
        client, bot, meter, pending = self.client, self.bot, self.meter, self.pending
        period = bot.period_s
        deadline = trio.current_time() + bot.rng.random() * period
        while True:
            await trio.sleep_until(deadline)
            if self.started and not self.over:
                data = bot.next_input()
                if data is not None:
                    sent_at = trio.current_time()
                    seq = await client.send_input(data)
                    pending.append((seq, sent_at))
                    meter.sent += 1
                    self.outcome.sent += 1
            deadline += period
            now = trio.current_time()
            if deadline < now:  # this loop fell behind (overload): skip the missed sends
                deadline += (now - deadline) // period * period + period

    async def read_frames(self) -> None:
        client, bot, outcome = self.client, self.bot, self.outcome
        while True:
            try:
                message = await client.receive()
            except MatchClosed as closed:
                if outcome.status in ("ended", "cancelled", "crashed"):
                    return  # the close that follows the end event
                outcome.close_code, outcome.close_reason = closed.code, closed.reason
                # 4012: the match was over when the client came back. 1000 while coming back from a
                # deliberate drop: it ended between the client's auth and its admission.
                away = self.dropped_at is not None
                outcome.status = "over" if closed.code == 4012 or (away and closed.code == 1000) else "closed"
                return
            if isinstance(message, State):
                self._settle()
                bot.on_state(message)
            elif isinstance(message, Welcome):
                outcome.match_id, outcome.player = message.match_id, message.player
                outcome.welcomes += 1
                self.meter.reconnects += outcome.welcomes > 1
                if self.dropped_at is not None:
                    self.meter.reconnect_buckets[int((trio.current_time() - self.dropped_at) * 1000)] += 1
                    self.dropped_at = None
                self._settle()
                bot.on_welcome(message)
            elif isinstance(message, Event):
                if message.kind == "start":
                    self.started = True
                    if isinstance(message.data, dict) and isinstance(message.data.get("players"), list):
                        outcome.players = message.data["players"]
                elif message.kind == "end":
                    data = message.data if isinstance(message.data, dict) else {}
                    outcome.status = data.get("status", "ended")
                    outcome.result = data.get("result")
                    self.over = True
                bot.on_event(message)
            elif isinstance(message, Error):
                self.meter.errors[f"error_frame_{message.code}"] += 1
                if message.seq is not None:
                    outcome.refused.add(message.seq)
                    self.meter.refused += 1

    def _settle(self) -> None:
        acked, pending, refused = self.client.acked, self.pending, self.outcome.refused
        if pending and pending[0][0] <= acked:
            now = trio.current_time()
            while pending and pending[0][0] <= acked:
                seq, sent_at = pending.popleft()
                if seq not in refused:
                    self.meter.ack(now - sent_at)
        if not pending:
            self.settled.set()

    async def drop_now_and_then(self, per_min: float) -> None:
        rng = random.Random(self.bot.rng.random())  # its own stream, seeded by the bot's
        while True:
            await trio.sleep(rng.expovariate(per_min / 60.0))
            if self.over:
                return
            if await drop_connection(self.client):
                self.outcome.drops += 1
                self.dropped_at = trio.current_time()

    async def stop_on(self, stop: trio.Event, grace_s: float, scope: trio.CancelScope) -> None:
        await stop.wait()
        self.over = True
        if self.outcome.status == "closed":  # not over yet (else its end event came first)
            self.outcome.status = "stopped"
        with trio.move_on_after(grace_s):
            while self.pending:
                self.settled = trio.Event()
                await self.settled.wait()
        scope.cancel()

    def finish(self) -> Outcome:
        outcome = self.outcome
        outcome.acked = self.client.acked
        self.meter.unacked += sum(1 for seq, _ in self.pending if seq not in outcome.refused)
        for kind, n in self.bot.mistakes.items():
            self.meter.errors[f"bot_{kind}"] += n
        return outcome


async def drop_connection(client: MatchClient) -> bool:
    """Cut the client's connection as a network loss would: its TCP stream is closed without a
    WebSocket close frame. The server sees the connection drop (the player keeps their seat for
    the game's reconnect grace); the client sees 1006 and reconnects, resumes and resends. False
    if it was not connected (already reconnecting).

    This reaches into `MatchClient._ws` and trio-websocket's `_stream`: neither offers a public
    way to lose a connection, and a clean close would not do (the server answers it with 1000,
    after which a client rightly does not come back)."""
    ws = client._ws
    if ws is None or ws.closed is not None:
        return False
    await ws._stream.aclose()
    return True


class SharedHTTP(ArbiterHTTP):
    """`ArbiterHTTP` for one player over a process-wide `httpx.AsyncClient`: many bots, one
    connection pool (an `AsyncClient` of its own costs a bot about 30 ms of CPU and 1 MB).
    Closing it does not close the shared client."""

    def __init__(self, client: httpx.AsyncClient, player_token: str | None = None):
        # Not super().__init__: that would make a client of its own. These are ArbiterHTTP's fields.
        self._http = client
        self.player_token = player_token
        self.player_id = None

    async def __aexit__(self, *exc: object) -> None:
        pass


def shared_client(base_url: str, timeout: float = 10.0) -> httpx.AsyncClient:
    """An `httpx.AsyncClient` for many bots: no limit on connections (each long-poll holds one).
    Idle connections are dropped after 1 s, well before the server's keep-alive timeout (5 s in
    matchmaker/http_server.py): a request sent on a connection the server is closing fails."""
    return httpx.AsyncClient(base_url=base_url, timeout=timeout,
                             limits=httpx.Limits(max_connections=None, max_keepalive_connections=None,
                                                 keepalive_expiry=1.0))
