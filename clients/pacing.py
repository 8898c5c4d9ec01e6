"""When a client may send its next input so that the server's input rate limit never refuses one.

The server limits each connection's inputs with a token bucket (`input_rate` a second, bursts of
`input_burst`, full when the connection opens; gameserver/session.py) and announces both in its
`welcome`. An input past the bucket is refused with `rate_limited` and not applied, and a later
input that is applied moves the acknowledgement past it: it can never be resent under its `seq`.
So a client must not rely on resending; it must never be refused. Pacing the sends alone is not
enough: the bucket is spent when the server *reads* an input, and inputs sent at a steady pace can
reach it bunched together (a network stall, a busy server, TCP retransmissions).

`InputPacer` keeps two limits, sans-IO (time is an argument):

- a token bucket of `b` tokens refilled at `r` a second: at most `b + r * t` sends in any `t` seconds;
- a window of `w` inputs in flight: sent on this connection and not yet answered (acknowledged, or
  refused with an error frame carrying their `seq`). An answer leaves the server after it has read
  the input.

With `b + w <= input_burst` and `r <= input_rate` the server never refuses an input, whatever the
delays: the inputs it reads between times `a` and `e` are those in flight at `a` (at most `w`:
none of them answered yet) and those sent between `a` and `e` (at most `b + r * (e - a)`), and its
bucket allows `input_burst + input_rate * (e - a)`. The shares below keep a margin: `r` is 90 % of
the rate, `w` 30 % of the burst and `b` 90 % of it less `w` (36 and 72 of the default 120). This
holds for a burst of 2 or more; the property is tested against the server's own bucket
(tests/clients/test_pacing.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The server's defaults (gameserver/session.py `Limits`), for a welcome without `limits`.
DEFAULT_INPUT_RATE = 60.0
DEFAULT_INPUT_BURST = 120.0
RATE_SHARE = 0.9  # of input_rate: the pacer's refill rate
WINDOW_SHARE = 0.3  # of input_burst: inputs in flight
BURST_SHARE = 0.9  # of input_burst: window and bucket together
TOLERANCE = 1e-9  # float rounding at exactly the rate, as the server's bucket tolerates


class InputPacer:
    __slots__ = ("rate", "burst", "window", "tokens", "stamp")

    def __init__(self, input_rate: float, input_burst: float, now: float):
        if not input_rate > 0 or not input_burst >= 1:
            raise ValueError("input_rate > 0 and input_burst >= 1")
        self.window = max(1, int(input_burst * WINDOW_SHARE))
        self.burst = max(1, int(input_burst * BURST_SHARE) - self.window)
        self.rate = input_rate * RATE_SHARE
        self.tokens = float(self.burst)
        self.stamp = now

    @classmethod
    def from_welcome(cls, limits: Mapping[str, Any] | None, now: float) -> InputPacer:
        """A pacer for the limits a welcome announced (the server's defaults if it announced none)."""
        limits = limits if isinstance(limits, Mapping) else {}
        rate, burst = limits.get("input_rate"), limits.get("input_burst")
        rate = float(rate) if isinstance(rate, (int, float)) and rate > 0 else DEFAULT_INPUT_RATE
        burst = float(burst) if isinstance(burst, (int, float)) and burst >= 1 else DEFAULT_INPUT_BURST
        return cls(rate, burst, now)

    def delay(self, now: float, in_flight: int) -> float | None:
        """0.0: send the next input now (then call `sent`); > 0: seconds until a token; None: the
        window is full, wait for an answer."""
        if in_flight >= self.window:
            return None
        self._refill(now)
        if self.tokens >= 1 - TOLERANCE:
            return 0.0
        return (1 - self.tokens) / self.rate

    def sent(self, now: float) -> None:
        self._refill(now)
        self.tokens -= 1

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
