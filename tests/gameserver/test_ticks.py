from hypothesis import given, strategies as st

from gameserver.ticks import Schedule


def test_deadlines_are_absolute():
    schedule = Schedule.starting(100.0, 20)
    deadlines = []
    for _ in range(1000):
        deadlines.append(schedule.deadline())
        assert schedule.advance(schedule.deadline() + 0.001) == 0
    assert deadlines[0] == 100.05
    assert abs(deadlines[-1] - (100.0 + 1000 * 0.05)) < 1e-9  # no accumulated drift


def test_a_stall_skips_to_the_next_future_deadline():
    schedule = Schedule.starting(0.0, 10)  # first deadline 0.1
    skipped = schedule.advance(1.05)  # the tick due at 0.1 finished at 1.05
    assert skipped == 9
    assert schedule.deadline() > 1.05
    assert round(schedule.deadline(), 9) == 1.1


@given(st.integers(1, 120), st.floats(0, 10))
def test_small_delays_never_skip(rate, fraction):
    schedule = Schedule.starting(0.0, rate)
    late_by = schedule.period * min(fraction, 2.0) * 0.99
    assert schedule.advance(schedule.deadline() + late_by) == 0
