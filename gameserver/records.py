"""What a tick writes: pure records built from a simulation step, committed by storage.py."""

from __future__ import annotations

from typing import Any

import attrs

from .simulation import Command, Simulation, Step

ENDED = "ended"


@attrs.frozen
class Snapshot:
    tick: int
    state: str  # the canonical JSON of the state
    checksum: int
    seated: list[str]
    last_seq: dict[str, int]


@attrs.frozen
class StepRecord:
    """Everything one tick writes, committed in one transaction."""

    tick: int
    commands: list[Command]
    checksum: int | None  # None: the tick did not complete (game code crashed in it)
    events: list[tuple[str, Any]] = attrs.field(factory=list)
    kv_writes: list[tuple[str, Any]] = attrs.field(factory=list)
    snapshot: Snapshot | None = None
    status: str | None = None  # a new status, if the tick changed it
    status_reason: str | None = None
    result: Any = None


def snapshot_of(sim: Simulation) -> Snapshot:
    """A snapshot of the simulation, normalised first (see `Simulation.normalize`)."""
    sim.normalize()
    return Snapshot(sim.tick, sim.canonical().decode(), sim.checksum(), list(sim.seated), dict(sim.last_seq))


def step_record(sim: Simulation, step: Step, snapshot_every: int) -> StepRecord:
    """The record of a completed step: commands, checksum, events (with "end" if the match ended),
    key-value writes, a snapshot every `snapshot_every` ticks and the result."""
    events = list(step.events)
    status = result = None
    if step.result is not None:
        status = ENDED
        result = {"winners": list(step.result.winners), "reason": step.result.reason, "data": dict(step.result.data)}
        events.append(("end", {"status": ENDED, "result": result}))
    snapshot = snapshot_of(sim) if step.tick % snapshot_every == 0 or status is not None else None
    return StepRecord(step.tick, step.applied, sim.checksum(), events, step.kv_writes, snapshot,
                      status=status, result=result)
