"""The game-plugin API: what a game is, what its hooks get, what they answer.

A game is a subclass of `Game` with typed state, input and parameter classes (attrs) and hooks
that read as the story of a match: init, join_attempt, join, leave, tick, result. Hooks change the
state in place (or return a new one). They get a `Context`: the tick number, a random generator
seeded per match and tick, the match's key-value store and `emit` for game events. They read no
clock and do no I/O, so a match can be re-simulated exactly from its input log. See docs/games.md.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import random
import sys
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import attrs

from .alarms import ALARM, check_due, check_game_name
from .canonical import encode

S = TypeVar("S")
I = TypeVar("I")
P = TypeVar("P")

MIN_TICK_RATE = 1
MAX_TICK_RATE = 120
KV_KEY_MAX = 256
KV_VALUE_MAX = 64 * 1024
RESERVED_EVENTS = ("join", "leave", "start", "end")


@attrs.frozen
class PlayerInput(Generic[I]):
    """One input of one player, in the order the match received it."""

    player: str
    seq: int
    data: I


@attrs.frozen
class Accept:
    """`join_attempt`'s answer: the player may take a seat."""


@attrs.frozen
class Refuse:
    """`join_attempt`'s answer: the player may not join; `reason` is shown to them."""

    reason: str


ACCEPT = Accept()


@attrs.frozen
class Result:
    """How a match ended. `data` is game-specific and must be JSON-serialisable."""

    winners: tuple[str, ...] = ()
    reason: str = "finished"
    data: Mapping[str, Any] = attrs.field(factory=dict)


class KeyValue:
    """The match's key-value store for game code. Values are JSON-serialisable.

    Writes are recorded with the tick that made them and committed with that tick, so a replay
    sees exactly the values the live match saw.
    """

    def __init__(self, values: dict[str, Any]):
        self._values = values
        self.writes: list[tuple[str, Any]] = []

    def get(self, key: str, default: Any = None) -> Any:
        return self._values.get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self._values

    def set(self, key: str, value: Any) -> None:
        if not isinstance(key, str) or not 1 <= len(key.encode()) <= KV_KEY_MAX:
            raise ValueError(f"a key is a string of 1 to {KV_KEY_MAX} bytes")
        if value is None:
            raise ValueError("None is not a value; use delete()")
        if len(encode(value)) > KV_VALUE_MAX:
            raise ValueError(f"a value encodes to at most {KV_VALUE_MAX} bytes of JSON")
        self._values[key] = value
        self.writes.append((key, value))

    def delete(self, key: str) -> None:
        if self._values.pop(key, None) is not None:
            self.writes.append((key, None))


class Context:
    """What a hook may know and do besides the state. Built by the runtime for each step.

    `now` is the step's time in seconds since the epoch: recorded with the step, so a replay sees
    the same value. It is the only time game code gets; use it to set alarms and timers.
    """

    __slots__ = ("tick", "match_id", "params", "kv", "events", "now", "retry", "timers", "timer_writes",
                 "_seed", "_random")

    def __init__(self, *, tick: int, match_id: str, seed: int, params: Any, kv: KeyValue, now: float = 0.0,
                 timers: dict[str, float] | None = None):
        self.tick = tick
        self.match_id = match_id
        self.params = params
        self.kv = kv
        self.now = now
        self.retry = 0  # in on_alarm / on_timer: how many earlier attempts of this firing failed
        self.events: list[tuple[str, Any]] = []
        self.timers = timers if timers is not None else {}
        self.timer_writes: list[tuple[str, float | None]] = []
        self._seed = seed
        self._random: random.Random | None = None

    # -- the primary alarm (Durable Objects' setAlarm / getAlarm / deleteAlarm) ---------------

    @property
    def alarm(self) -> float | None:
        """When the primary alarm is due, or None."""
        return self.timers.get(ALARM)

    def set_alarm(self, at: float) -> None:
        """Set (or move) the primary alarm to `at` (e.g. `ctx.now + 30`); `on_alarm` runs then.
        A time in the past fires at once."""
        self._write(ALARM, check_due(at))

    def delete_alarm(self) -> None:
        self._write(ALARM, None)

    # -- named timers ---------------------------------------------------------------------------

    def timer(self, name: str) -> float | None:
        return self.timers.get(name)

    def set_timer(self, name: str, at: float) -> None:
        """Set (or move) the timer `name` to `at`; `on_timer(state, name, ctx)` runs then."""
        self._write(check_game_name(name), check_due(at))

    def cancel_timer(self, name: str) -> None:
        self._write(check_game_name(name), None)

    def _write(self, name: str, at: float | None) -> None:
        if at is None:
            if self.timers.pop(name, None) is None:
                return
        else:
            self.timers[name] = at
        self.timer_writes.append((name, at))

    @property
    def random(self) -> random.Random:
        """A generator seeded by (match seed, tick): the same numbers on every replay."""
        if self._random is None:
            self._random = random.Random(f"{self._seed}:{self.tick}")
        return self._random

    def emit(self, kind: str, data: Any = None) -> None:
        """Send a game event to every connection and record it in the match's event log."""
        if not isinstance(kind, str) or not 1 <= len(kind) <= 64:
            raise ValueError("an event kind is a string of 1 to 64 characters")
        if kind in RESERVED_EVENTS:
            raise ValueError(f"the event kinds {', '.join(RESERVED_EVENTS)} are the runtime's")
        self.events.append((kind, data))


@attrs.frozen
class NoParams:
    """Parameters of a game that takes none."""


EMPTY_END = "end"
EMPTY_PAUSE = "pause"


