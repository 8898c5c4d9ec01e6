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


@given(now=st.floats(0, 1e6), rate=st.sampled_from([10, 20, 25, 40, 50, 100]), data=st.data())
def test_a_schedule_starts_in_the_least_loaded_slot_soonest(now, rate, data):
    """(Rates whose period is a whole number of slots, as the metronome's load assumes.)"""
    slot = 0.005
    load = data.draw(st.lists(st.integers(0, 5), min_size=round(1 / rate / slot), max_size=round(1 / rate / slot)))
    plain = Schedule.starting(now, rate, slot)
    spread = Schedule.starting(now, rate, slot, load)
    start = spread.deadline()
    steps = round((start - plain.deadline()) / slot)
    assert 0 <= steps < len(load) and abs(start - plain.deadline() - steps * slot) < 1e-6  # on the grid, soon
    slots = len(load)
    index = lambda t: round((t % plain.period) / slot) % slots  # noqa: E731
    assert load[index(start)] == min(load)  # the least loaded slot...
    for earlier in range(steps):  # ...and no sooner one is as little loaded
        assert load[index(plain.deadline() + earlier * slot)] > min(load)


def test_without_load_the_first_deadline_is_as_before():
    assert Schedule.starting(100.0123, 20, 0.005, ()).deadline() == Schedule.starting(100.0123, 20, 0.005).deadline()
    assert abs(Schedule.starting(100.0123, 20, 0.005, [0] * 10).deadline() - 100.065) < 1e-9  # all equal: soonest
