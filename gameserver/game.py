"""The game-plugin API: what a game is, what its hooks get, what they answer.

A game is a subclass of `Game` with typed state, input and parameter classes (attrs) and hooks
that read as the story of a match: init, join_attempt, join, leave, tick, result. Hooks change the
state in place (or return a new one). They get a `Context`: the tick number, a random generator
seeded per match and tick, the match's key-value store and `emit` for game events. They read no
clock and do no I/O, so a match can be re-simulated exactly from its input log. See docs/games.md.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping
from typing import Any, ClassVar, Generic, TypeVar

import attrs

from .canonical import encode

S = TypeVar("S")
I = TypeVar("I")
P = TypeVar("P")

MIN_TICK_RATE = 1
MAX_TICK_RATE = 120
KV_KEY_MAX = 256
KV_VALUE_MAX = 64 * 1024
RESERVED_EVENTS = ("join", "leave", "end")


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
    """What a hook may know and do besides the state. Built by the runtime for each step."""

    __slots__ = ("tick", "match_id", "params", "kv", "events", "_seed", "_random")

    def __init__(self, *, tick: int, match_id: str, seed: int, params: Any, kv: KeyValue):
        self.tick = tick
        self.match_id = match_id
        self.params = params
        self.kv = kv
        self.events: list[tuple[str, Any]] = []
        self._seed = seed
        self._random: random.Random | None = None

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


class Game(Generic[S, I, P]):
    """Base class of a game. Subclass it, set the class attributes, override the hooks."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"
    tick_rate: ClassVar[int] = 20
    min_players: ClassVar[int] = 1
    max_players: ClassVar[int] = 8
    state_type: ClassVar[type]
    input_type: ClassVar[type]
    params_type: ClassVar[type] = NoParams

    def init(self, params: P, ctx: Context) -> S:
        """The state of a new match."""
        raise NotImplementedError

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
        """The end condition, checked after every tick: a `Result` ends the match."""
        return None

    def audience(self, state: S, player: str | None) -> Hashable:
        """Which view `player` sees (None: a spectator). Equal audiences get the same bytes."""
        return None

    def view(self, state: S, audience: Hashable) -> Any:
        """What an audience sees of the state. Override with `audience` to hide information."""
        return state


def check_game_class(game: type[Game]) -> None:
    """Raise `TypeError` if a game class does not declare what the runtime needs."""
    for attribute in ("name", "state_type", "input_type"):
        if not hasattr(game, attribute):
            raise TypeError(f"{game.__name__} must set {attribute}")
    if not MIN_TICK_RATE <= game.tick_rate <= MAX_TICK_RATE:
        raise TypeError(f"{game.__name__}.tick_rate must be {MIN_TICK_RATE} to {MAX_TICK_RATE}")
    if not 1 <= game.min_players <= game.max_players:
        raise TypeError(f"{game.__name__} needs 1 <= min_players <= max_players")
    for cls in (game.state_type, game.input_type, game.params_type):
        if not attrs.has(cls):
            raise TypeError(f"{game.__name__}: {cls!r} must be an attrs class")