class Game(Generic[S, I, P]):
    """Base class of a game. Subclass it, set the class attributes, override the hooks."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    tick_rate: ClassVar[int] = 20  # 1 to 120 ticks a second; 0: turn-based, a step per event
    min_players: ClassVar[int] = 1
    max_players: ClassVar[int] = 8
    # Lifecycle policy (seconds). None: no lobby (the match starts when created) / never.
    lobby_timeout_s: ClassVar[float | None] = None
    reconnect_grace_s: ClassVar[float] = 30.0  # a dropped player keeps their seat this long
    empty_timeout_s: ClassVar[float | None] = 300.0  # nobody connected this long: end, or pause
    when_empty: ClassVar[str] = EMPTY_END  # EMPTY_END or EMPTY_PAUSE
    # A running matchmade match whose players left (past their reconnect grace) asks the
    # matchmaker for replacements while this is true.
    backfill: ClassVar[bool] = False
    state_type: ClassVar[type]
    input_type: ClassVar[type]
    params_type: ClassVar[type] = NoParams

    def init(self, params: P, ctx: Context) -> S:
        """The state of a new match."""
        raise NotImplementedError

    def lobby_timeout(self, params: P) -> float | None:
        """How long the lobby waits for a full match (default `lobby_timeout_s`). At the timeout
        the match starts if `min_players` are seated, else it is cancelled."""
        return self.lobby_timeout_s

    def duration(self, params: P) -> float | None:
        """The match length in seconds from its start (None: no limit); then `time_up` runs."""
        return None

    def start(self, state: S, ctx: Context) -> S | None:
        """The lobby is over: the match starts (ticks run from now on)."""
        return None

    def time_up(self, state: S, ctx: Context) -> Result:
        """The match length is over: the result."""
        return Result(reason="time")

    def abandoned(self, state: S, ctx: Context) -> Result:
        """Nobody was connected for `empty_timeout_s` (with `when_empty = "end"`): the result."""
        return Result(reason="abandoned")

    def on_alarm(self, state: S, ctx: Context) -> S | None:
        """The primary alarm is due. If it raises, it is retried (`ctx.retry` counts the failures)."""
        return None

    def on_timer(self, state: S, name: str, ctx: Context) -> S | None:
        """The timer `name` is due. Retried like `on_alarm` if it raises."""
        return None

    def join_attempt(self, state: S, player: str, ctx: Context) -> Accept | Refuse:
        """May `player` take a seat? Called only when the match has a free seat."""
        return ACCEPT

    def join(self, state: S, player: str, ctx: Context) -> S | None:
        """`player` took a seat."""
        return None

    def leave(self, state: S, player: str, ctx: Context) -> S | None:
        """`player` left their seat for good."""
        return None

    def tick(self, state: S, inputs: list[PlayerInput[I]], ctx: Context) -> S | None:
        """Advance the match by one tick; `inputs` are this tick's inputs in arrival order."""
        return None

    def result(self, state: S, ctx: Context) -> Result | None:
        """The end condition, checked after every step of a started match: a `Result` ends it."""
        return None

    def audience(self, state: S, player: str | None) -> Hashable:
        """Which view `player` sees (None: a spectator). Equal audiences get the same bytes."""
        return None

    def view(self, state: S, audience: Hashable) -> Any:
        """What an audience sees of the state. Override with `audience` to hide information."""
        return state


def fingerprint(game: type[Game]) -> str:
    """A fingerprint of a game's code: SHA-256 over the source of the module that defines it (or of
    the class alone when the module's source cannot be read), so that a replay can tell a changed
    game from non-determinism."""
    try:
        source = inspect.getsource(sys.modules[game.__module__])
    except (OSError, TypeError, KeyError):
        try:
            source = inspect.getsource(game)
        except (OSError, TypeError):
            source = f"{game.__module__}.{game.__qualname__} {game.version}"
    return hashlib.sha256(source.encode()).hexdigest()


def _seconds(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value >= 0  # type: ignore[arg-type]


def check_game_class(game: type[Game]) -> None:
    """Raise `TypeError` if a game class does not declare what the runtime needs."""
    for attribute in ("name", "state_type", "input_type"):
        if not hasattr(game, attribute):
            raise TypeError(f"{game.__name__} must set {attribute}")
    for attribute in ("tick_rate", "min_players", "max_players"):
        if type(getattr(game, attribute)) is not int:
            raise TypeError(f"{game.__name__}.{attribute} must be an int")
    if game.tick_rate != 0 and not MIN_TICK_RATE <= game.tick_rate <= MAX_TICK_RATE:
        raise TypeError(f"{game.__name__}.tick_rate must be 0 (turn-based) or {MIN_TICK_RATE} to {MAX_TICK_RATE}")
    if game.when_empty not in (EMPTY_END, EMPTY_PAUSE):
        raise TypeError(f"{game.__name__}.when_empty must be {EMPTY_END!r} or {EMPTY_PAUSE!r}")
    if not 1 <= game.min_players <= game.max_players:
        raise TypeError(f"{game.__name__} needs 1 <= min_players <= max_players")
    for attribute, optional in (("reconnect_grace_s", False), ("empty_timeout_s", True), ("lobby_timeout_s", True)):
        value = getattr(game, attribute)
        if not (optional and value is None or _seconds(value)):
            raise TypeError(f"{game.__name__}.{attribute} must be a finite number of seconds, 0 or more"
                            + (" (or None)" if optional else ""))
    if not isinstance(game.name, str) or not game.name or not isinstance(game.version, str):
        raise TypeError(f"{game.__name__}.name and .version must be strings (name not empty)")
    if not isinstance(game.backfill, bool):
        raise TypeError(f"{game.__name__}.backfill must be True or False")
    for cls in (game.state_type, game.input_type, game.params_type):
        if not attrs.has(cls):
            raise TypeError(f"{game.__name__}: {cls!r} must be an attrs class")
