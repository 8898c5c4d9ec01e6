"""The input pacer against the server's own token bucket: whatever the network does to the
timing, an input sent when the pacer allows it is never refused (clients/pacing.py)."""

from __future__ import annotations

import math
from collections.abc import Callable

from hypothesis import given, settings
from hypothesis import strategies as st

from clients.pacing import DEFAULT_INPUT_BURST, DEFAULT_INPUT_RATE, InputPacer
from gameserver.ratelimit import TokenBucket
from gameserver.session import Limits


def play(pacer: InputPacer, start: float, wanted: list[float], arrives: Callable[[int, float], float],
         back: list[float]) -> list[float]:
    """Send one input per entry of `wanted` (when the client wants it, relative to `start`), as soon
    as the pacer allows. Input i sent at t reaches the server at `arrives(i, t)`, read in order (TCP);
    its answer reaches the client `back[i]` after the server read it (in order too).
    Returns the server's read times."""
    read: list[float] = []
    answered: list[float] = []
    t = start
    for i, offset in enumerate(wanted):
        t = max(t, start + offset)
        while True:
            pending = [q for q in answered if q > t]  # sent, and no answer yet at t
            delay = pacer.delay(t, len(pending))
            if delay is None:
                t = min(pending)  # wait for the next answer
            elif delay > 0:
                t += delay
            else:
                break
        pacer.sent(t)
        read.append(max(read[-1] if read else 0.0, arrives(i, t)))
        answered.append(max(answered[-1] if answered else 0.0, read[-1] + back[i]))
    return read


delays = st.floats(min_value=0.0, max_value=3.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=200.0),
    burst=st.one_of(st.integers(min_value=2, max_value=300).map(float), st.floats(min_value=2.0, max_value=300.0)),
    start=st.floats(min_value=0.0, max_value=5.0),
    data=st.data(),
)
def test_the_server_never_refuses_a_paced_input(rate, burst, start, data):
    n = data.draw(st.integers(min_value=1, max_value=250))
    wanted = sorted(data.draw(st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=n, max_size=n)))
    forward = data.draw(st.lists(delays, min_size=n, max_size=n))
    back = data.draw(st.lists(delays, min_size=n, max_size=n))
    pacer = InputPacer(rate, burst, start)
    assert pacer.burst + pacer.window <= burst
    read = play(pacer, start, wanted, lambda i, t: t + forward[i], back)
    server = TokenBucket(rate, burst, 0.0)  # full from the connection's start, before the welcome
    refused = [i for i, at in enumerate(read) if not server.take(at)]
    assert refused == []


def stalled_resend(pacer: InputPacer) -> list[int]:
    """300 inputs queued during a drop, resent as the pacer allows; the server does not read the
    first 1.5 s (busy), then catches up at once. Which inputs it refuses."""
    read = play(pacer, 0.0, [0.0] * 300, lambda i, t: max(1.5, t + 0.001), [0.05] * 300)
    server = TokenBucket(DEFAULT_INPUT_RATE, DEFAULT_INPUT_BURST, 0.0)
    return [i for i, at in enumerate(read) if not server.take(at)]


def test_a_stall_bunches_paced_sends_the_window_keeps_them_within_the_burst():
    assert stalled_resend(InputPacer(DEFAULT_INPUT_RATE, DEFAULT_INPUT_BURST, 0.0)) == []
    rate_only = InputPacer(DEFAULT_INPUT_RATE, DEFAULT_INPUT_BURST, 0.0)
    rate_only.window = math.inf  # the token bucket alone: sends are paced, yet arrive bunched
    assert stalled_resend(rate_only) != []


def test_the_pacer_follows_the_announced_limits_and_falls_back_on_the_defaults():
    pacer = InputPacer.from_welcome({"input_rate": 60, "input_burst": 120}, 0.0)
    assert (pacer.rate, pacer.burst, pacer.window) == (54.0, 72, 36)
    assert pacer.burst + pacer.window <= Limits().input_burst
    small = InputPacer.from_welcome({"input_rate": 5.0, "input_burst": 2}, 0.0)
    assert (small.burst, small.window) == (1, 1)
    for limits in (None, {}, {"input_rate": "fast", "input_burst": -1}, [1, 2]):
        default = InputPacer.from_welcome(limits, 0.0)
        assert (default.rate, default.burst, default.window) == (54.0, 72, 36)
    assert Limits().input_rate == DEFAULT_INPUT_RATE and Limits().input_burst == DEFAULT_INPUT_BURST


def test_delays_say_when_a_token_comes_and_none_while_the_window_is_full():
    pacer = InputPacer(10.0, 10.0, 0.0)  # rate 9/s, 6 tokens, window 3
    assert (pacer.burst, pacer.window) == (6, 3)
    for _ in range(6):
        assert pacer.delay(0.0, 0) == 0.0
        pacer.sent(0.0)
    assert math.isclose(pacer.delay(0.0, 0), 1 / 9)
    assert pacer.delay(1 / 9, 0) == 0.0
    assert pacer.delay(100.0, 3) is None
    assert pacer.delay(100.0, 2) == 0.0
