"""Stalls of the event loop, logged with what was running.

One process runs every match of a node on one trio loop, so a game hook, a library call or a
collector pass that runs for 100 ms holds every match for 100 ms. `arbiter_tick_lateness_seconds`
shows that ticks were late; this shows why. A trio instrument notes when the loop goes into its
poll for I/O and when it comes back (`before_io_wait`, `after_io_wait`: once each per pass of the
loop, about 1 us each, 0.3 % of a core at R = 100). A daemon thread looks every quarter of the
threshold: when the loop has not come back from a poll for `threshold_s` and is not in one, it
logs a warning with the main thread's Python stack at that moment (the thread gets the GIL within
the interpreter's switch interval, 5 ms, even from a loop that never releases it). When the loop
polls again, the stall's length goes to `arbiter_loop_stall_seconds`. `StallClock` is the
decision, with time as an input.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable

import trio

log = logging.getLogger("arbiter.stalls")


def check_every(threshold_s: float) -> float:
    """How often the thread looks: a quarter of the threshold, from 5 to 50 ms (each look takes the
    GIL from the loop for a moment)."""
    return min(0.05, max(0.005, threshold_s / 4))


class StallClock:
    """When a stall begins (reported once) and ends. `polled_at`: when the loop last came back from
    its I/O poll; `waiting`: whether it is in the poll now (an idle loop is not stalled)."""

    def __init__(self, threshold_s: float):
        self.threshold_s = threshold_s
        self._stalled_since: float | None = None  # the `polled_at` of the stall reported

    def check(self, now: float, polled_at: float, waiting: bool) -> tuple[str, float] | None:
        """("began", how long so far), ("ended", its length: from the poll before it to the one
        after it), or None."""
        since = self._stalled_since
        if since is not None and polled_at != since:
            self._stalled_since = None
            return "ended", polled_at - since
        if since is None and not waiting and now - polled_at >= self.threshold_s:
            self._stalled_since = polled_at
            return "began", now - polled_at
        return None


class _Polls(trio.abc.Instrument):
    def __init__(self) -> None:
        self.at = time.monotonic()
        self.waiting = False

    def before_io_wait(self, timeout: float) -> None:
        self.waiting = True

    def after_io_wait(self, timeout: float) -> None:
        self.at = time.monotonic()
        self.waiting = False


class StallWatch:
    """Watch this trio run's loop from a thread (`start`, then `stop`). `on_stall(seconds)` is told
    each stall's length, from the watching thread."""

    def __init__(self, threshold_s: float, on_stall: Callable[[float], None] | None = None,
                 check_s: float | None = None):
        self.clock = StallClock(threshold_s)
        self.check_s = check_every(threshold_s) if check_s is None else check_s
        self.on_stall = on_stall or (lambda _seconds: None)
        self._polls = _Polls()
        self._main = 0  # the loop's thread (`start`)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="arbiter stall watch", daemon=True)

    def start(self) -> None:
        """From the loop's own thread, inside the trio run."""
        self._main = threading.get_ident()
        trio.lowlevel.add_instrument(self._polls)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        try:
            trio.lowlevel.remove_instrument(self._polls)
        except (KeyError, RuntimeError):  # (removed already, or the run is over)
            pass
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        polls = self._polls
        stopped = False
        while not stopped:
            stopped = self._stopped.wait(self.check_s)  # (and one last look: a stall that just ended)
            # `waiting` read on both sides of `at`: the loop may go into or come out of its poll
            # between two reads (the interpreter can switch threads there)
            waiting = polls.waiting
            polled_at = polls.at
            waiting = waiting or polls.waiting
            event = self.clock.check(time.monotonic(), polled_at, waiting)
            if event is not None and event[0] == "began":
                frame = sys._current_frames().get(self._main)
                stack = "".join(traceback.format_stack(frame, limit=30)) if frame is not None else "(no frame)\n"
                log.warning("the event loop has not polled for I/O for %.0f ms (every match of this "
                            "process waits); it is running:\n%s", event[1] * 1000, stack.rstrip())
                del frame  # (a frame keeps its locals alive)
            elif event is not None:
                log.warning("the event loop stalled for %.0f ms", event[1] * 1000)
                self.on_stall(event[1])
