"""The deterministic heart of a match: state + ordered commands -> the next tick.

`Simulation.step` is the one code path for a live tick, for recovery after a crash and for the
replay tool. It takes a tick's commands (joins, leaves, inputs) in arrival order, drops
duplicates and invalid inputs, runs the game's hooks and returns what the runtime must persist
and send. It never imports trio or sqlite3 and never reads the clock.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import attrs

from . import canonical
from .alarms import ALARM, EMPTY, END, LOBBY
from .game import Context, Game, KeyValue, PlayerInput, Refuse, Result

JOIN = "join"
LEAVE = "leave"
INPUT = "input"
TIMER = "timer"  # an alarm or timer that came due: data is {"name": ..., "retry": n}
RESERVE = "reserve"  # the matchmaker holds a seat for `player` (a backfill): they may join
RELEASE = "release"  # a held seat nobody took is given back (the player never joined)
KINDS = (JOIN, LEAVE, INPUT, TIMER, RESERVE, RELEASE)

ENDED = "ended"
CANCELLED = "cancelled"
NO_SHOW_PREFIX = "players did not join: "  # a roster match cancelled at its lobby timeout


@attrs.define
class Command:
    """One entry of the input log. `data` is an input's unstructured payload.

    Not frozen, like `Step`: nothing changes a command once it is built (its `data` never was
    frozen), and a frozen class costs a call per field to build, on every input of every tick, live
    and replayed."""

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


@attrs.define
class Step:
    """What one step did: the commands to log, the refusals to answer, events, kv and timer writes.

    Not frozen (nothing changes a step's record once `Simulation.step` has returned it; its lists never
    were frozen): a frozen class costs a call per field to build, 11 of them on every tick."""

    tick: int
    applied: list[Command]
    rejected: list[Rejection]
    events: list[tuple[str, Any]]
    kv_writes: list[tuple[str, Any]]
    result: Result | None
    status: str | None = None  # ENDED or CANCELLED when the step ended the match
    started: bool = False  # the match left its lobby in this step
    timer_writes: list[tuple[str, float | None]] = attrs.field(factory=list)
    at: float = 0.0
    ticked: bool = True


def constructor(cls: type) -> Any:
    """A function building an instance of a slotted attrs class from all its fields, in order, by
    setting its slots directly: the same object `cls(...)` builds, without calling a class whose
    `__init__` is Python code (costly) and, for a frozen class, without its setattr per field (the
    slots' own setters are called instead). A step builds a few of these every tick. `cls` itself for
    a class with a validator, a converter or a post-init, whose __init__ does more."""
    fields = attrs.fields(cls)
    if (not all(f.name.isidentifier() and f.init and f.validator is None and f.converter is None for f in fields)
            or hasattr(cls, "__attrs_post_init__") or hasattr(cls, "__attrs_pre_init__")
            or "__slots__" not in cls.__dict__):
        return cls
    names = [f.name for f in fields]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    if cls.__setattr__ is object.__setattr__:  # not frozen, no on_setattr hook: plain attribute stores
        sets = [f"    o.{n} = {n}" for n in names]
    else:
        namespace.update({f"_set_{n}": cls.__dict__[n].__set__ for n in names})
        sets = [f"    _set_{n}(o, {n})" for n in names]
    lines = [f"def make({', '.join(names)}):", "    o = _new(_cls)", *sets, "    return o"]
    exec("\n".join(lines), namespace)
    return namespace["make"]


def exception_text(error: BaseException, limit: int = 500) -> str:
    """`Type: message` of an exception from game code, safe to log, store and send: a message that
    cannot be read is left out, and text no UTF-8 encoder takes (a lone surrogate) is escaped."""
    try:
        text = f"{type(error).__name__}: {error}"
    except Exception:
        text = f"{type(error).__name__} (its message cannot be read)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:limit]


class GameCrashed(Exception):
    """Game code raised. Carries the commands applied before the crash, to be logged."""

    def __init__(self, tick: int, applied: list[Command], error: BaseException):
        super().__init__(f"game code raised at tick {tick}: {exception_text(error)}")
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
        started: bool = True,
        timers: dict[str, float] | None = None,
        roster: list[str] | None = None,
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
        self.started = started  # out of the lobby: inputs and ticks apply
        self.timers: dict[str, float] = dict(timers or {})  # the game's alarm and named timers
        # The players the matchmaker placed here (None: an open match, anyone may join up to max_players).
        # With a roster only its players may take a seat, and the lobby ends when all of them have one.
        self.roster: list[str] | None = None if roster is None else list(roster)
        self._canonical: tuple[int, bytes] | None = None
        self._inputs = canonical.InputCache(game.input_type)
        # Whether the game has an end condition: Game.result answers None, so a game that keeps it is not asked.
        self._ends_itself = type(game).result is not Game.result or "result" in getattr(game, "__dict__", ())

    @classmethod
    def new(cls, game: Game, *, match_id: str, seed: int, params: Any, now: float = 0.0,
            roster: list[str] | None = None) -> Simulation:
        """A fresh match at tick 0: in its lobby if the game has one for these parameters (or a roster).
        Raises `GameCrashed` if the game's `init` raises."""
        sim = cls(game, match_id=match_id, seed=seed, params=params, state=None, roster=roster)
        ctx = sim._context(0, now)
        try:
            sim.state = game.init(params, ctx)
            sim.started = checked_seconds(game.lobby_timeout(params), "lobby_timeout") is None and roster is None
        except Exception as error:
            raise GameCrashed(0, [], error) from error
        return sim

    def _context(self, tick: int, now: float) -> Context:
        return _make_context(tick, self.match_id, self.seed, self.params, self.kv, now, self.timers)

    def reading_log(self) -> _LogInputs:
        """For a re-simulation from the stored log: structured inputs are also cached by the identity
        of their (shared, unchanging) decoded objects while the block runs (see `canonical.InputCache`)."""
        return _LogInputs(self)

    def canonical(self) -> bytes:
        """The canonical encoding of the current state (cached per tick)."""
        cached = self._canonical
        if cached is not None and cached[0] == self.tick:
            return cached[1]
        text = canonical.encode_state(self.state)
        self._canonical = (self.tick, text)
        return text

    def checksum(self) -> int:
        return canonical.checksum(self.canonical())

    def checkpoint(self) -> tuple:
        """Everything a step may change, to put back with `rollback` if the step must not count."""
        return (copy.deepcopy(self.state), self.tick, list(self.seated), dict(self.last_seq),
                copy.deepcopy(self.kv), self.started, dict(self.timers), copy.copy(self.roster))

    def rollback(self, checkpoint: tuple) -> None:
        (self.state, self.tick, self.seated, self.last_seq, self.kv, self.started, self.timers,
         self.roster) = checkpoint
        self._canonical = None

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

    def step(self, commands: list[Command], *, now: float = 0.0, ticked: bool = True) -> Step:
        """Apply one step's commands in order; then, if `ticked` and the match has started, the
        game's tick; then its end condition. `now` is the step's recorded time (ctx.now)."""
        tick = self.tick + 1
        ctx = self._context(tick, now)
        game = self.game
        applied: list[Command] = []
        rejected: list[Rejection] = []
        inputs: list[PlayerInput] = []
        started = False
        outcome: tuple[str, Result] | None = None
        seated, last_seq = self.seated, self.last_seq  # the same objects all step
        structure, known = self._inputs.structure, self._inputs.known
        self.state, state = None, self.state  # a crash must not leave a half-changed state behind
        try:
            for command in commands:
                kind, player = command.kind, command.player
                if kind == INPUT:
                    seq, data = command.seq, command.data
                    if (player not in seated or not self.started or seq <= last_seq.get(player, 0)
                            or not isinstance(data, dict)):
                        rejected.append(self._refusal(command))
                        continue
                    found = None if known is None else known(id(data))  # re-simulating: the same object seen
                    if found is None:
                        try:
                            found = structure(data)
                        except Exception as error:  # any structuring failure is the sender's fault
                            rejected.append(Rejection(command, "invalid_input", canonical.describe_error(error)))
                            continue
                    inputs.append(_make_input(player, seq, found))
                    last_seq[player] = seq
                elif kind == JOIN:
                    if player in self.seated:
                        continue  # already seated: a reconnect, nothing to simulate
                    if self.roster is not None and player not in self.roster:
                        rejected.append(Rejection(command, "not_on_roster", "this match has no seat for you"))
                        continue
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
                    if not self.started and (len(self.seated) >= game.max_players or self._roster_seated()):
                        state, started = self._start(state, ctx), True
                elif kind == LEAVE:
                    if player not in self.seated:
                        continue
                    state = _replaced(state, game.leave(state, player, ctx))
                    self.seated.remove(player)
                    ctx.events.append((LEAVE, {"player": player}))
                elif kind == RESERVE:
                    if self.roster is None or player in self.roster:
                        continue  # an open match, or held already
                    self.roster.append(player)
                elif kind == RELEASE:
                    if self.roster is None or player not in self.roster or player in self.seated:
                        continue
                    self.roster.remove(player)
                elif kind == TIMER:
                    state, fired, outcome, began = self._fire(state, command, ctx)
                    started = started or began
                    if not fired:
                        continue
                else:
                    rejected.append(Rejection(command, "bad_command", f"unknown kind {kind!r}"))
                    continue
                applied.append(command)
                if outcome is not None:
                    break
            if outcome is None and ticked and self.started:
                returned = game.tick(state, inputs, ctx)
                if returned is not None:
                    state = returned
            if outcome is None and self.started and self._ends_itself:
                result = game.result(state, ctx)
                if result is not None:
                    outcome = (ENDED, _check_result(result))
        except Exception as error:
            raise GameCrashed(tick, applied, error) from error
        self.state = state
        self.tick = tick
        status, result = outcome if outcome is not None else (None, None)
        # Step(tick, applied, rejected, events, kv_writes, result, status, started, timer_writes, at, ticked)
        return _make_step(tick, applied, rejected, ctx.events, ctx.kv.writes, result, status, started,
                          ctx.timer_writes, now, ticked)

    def _start(self, state: Any, ctx: Context) -> Any:
        state = _replaced(state, self.game.start(state, ctx))
        self.started = True
        ctx.events.append(("start", {"players": list(self.seated)}))
        return state

    def _roster_seated(self) -> bool:
        return self.roster is not None and all(player in self.seated for player in self.roster)

    def _fire(self, state: Any, command: Command, ctx: Context) -> tuple[Any, bool, tuple[str, Result] | None, bool]:
        """Run a due alarm: (state, whether it applied, the outcome if it ends the match, started)."""
        data = command.data if isinstance(command.data, dict) else {}
        name, retry = data.get("name"), data.get("retry", 0)
        game = self.game
        if name == LOBBY:
            if self.started:
                return state, False, None, False
            if self.roster is not None:
                missing = [p for p in self.roster if p not in self.seated]
                if not missing:
                    return self._start(state, ctx), True, None, True
                reason = f"{NO_SHOW_PREFIX}{', '.join(missing)}"
                return state, True, (CANCELLED, Result(reason=reason, data={"missing": missing})), False
            if len(self.seated) >= game.min_players:
                return self._start(state, ctx), True, None, True
            reason = f"not enough players joined ({len(self.seated)} of at least {game.min_players})"
            return state, True, (CANCELLED, Result(reason=reason)), False
        if name == END:
            return state, True, (ENDED, _check_result(game.time_up(state, ctx))), False
        if name == EMPTY:
            return state, True, (ENDED, _check_result(game.abandoned(state, ctx))), False
        if not isinstance(name, str) or name not in self.timers:
            return state, False, None, False  # deleted or moved since it was found due
        del self.timers[name]  # before the handler: a timer it sets again is kept
        ctx.timer_writes.append((name, None))
        ctx.retry = retry if isinstance(retry, int) else 0
        if name == ALARM:
            return _replaced(state, game.on_alarm(state, ctx)), True, None, False
        return _replaced(state, game.on_timer(state, name, ctx)), True, None, False

    def _refusal(self, command: Command) -> Rejection:
        """Why an input cannot be applied: the first of `step`'s checks on it that failed, in its order."""
        if command.player not in self.seated:
            return Rejection(command, "not_seated", "you have no seat in this match")
        if not self.started:
            return Rejection(command, "not_started", "the match has not started: it waits for its players")
        if command.seq <= self.last_seq.get(command.player, 0):
            return Rejection(command, "duplicate", f"seq {command.seq} was already processed")
        return Rejection(command, "invalid_input", "an input's data is an object")


class _LogInputs:
    def __init__(self, sim: Simulation):
        self.sim = sim
        self.kept: canonical.InputCache | None = None

    def __enter__(self) -> None:
        self.kept = self.sim._inputs
        self.sim._inputs = canonical.InputCache(self.sim.game.input_type, by_identity=True)

    def __exit__(self, *exc: object) -> None:
        self.sim._inputs = self.kept  # the identities held are let go


def _make_context(tick: int, match_id: str, seed: int, params: Any, kv: dict[str, Any], now: float,
                  timers: dict[str, float] | None) -> Context:
    """`Context(tick=tick, match_id=match_id, seed=seed, params=params, kv=KeyValue(kv), now=now,
    timers=timers)`, the same object built by setting its attributes directly: calling a class whose
    `__init__` is Python code, with keywords, costs several times more, and a step builds one each tick.
    (tests/gameserver/test_simulation.py checks that both give the same attributes.)"""
    store = _new(KeyValue)
    store._values = kv
    store.writes = []
    ctx = _new(Context)
    ctx.tick = tick
    ctx.match_id = match_id
    ctx.params = params
    ctx.kv = store
    ctx.now = now
    ctx.retry = 0
    ctx.events = []
    ctx.timers = timers if timers is not None else {}
    ctx.timer_writes = []
    ctx._seed = seed
    ctx._random = None
    return ctx


_new = object.__new__
make_command = constructor(Command)
_make_input = constructor(PlayerInput)
_make_step = constructor(Step)


def checked_seconds(value: Any, hook: str) -> float | None:
    """What a game's `lobby_timeout` or `duration` returned: None, or a finite number of seconds.
    TypeError otherwise (NaN or a string would make an alarm that never orders or never fires)."""
    if value is None:
        return None
    if type(value) is bool or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{hook} must return a finite number of seconds or None, not {value!r}"[:300])
    return float(value)


def _check_result(result: Any) -> Result:
    if not isinstance(result, Result):
        raise TypeError(f"expected a Result, got {type(result).__name__}")
    return result


def _replaced(state: Any, returned: Any) -> Any:
    return state if returned is None else returned
