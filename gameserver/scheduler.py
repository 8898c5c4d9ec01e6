"""The node-wide alarm scheduler: wakes each match when its earliest alarm is due.

It knows one due time per match (the earliest of its alarms, from the match's file at start and
from its actor afterwards), keeps them in a heap, and calls `on_due(match_id)` when one comes due:
the node then activates the match if it is out of memory (hibernated, or not loaded since a
restart). Due times are wall-clock seconds; waiting uses trio's clock, so tests can use MockClock.

Wake-ahead: a match is woken `lead_s` before its alarm is due (unless set `exact`). Loading a
hibernated match takes a few milliseconds, more under a burst of wakes; woken early, it is in
memory when the alarm comes due and its own loop fires it on time. A match already in memory only
gets a poke, which costs nothing: its loop keeps its own deadlines.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Awaitable, Callable

import trio


class AlarmScheduler:
    def __init__(self, wall_clock: Callable[[], float], on_due: Callable[[str], Awaitable[None]],
                 lead_s: float = 0.0):
        self.wall_clock = wall_clock
        self.on_due = on_due
        self.lead_s = lead_s
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._changed = trio.Event()

    def set(self, match_id: str, due: float | None, *, exact: bool = False) -> None:
        """Schedule `match_id` for an alarm due at `due`, woken `lead_s` ahead unless `exact`
        (replacing what it had), or forget it (None)."""
        if due is None:
            self._due.pop(match_id, None)
            return
        if not exact:
            due -= self.lead_s
        if self._due.get(match_id) == due:
            return
        self._due[match_id] = due
        heapq.heappush(self._heap, (due, match_id))
        if len(self._heap) > 2 * len(self._due) + 64:  # drop stale entries now and then
            self._heap = [(d, m) for m, d in self._due.items()]
            heapq.heapify(self._heap)
        self._changed.set()

    def _pop_due(self, now: float) -> list[str]:
        ready = []
        while self._heap:
            due, match_id = self._heap[0]
            if self._due.get(match_id) != due:
                heapq.heappop(self._heap)  # stale: rescheduled or forgotten since
                continue
            if due > now:
                break
            heapq.heappop(self._heap)
            del self._due[match_id]
            ready.append(match_id)
        return ready

    def _next(self) -> float:
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else math.inf

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                for match_id in self._pop_due(self.wall_clock()):
                    nursery.start_soon(self.on_due, match_id)
                wait = self._next() - self.wall_clock()
                self._changed = trio.Event()
                if wait > 0:
                    with trio.move_on_after(wait):
                        await self._changed.wait()
                else:
                    await trio.sleep(0)
