"""Returning freed memory to the operating system (glibc only; elsewhere these do nothing), and
keeping long-lived objects out of the garbage collector's full passes.

Activating a match opens its SQLite file in a worker thread; hibernating it frees all of that,
but glibc keeps freed memory in per-thread arenas, so a node that has woken thousands of matches
would keep their peak in its RSS. The node limits the arenas at start and trims after
hibernations.

Python's collector makes a full pass over every tracked object once the objects promoted to its
oldest generation since the last full pass reach a quarter of those it kept then. Matches that
wake and hibernate promote objects steadily, so a node holding a thousand hibernated matches'
connections made a full pass every few seconds, each 20 to 110 ms long on the event loop (alarms
and wakes late by as much), and finding almost nothing to free. `Collector.settle`, called by the
node after hibernations, collects what is not frozen yet and freezes what survives
(`gc.freeze()`): later passes skip it, so they cost what was allocated since, not the whole heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_M_ARENA_MAX = -8


def _libc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim  # glibc has it; musl and others do not
        libc.mallopt
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def limit_arenas(count: int = 2) -> bool:
    """Cap glibc's malloc arenas (call before worker threads start)."""
    return bool(_LIBC is not None and _LIBC.mallopt(_M_ARENA_MAX, count))


def trim() -> bool:
    """Give the free memory at the top of every heap back to the system."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


FULL_COLLECTION_EVERY_S = 600.0


class Collector:
    """Freezes what survives a collection, so that full passes skip it (see the module's doc).

    A frozen object freed by reference counting is freed as usual, but a frozen object that becomes
    part of unreachable reference cycles is never collected while frozen. So `settle` collects
    before it freezes (only objects allocated since the last freeze are traversed), the
    server's own objects are freed without cycles (a closed connection, a hibernated match), and,
    for cycles made by anyone else (a game's state with back-references, a library), everything is
    unfrozen and collected in one full pass every `full_every_s` (the one long pause left).
    Time is an input (`now`, in seconds on any monotonic clock)."""

    def __init__(self, full_every_s: float = FULL_COLLECTION_EVERY_S):
        self.full_every_s = full_every_s
        self._last_full: float | None = None
        self.settled = 0  # calls to settle
        self.full_passes = 0  # of them, those that unfroze everything first

    def settle(self, now: float) -> None:
        if self._last_full is None:
            self._last_full = now  # the process collected and froze at start (`arbiter up`)
        elif now - self._last_full >= self.full_every_s:
            gc.unfreeze()
            self._last_full = now
            self.full_passes += 1
        gc.collect()
        gc.freeze()
        self.settled += 1
