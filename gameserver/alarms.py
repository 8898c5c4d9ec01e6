"""Alarm arithmetic, sans-IO: which alarms are due, in what order, and when a failed one retries.

A match has any number of named alarms. Game code owns the primary alarm (`ALARM`) and its named
timers; the runtime owns the names under `RUNTIME_PREFIX` (lobby timeout, match length, empty
match, reconnect grace, retention). Each alarm has one due time (setting it again overwrites),
a retry count and, once its retries are exhausted, a failure record: a failed alarm is kept and
shown, never silently dropped. Time is always an argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import attrs

ALARM = "alarm"  # the primary alarm, as in Durable Objects' setAlarm()
RUNTIME_PREFIX = "arbiter:"
LOBBY = "arbiter:lobby"
END = "arbiter:end"
EMPTY = "arbiter:empty"
GRACE_PREFIX = "arbiter:grace:"
RETENTION = "arbiter:retention"
NAME_MAX = 64

RETRY_BASE_S = 1.5
RETRY_FACTOR = 2.0
RETRY_CAP_S = 300.0
RETRY_JITTER = 0.25


def is_runtime(name: str) -> bool:
    return name.startswith(RUNTIME_PREFIX)


def grace_name(player: str) -> str:
    return f"{GRACE_PREFIX}{player}"


def check_game_name(name: object) -> str:
    """A timer name game code may use: 1 to 64 characters, not under the runtime's prefix."""
    if not isinstance(name, str) or not 1 <= len(name) <= NAME_MAX:
        raise ValueError(f"a timer name is a string of 1 to {NAME_MAX} characters")
    if is_runtime(name):
        raise ValueError(f"timer names starting with {RUNTIME_PREFIX!r} are the runtime's")
    return name


def check_due(at: object) -> float:
    if isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
        raise ValueError("a due time is a finite number of seconds (ctx.now + delay)")
    return float(at)


@attrs.frozen
class Alarm:
    name: str
    due: float
    retries: int = 0  # failed attempts so far; the handler is told this count
    failed: bool = False  # retries exhausted: kept for people to see, no longer scheduled
    last_error: str | None = None


def retry_delay(retries: int, unit: float) -> float:
    """The wait before attempt `retries + 1`: exponential from RETRY_BASE_S, capped, with +-25 %
    jitter. `unit` is a number in [0, 1) from the caller's random source."""
    base = min(RETRY_CAP_S, RETRY_BASE_S * RETRY_FACTOR ** max(retries - 1, 0))
    return base * (1 - RETRY_JITTER + 2 * RETRY_JITTER * unit)


def failed_attempt(alarm: Alarm, now: float, error: str, max_retries: int, unit: float) -> Alarm:
    """The alarm after its handler raised at `now`: rescheduled, or failed for good."""
    retries = alarm.retries + 1
    if retries > max_retries:
        return attrs.evolve(alarm, retries=retries, failed=True, last_error=error[:500])
    return attrs.evolve(alarm, due=now + retry_delay(retries, unit), retries=retries, last_error=error[:500])


def due(alarms: Iterable[Alarm], now: float) -> list[Alarm]:
    """The alarms due at `now`, earliest first (ties by name), failed ones never."""
    return sorted((a for a in alarms if not a.failed and a.due <= now), key=lambda a: (a.due, a.name))


def earliest(alarms: Iterable[Alarm]) -> float | None:
    """The next due time among alarms still scheduled, or None."""
    times = [a.due for a in alarms if not a.failed]
    return min(times) if times else None
