"""One timer for every ticking match: matches park until their tick's deadline, one task wakes them.

A match that waited for its deadline with `trio.move_on_at` paid for a cancel scope that expires
at every tick: about 40 us of trio's cancellation machinery (the deadline, the Cancelled
exception raised and caught) per tick, 8 % of a core at 2,000 ticks a second. Here a ticking
match parks (`trio.lowlevel.wait_task_rescheduled`) in a heap of deadlines, and one driver task
per trio run wakes every match whose deadline has come, with a plain reschedule. Tick deadlines
fall on a grid of `SLOT_S` (see `ticks.Schedule.starting`), so the driver wakes once per slot for
all the matches in it, not once per match; a match that starts ticking takes the slot its period's
other matches use least (`load`), so that slots hold about as many ticks each.

A parked match can be woken early (`wake`: a stop) and cancelled like any trio task.
"""

from __future__ import annotations

import heapq
import itertools

import trio

SLOT_S = 0.005  # tick deadlines fall on multiples of this (ticks.Schedule.starting)

_current: trio.lowlevel.RunVar["Metronome"] = trio.lowlevel.RunVar("arbiter_metronome")


class Parked:
    __slots__ = ("deadline", "order", "task", "waiting")

    def __init__(self, deadline: float, order: int, task: trio.lowlevel.Task):
        self.deadline = deadline
        self.order = order
        self.task = task
        self.waiting = True

    def __lt__(self, other: "Parked") -> bool:
        return (self.deadline, self.order) < (other.deadline, other.order)


class Metronome:
    def __init__(self) -> None:
        self._heap: list[Parked] = []
        self._order = itertools.count()
        self._changed = trio.Event()

    async def sleep_until(self, deadline: float, on_park=None) -> None:
        """Return at `deadline` or later, or earlier if woken with `wake`. `on_park` is given the
        parked entry (to `wake` it)."""
        entry = Parked(deadline, next(self._order), trio.lowlevel.current_task())
        heapq.heappush(self._heap, entry)
        if self._heap[0] is entry:
            self._changed.set()
        if on_park is not None:
            on_park(entry)

        def abort(_raise_cancel) -> trio.lowlevel.Abort:
            entry.waiting = False  # left in the heap; the driver skips it
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def load(self, period: float, slot: float) -> list[int]:
        """How many parked matches have their deadlines in each `slot` of a `period` (slot 0 at the
        multiples of the period), for `ticks.Schedule.starting`. Read from the heap: nothing to keep
        up to date (a match ticking at this instant is left out)."""
        counts = [0] * max(1, round(period / slot))
        for entry in self._heap:
            if entry.waiting:
                counts[round((entry.deadline % period) / slot) % len(counts)] += 1
        return counts

    @staticmethod
    def wake(entry: Parked | None) -> None:
        if entry is not None and entry.waiting:
            entry.waiting = False
            trio.lowlevel.reschedule(entry.task)

    async def run(self) -> None:
        heap = self._heap
        while True:
            while heap and not heap[0].waiting:
                heapq.heappop(heap)
            self._changed = trio.Event()
            if not heap:
                await self._changed.wait()
                continue
            now = trio.current_time()
            if heap[0].deadline > now:
                with trio.move_on_at(heap[0].deadline):
                    await self._changed.wait()
                now = trio.current_time()
            while heap and heap[0].deadline <= now:
                entry = heapq.heappop(heap)
                if entry.waiting:
                    entry.waiting = False
                    trio.lowlevel.reschedule(entry.task)


def current() -> Metronome:
    """The metronome of this trio run, started on first use (as a system task)."""
    try:
        return _current.get()
    except LookupError:
        metronome = Metronome()
        _current.set(metronome)
        trio.lowlevel.spawn_system_task(metronome.run, name="arbiter metronome")
        return metronome
