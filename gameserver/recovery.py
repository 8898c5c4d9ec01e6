"""Rebuild a match from its file: the latest snapshot, then the logged commands re-simulated.

The input log is the truth and snapshots are a cache. Every re-simulated tick's checksum is
compared with the stored one, so a divergence (non-deterministic game code, a different game
version, a damaged file) is found at the tick where it happens; a completed tick with no stored
step or checksum is a hole in the log (`MissingStep`), never re-simulated unchecked. Used by actor
activation and by the replay tool.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from . import canonical
from .game import Game, fingerprint
from .simulation import GameCrashed, Simulation, Step, checked_seconds
from pathlib import Path
from typing import Any

from .records import Snapshot, snapshot_of
from .alarms import END, LOBBY, Alarm, earliest
from .storage import LOBBY as LOBBY_STATUS, RUNNING, CorruptFile, MatchFileError, MatchMeta, MatchStore


DEFAULT_ROSTER_LOBBY_S = 60.0
_NO_COMMANDS = (None, ())  # after the last tick with logged commands


class Diverged(MatchFileError):
    """Re-simulation did not reproduce the stored checksum at `tick`."""

    def __init__(self, path: object, tick: int, expected: int, actual: int, *, sim: Simulation | None = None,
                 previous: bytes | None = None):
        super().__init__(f"{path}: re-simulation diverged at tick {tick} "
                         f"(stored checksum {expected}, re-simulated {actual})")
        self.tick = tick
        self.expected = expected
        self.actual = actual
        self.sim = sim  # the re-simulated match at `tick`, for the replay tool's diff
        self.previous = previous  # the canonical state after tick - 1, which matched its checksum


class MissingStep(CorruptFile):
    """The log has no completed step at `tick`, a tick the match completed (at or before its last
    completed tick): rows were lost or removed. Every completed step has its row and checksum (the
    step a crash interrupted, past the last completed tick, is the only one without a checksum), so
    re-simulating past the hole would run the tick with neither its commands nor a check."""

    def __init__(self, path: object, tick: int, reason: str):
        super().__init__(f"{path}: damaged: {reason}")
        self.tick = tick
        self.reason = reason


def create_match_file(path: Path, game: Game, *, match_id: str, params: Any, seed: int, snapshot_every: int,
                      now: float, synchronous: str = "NORMAL", roster: list[str] | None = None,
                      lobby_s: float | None = None, labels: dict[str, str] | None = None) -> tuple[MatchMeta, Simulation]:
    """Run the game's `init` and create the match's file with tick 0 as its first snapshot.

    `params` is already structured. With a `roster` (the matchmaker's players) only they may join,
    and the lobby waits `lobby_s` (default: the game's lobby timeout, else 60 s) for all of them.
    Raises `GameCrashed` if `init`, `lobby_timeout` or `duration` raises (or returns what is not
    seconds), `MatchExists` if the file is there already.
    """
    sim = Simulation.new(game, match_id=match_id, seed=seed, params=params, now=now, roster=roster)
    try:
        lobby = lobby_s if lobby_s is not None else checked_seconds(game.lobby_timeout(params), "lobby_timeout")
        # no lobby: the match runs from now, so its length runs from now too
        duration = checked_seconds(game.duration(params), "duration") if sim.started else None
    except Exception as error:
        raise GameCrashed(0, [], error) from error
    if lobby is None and roster is not None:
        lobby = DEFAULT_ROSTER_LOBBY_S
    alarms = [] if sim.started else [Alarm(LOBBY, now + max(float(lobby), 0.0))]
    if duration is not None:
        alarms.append(Alarm(END, now + duration))
    alarms += [Alarm(name, due) for name, due in sim.timers.items()]  # set by init
    meta = MatchMeta(match_id=match_id, game=game.name, game_version=game.version,
                     params=canonical.converter.unstructure(params), seed=seed, tick_rate=game.tick_rate,
                     snapshot_every=snapshot_every, status=RUNNING if sim.started else LOBBY_STATUS, status_reason=None,
                     tick=0, created_at=now, updated_at=now, started_at=now if sim.started else None, ended_at=None,
                     result=None, next_alarm_at=earliest(alarms), code_fingerprint=fingerprint(type(game)),
                     labels=dict(labels or {}))
    MatchStore.create(path, meta, snapshot_of(sim), kv=sim.kv, alarms=alarms, synchronous=synchronous).close()
    return meta, sim


def simulation_at_snapshot(store: MatchStore, game: Game, meta: MatchMeta, snapshot: Snapshot) -> Simulation:
    """A simulation positioned at a snapshot, checked against the snapshot's checksum."""
    try:
        params = canonical.converter.structure(meta.params, game.params_type)
        state = canonical.converter.structure(json.loads(snapshot.state), game.state_type)
    except Exception as error:
        raise CorruptFile(f"{store.path}: the snapshot at tick {snapshot.tick} does not fit "
                          f"{game.name} {game.version}: {canonical.describe_error(error)}") from error
    sim = Simulation(game, match_id=meta.match_id, seed=meta.seed, params=params, state=state,
                     tick=snapshot.tick, seated=snapshot.seated, last_seq=snapshot.last_seq,
                     kv=store.kv_at(snapshot.tick), started=snapshot.started, timers=snapshot.timers,
                     roster=snapshot.roster)
    if sim.checksum() != snapshot.checksum:
        raise Diverged(store.path, snapshot.tick, snapshot.checksum, sim.checksum())
    return sim


def restore(store: MatchStore, game: Game, until: int | None = None) -> Simulation:
    """The match as it was after tick `until` (default: the last committed tick)."""
    meta = store.meta()
    last = meta.tick if until is None else min(until, meta.tick)
    snapshot = store.latest_snapshot(at_or_before=last)
    sim = simulation_at_snapshot(store, game, meta, snapshot)
    return resimulate(store, sim, meta, last)


def resimulate(store: MatchStore, sim: Simulation, meta: MatchMeta, last: int,
               progress: Callable[[int], None] | None = None,
               on_step: Callable[[Step], None] | None = None) -> Simulation:
    """Step `sim` through the logged commands up to tick `last`, checking every tick's stored checksum
    (`MissingStep` for a tick the log lacks, `Diverged` for one that differs).
    `progress` (the replay tool's) is called with the tick every 1024 ticks; `on_step` (a replay
    stream's) after every checked step, with `sim` at that step."""
    with sim.reading_log():
        return _resimulate(store, sim, meta, last, progress, on_step)


def _resimulate(store: MatchStore, sim: Simulation, meta: MatchMeta, last: int,
                progress: Callable[[int], None] | None, on_step: Callable[[Step], None] | None) -> Simulation:
    steps = store.steps_after(sim.tick, last)
    commands = store.commands_after(sim.tick, last)
    pending, batch_of_pending = next(commands, _NO_COMMANDS)
    snapshot_every, step_of, stored_step, checksum = meta.snapshot_every, sim.step, steps.get, canonical.checksum
    previous = sim.canonical()  # the state a divergence started from: the last one that matched
    for tick in range(sim.tick + 1, last + 1):  # sim.tick is tick - 1 at the top of each pass
        found = stored_step(tick)
        if found is None:  # a hole in the log, where the match completed the tick
            raise _missing(store, tick, meta.tick)
        stored, at, ticked = found
        if tick == pending:
            batch = batch_of_pending
            pending, batch_of_pending = next(commands, _NO_COMMANDS)
        else:
            batch = ()
        step = step_of(batch, now=at, ticked=ticked)
        if tick % snapshot_every == 0 or step.status is not None:
            sim.normalize()  # as the live match did when it took a snapshot here
        if step.rejected:
            rejection = step.rejected[0]
            raise Diverged(store.path, tick, stored, sim.checksum(), sim=sim,
                           previous=previous) from ValueError(
                f"a logged command was rejected on replay: {rejection.code} {rejection.message}")
        current = sim.canonical()
        if stored != checksum(current):
            raise Diverged(store.path, tick, stored, checksum(current), sim=sim, previous=previous)
        previous = current
        if on_step is not None:
            on_step(step)
        if progress is not None and not tick & 1023:
            progress(tick)
    return sim


def _missing(store: MatchStore, tick: int, completed: int) -> MissingStep:
    if store.has_step(tick):
        reason = (f"tick {tick} has no stored checksum, as if it never completed, but the match completed "
                  f"up to tick {completed}")
    else:
        reason = f"tick {tick} is missing from the log (the match completed up to tick {completed})"
    return MissingStep(store.path, tick, reason)
