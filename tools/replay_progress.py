"""A progress line for long replay runs: on stderr, only when it is a terminal, at most 5 times a second."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int, stream: TextIO | None = None, *, enabled: bool | None = None,
                 interval_s: float = 0.2):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _is_terminal(self.stream) if enabled is None else enabled
        self.label = label
        self.total = max(total, 1)
        self.interval_s = interval_s
        self.started = time.monotonic()
        self._last = self.started
        self._width = 0

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.interval_s:
            return
        self._last = now
        rate = done / max(now - self.started, 1e-9)
        line = (f"{self.label}: tick {done:,} of {self.total:,} ({100 * done / self.total:.0f} %), "
                f"{rate:,.0f} ticks/s")
        self.stream.write("\r" + line.ljust(self._width))
        self.stream.flush()
        self._width = len(line)

    def close(self) -> None:
        """Erase the line, so that what follows starts clean."""
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False
