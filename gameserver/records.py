"""What a tick writes: pure records built from a simulation step, committed by storage.py."""

from __future__ import annotations

from typing import Any

import attrs

from .alarms import Alarm
from .simulation import CANCELLED, Command, Simulation, Step


@attrs.frozen
class Snapshot:
    tick: int
    state: str  # the canonical JSON of the state
    checksum: int
    seated: list[str]
    last_seq: dict[str, int]
    started: bool = True
    timers: dict[str, float] = attrs.field(factory=dict)
    roster: list[str] | None = None  # the matchmaker's players, None for an open match


@attrs.define
class StepRecord:
    """Everything one tick writes, committed in one transaction. (Not frozen: the actor adds the
    runtime's alarm writes before the commit; an `attrs.evolve` per tick cost more than the rest of
    building it. Nothing changes it after the commit.)"""

    tick: int
    commands: list[Command]
    checksum: int | None  # None: the tick did not complete (game code crashed in it)
    events: list[tuple[str, Any]] = attrs.field(factory=list)
    kv_writes: list[tuple[str, Any]] = attrs.field(factory=list)
    snapshot: Snapshot | None = None
    status: str | None = None  # a new status, if the tick changed it
    status_reason: str | None = None
    result: Any = None
    at: float = 0.0  # the step's time (ctx.now), for replay
    ticked: bool = True  # whether the game's tick ran in this step, for replay
    started: bool = False  # the match left its lobby in this step
    alarm_writes: list[tuple[str, Alarm | None]] = attrs.field(factory=list)
    next_alarm_at: float | None = None  # with alarm_writes: the earliest alarm after them


def snapshot_of(sim: Simulation) -> Snapshot:
    """A snapshot of the simulation, normalised first (see `Simulation.normalize`)."""
    sim.normalize()
    return Snapshot(sim.tick, sim.canonical().decode(), sim.checksum(), list(sim.seated), dict(sim.last_seq),
                    sim.started, dict(sim.timers), None if sim.roster is None else list(sim.roster))


def step_record(sim: Simulation, step: Step, snapshot_every: int) -> StepRecord:
    """The record of a completed step: commands, checksum, events (with "end" if the match ended),
    key-value writes, a snapshot every `snapshot_every` ticks and the result."""
    events = list(step.events)
    status = result = reason = None
    if step.status is not None and step.result is not None:
        status = step.status
        result = {"winners": list(step.result.winners), "reason": step.result.reason, "data": dict(step.result.data)}
        if status == CANCELLED:
            reason = step.result.reason
        events.append(("end", {"status": status, "result": result}))
    snapshot = snapshot_of(sim) if step.tick % snapshot_every == 0 or status is not None else None
    alarm_writes = [(name, None if due is None else Alarm(name, due)) for name, due in step.timer_writes]
    return StepRecord(step.tick, step.applied, sim.checksum(), events, step.kv_writes, snapshot, status=status,
                      status_reason=reason, result=result, at=step.at, ticked=step.ticked, started=step.started,
                      alarm_writes=alarm_writes)
