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

Matches that start and players that connect promote objects too (their actors, sockets, sessions,
prepared statements: about 500 per arena match with 4 players). At 100 such matches the collector
made a full pass every 15 s or so, 13 to 20 ms each on this machine, and those pauses made ticks
late. `Collector.watch` freezes what survives each full pass the collector makes by itself, so the
next passes cost only what was promoted since.

How much is promoted before a full pass is the oldest generation's threshold: CPython considers a
full pass after every tenth collection of the middle generation, so up to ten of those
collections' survivors (about 55,000 objects when 400 players had joined: a 17 to 60 ms pass, and
ticks late by as much) waited for one pass. While it watches, the collector considers a full pass
after each collection of the middle generation (`OLDEST_THRESHOLD`): as many objects are traversed
in all, in passes about a tenth as long (1 to 4 ms at R = 100 in the arena bench).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from collections.abc import Callable

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


def configure_process() -> None:
    """What a server process sets before it opens a match file or starts a worker thread."""
    limit_arenas()
    sqlite_pages_on_demand()


_SQLITE_CONFIG_PAGECACHE = 7


def _loaded_sqlite():
    """The SQLite library that Python's sqlite3 module uses, when it is a shared library loaded in
    this process (Linux: read from /proc/self/maps) and reports the same version; else None (a
    statically linked SQLite cannot be configured from here)."""
    import sqlite3

    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/libsqlite3" in line}
    except OSError:
        return None
    if len(paths) != 1:
        return None
    try:
        lib = ctypes.CDLL(paths.pop())
        lib.sqlite3_libversion.restype = ctypes.c_char_p
        version = lib.sqlite3_libversion().decode()
    except (OSError, AttributeError):
        return None
    return lib if version == sqlite3.sqlite_version else None


def sqlite_pages_on_demand() -> bool:
    """Have SQLite allocate a connection's page cache a page at a time as it fills, instead of a block
    of 20 pages (about 90 KB) at its first read, which it keeps until the connection closes, whatever
    its cache size: the block is allocated before `PRAGMA cache_size` can apply, since that pragma
    reads the schema. With the match files' 32 KiB caches this is about 87 KB less per open match
    file (measured: 214 -> 127 KB) and no slower a commit. `SQLITE_CONFIG_PAGECACHE` with no buffer
    and 0 pages; Python's sqlite3 module has no call for it, so it is made through ctypes on the
    library the module uses. SQLite takes it only between `sqlite3_shutdown` and
    `sqlite3_initialize`, so call this before any connection opens; it does nothing (False) while
    SQLite holds memory, as it does for an open connection, or when it could not."""
    lib = _loaded_sqlite()
    if lib is None:
        return False
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    if lib.sqlite3_memory_used() != 0 or lib.sqlite3_shutdown() != 0:
        return False
    ok = lib.sqlite3_config(_SQLITE_CONFIG_PAGECACHE, ctypes.c_void_p(None), ctypes.c_int(0), ctypes.c_int(0)) == 0
    return lib.sqlite3_initialize() == 0 and ok


def trim() -> bool:
    """Give the free memory at the top of every heap back to the system."""
    return bool(_LIBC is not None and _LIBC.malloc_trim(0))


FULL_COLLECTION_EVERY_S = 600.0
OLDEST_THRESHOLD = 0  # while watching: a full pass may follow every collection of the middle generation


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
        self.frozen_after_passes = 0  # freezes after the collector's own full passes (`watch`)
        self._call_soon: Callable[[Callable[[], None]], None] | None = None
        self._clock: Callable[[], float] | None = None
        self._freeze_pending = False
        self._settling = False
        self._thresholds: tuple[int, int, int] | None = None  # the collector's own, while watching

    def settle(self, now: float) -> None:
        if self._last_full is None:
            self._last_full = now  # the process collected and froze at start (`arbiter up`)
        elif now - self._last_full >= self.full_every_s:
            gc.unfreeze()
            self._last_full = now
            self.full_passes += 1
        self._collect(2)
        gc.freeze()
        # A pass over nothing: CPython waits for a quarter of the last full pass's survivors to be
        # promoted before the next, and the frozen ones are no longer its to count.
        self._collect(2)
        self.settled += 1

    def _collect(self, generation: int) -> None:
        """A collection of our own, which `watch` does not answer with a freeze."""
        self._settling = True
        try:
            gc.collect(generation)
        finally:
            self._settling = False

    def watch(self, call_soon: Callable[[Callable[[], None]], None], clock: Callable[[], float]) -> None:
        """From now on, after each full pass (other than `settle`'s own), freeze what survived it.

        `call_soon(fn)` must run `fn` soon on the thread that owns the objects (the event loop), and
        may be called from any thread: a collection runs in whichever thread allocated last (trio's
        `TrioToken.run_sync_soon`). The freeze collects the young generations first, so that cyclic
        garbage made since the pass is freed rather than frozen; once `full_every_s` has passed since
        the last full unfreeze, it is a `settle` instead. Full passes come more often, each over
        fewer objects (`OLDEST_THRESHOLD`, see the module's doc). `unwatch` stops it."""
        self._call_soon, self._clock = call_soon, clock
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)
        if self._thresholds is None:
            self._thresholds = gc.get_threshold()
            young, middle, _oldest = self._thresholds
            gc.set_threshold(young, middle, OLDEST_THRESHOLD)

    def unwatch(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)
        self._call_soon = self._clock = None
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    def _on_gc(self, phase: str, info: dict) -> None:
        call_soon = self._call_soon
        if (phase != "stop" or info.get("generation") != 2 or self._settling or self._freeze_pending
                or call_soon is None):
            return
        self._freeze_pending = True
        try:
            call_soon(self._freeze_survivors)
        except Exception:  # the loop has finished: nothing to freeze for
            self._freeze_pending = False

    def _freeze_survivors(self) -> None:
        self._freeze_pending = False
        clock = self._clock
        if clock is None:
            return
        now = clock()
        if self._last_full is None or now - self._last_full >= self.full_every_s:
            self.settle(now)
            return
        self._collect(1)
        gc.freeze()
        self.frozen_after_passes += 1
