"""The deterministic heart of a match: state + ordered commands -> the next tick.

`Simulation.step` is the one code path for a live tick, for recovery after a crash and for the
replay tool. It takes a tick's commands (joins, leaves, inputs) in arrival order, drops
duplicates and invalid inputs, runs the game's hooks and returns what the runtime must persist
and send. It never imports trio or sqlite3 and never reads the clock.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from . import canonical
from .game import Context, Game, KeyValue, PlayerInput, Refuse, Result

JOIN = "join"
LEAVE = "leave"
INPUT = "input"
KINDS = (JOIN, LEAVE, INPUT)


@attrs.frozen
class Command:
    """One entry of the input log. `data` is an input's unstructured payload."""

    kind: str
    player: str
    seq: int = 0
    data: Any = None


@attrs.frozen
class Rejection:
    """A command the step did not apply, with the code and message its sender is told."""

    command: Command
    code: str
    message: str


@attrs.frozen
class Step:
    """What one tick did: the commands to log, the refusals to answer, events, kv writes."""

    tick: int
    applied: list[Command]
    rejected: list[Rejection]
    events: list[tuple[str, Any]]
    kv_writes: list[tuple[str, Any]]
    result: Result | None


class GameCrashed(Exception):
    """Game code raised. Carries the commands applied before the crash, to be logged."""

    def __init__(self, tick: int, applied: list[Command], error: BaseException):
        super().__init__(f"game code raised at tick {tick}: {type(error).__name__}: {error}")
        self.tick = tick
        self.applied = applied
        self.error = error


class Simulation:
    """A match's state and what the runtime tracks beside it, advanced one tick at a time."""

    def __init__(
        self,
        game: Game,
        *,
        match_id: str,
        seed: int,
        params: Any,
        state: Any,
        tick: int = 0,
        seated: list[str] | None = None,
        last_seq: dict[str, int] | None = None,
        kv: dict[str, Any] | None = None,
    ):
        self.game = game
        self.match_id = match_id
        self.seed = seed
        self.params = params
        self.state = state
        self.tick = tick
        self.seated: list[str] = list(seated or [])  # join order
        self.last_seq: dict[str, int] = dict(last_seq or {})  # the acknowledgements
        self.kv: dict[str, Any] = dict(kv or {})
        self._canonical: tuple[int, bytes] | None = None

    @classmethod
    def new(cls, game: Game, *, match_id: str, seed: int, params: Any) -> Simulation:
        """A fresh match at tick 0. Raises `GameCrashed` if the game's `init` raises."""
        sim = cls(game, match_id=match_id, seed=seed, params=params, state=None)
        ctx = sim._context(0)
        try:
            sim.state = game.init(params, ctx)
        except Exception as error:
            raise GameCrashed(0, [], error) from error
        return sim

    def _context(self, tick: int) -> Context:
        return Context(tick=tick, match_id=self.match_id, seed=self.seed, params=self.params,
                       kv=KeyValue(self.kv))

    def canonical(self) -> bytes:
        """The canonical encoding of the current state (cached per tick)."""
        if self._canonical is None or self._canonical[0] != self.tick:
            self._canonical = (self.tick, canonical.encode_state(self.state))
        return self._canonical[1]

    def checksum(self) -> int:
        return canonical.checksum(self.canonical())

    def normalize(self) -> None:
        """Replace the state with its snapshot round trip (encode, decode, structure).

        A state holding, say, the int 0 in a float field encodes as 0 but comes back from a
        snapshot as 0.0: normalising at every snapshot makes the live state exactly what a
        restore rebuilds. A state that cannot make the round trip raises `TypeError`.
        """
        encoded = self.canonical()
        try:
            state = canonical.converter.structure(json.loads(encoded), self.game.state_type)
        except Exception as error:
            raise TypeError(f"the state of {self.game.name} does not survive a snapshot round trip: "
                            f"{canonical.describe_error(error)}") from error
        if canonical.encode_state(state) != encoded:
            self.state = state
            self._canonical = None

    def step(self, commands: list[Command]) -> Step:
        """Apply one tick's commands in order, then the game's tick and end condition."""
        tick = self.tick + 1
        ctx = self._context(tick)
        game = self.game
        applied: list[Command] = []
        rejected: list[Rejection] = []
        inputs: list[PlayerInput] = []
        state = self.state
        try:
            for command in commands:
                kind, player = command.kind, command.player
                if kind == INPUT:
                    data = self._admit_input(command)
                    if isinstance(data, Rejection):
                        rejected.append(data)
                        continue
                    inputs.append(PlayerInput(player, command.seq, data))
                    self.last_seq[player] = command.seq
                elif kind == JOIN:
                    if player in self.seated:
                        continue  # already seated: a reconnect, nothing to simulate
                    if len(self.seated) >= game.max_players:
                        rejected.append(Rejection(command, "match_full", "the match is full"))
                        continue
                    answer = game.join_attempt(state, player, ctx)
                    if isinstance(answer, Refuse):
                        rejected.append(Rejection(command, "join_refused", str(answer.reason)))
                        continue
                    state = _replaced(state, game.join(state, player, ctx))
                    self.seated.append(player)
                    self.last_seq.setdefault(player, 0)
                    ctx.events.append((JOIN, {"player": player}))
                elif kind == LEAVE:
                    if player not in self.seated:
                        continue
                    state = _replaced(state, game.leave(state, player, ctx))
                    self.seated.remove(player)
                    ctx.events.append((LEAVE, {"player": player}))
                else:
                    rejected.append(Rejection(command, "bad_command", f"unknown kind {kind!r}"))
                    continue
                applied.append(command)
            state = _replaced(state, game.tick(state, inputs, ctx))
            result = game.result(state, ctx)
            if result is not None and not isinstance(result, Result):
                raise TypeError(f"result() must return a Result or None, not {type(result).__name__}")
        except Exception as error:
            raise GameCrashed(tick, applied, error) from error
        self.state = state
        self.tick = tick
        return Step(tick, applied, rejected, ctx.events, ctx.kv.writes, result)

    def _admit_input(self, command: Command) -> Any:
        """The structured input, or the `Rejection` that says why it cannot be applied."""
        if command.player not in self.seated:
            return Rejection(command, "not_seated", "you have no seat in this match")
        if command.seq <= self.last_seq.get(command.player, 0):
            return Rejection(command, "duplicate", f"seq {command.seq} was already processed")
        if not isinstance(command.data, dict):
            return Rejection(command, "invalid_input", "an input's data is an object")
        try:
            return canonical.converter.structure(command.data, self.game.input_type)
        except Exception as error:  # any structuring failure is the sender's fault
            return Rejection(command, "invalid_input", canonical.describe_error(error))


def _replaced(state: Any, returned: Any) -> Any:
    return state if returned is None else returned
