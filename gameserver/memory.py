"""Returning freed memory to the operating system (glibc only; elsewhere these do nothing).

Activating a match opens its SQLite file in a worker thread; hibernating it frees all of that,
but glibc keeps freed memory in per-thread arenas, so a node that has woken thousands of matches
would keep their peak in its RSS. The node limits the arenas at start and trims after
hibernations.
"""

from __future__ import annotations

import ctypes
import ctypes.util

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
