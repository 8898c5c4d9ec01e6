"""Tick deadlines on an absolute schedule, and the policy for ticks that overran. Time is an input.

Tick k of a schedule is due at `origin + k * period`, so rounding never accumulates into drift.
A tick that starts late runs at once. If the loop fell more than `max_behind` periods behind
(a stall: a long GC pause, a suspended process), it does not run a burst of catch-up ticks: the
schedule moves on to the next future deadline, and every deadline passed over counts as late.
The game's tick counter counts simulated ticks, so game code never sees a jump.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs


@attrs.define
class Schedule:
    origin: float
    period: float
    index: int = 0  # the index of the next deadline
    max_behind: int = 2

    @classmethod
    def starting(cls, now: float, rate: int, slot: float = 0.0, load: Sequence[int] = ()) -> "Schedule":
        """The first deadline one period after `now`, rounded up to a multiple of `slot` (if not
        0): the deadlines of many matches then fall together, on few distinct instants. With `load`
        (how many ticking matches have their deadlines in each of the period's slots, slot 0 at the
        multiples of the period), the first deadline moves on to the least loaded slot (the soonest
        of them): matches that start together then tick apart, and no slot holds more ticks than the
        others while one stays empty."""
        period = 1.0 / rate
        origin = now + period
        if slot > 0:
            origin = math.ceil(origin / slot) * slot
            if load:
                slots = len(load)
                first = round((origin % period) / slot) % slots
                origin += slot * min(range(slots), key=lambda k: (load[(first + k) % slots], k))
        return cls(origin=origin, period=period)

    def deadline(self) -> float:
        return self.origin + self.index * self.period

    def advance(self, now: float) -> int:
        """Move past the deadline just served; return how many deadlines were skipped."""
        self.index += 1
        behind = int((now - self.deadline()) / self.period)
        if behind > self.max_behind:
            self.index += behind + 1  # the first deadline after `now`
            return behind + 1
        return 0
