"""Alarm arithmetic, without a clock: order, overwrite, retry schedule, failure."""

import pytest
from hypothesis import given, strategies as st

from gameserver import alarms
from gameserver.alarms import Alarm

names = st.text("abcdefgh", min_size=1, max_size=4)
times = st.floats(0, 1e6, allow_nan=False)


@given(st.dictionaries(names, times, max_size=20), times)
def test_due_is_every_alarm_at_or_before_now_in_order(table, now):
    entries = [Alarm(name, due) for name, due in table.items()]
    fired = alarms.due(entries, now)
    assert [a.name for a in fired] == [name for name, due in sorted(table.items(), key=lambda kv: (kv[1], kv[0]))
                                       if due <= now]
    later = [due for due in table.values() if due > now]
    assert alarms.earliest([a for a in entries if a.due > now]) == (min(later) if later else None)


@given(st.lists(st.tuples(names, times), min_size=1, max_size=30))
def test_setting_again_overwrites(writes):
    table: dict[str, float] = {}
    for name, due in writes:
        table[name] = due  # what Context._write and Actor._set_alarm do: one due time per name
    assert alarms.earliest(Alarm(n, d) for n, d in table.items()) == min(table.values())


@given(st.integers(1, 30), st.floats(0, 0.999999))
def test_retry_delays_grow_from_about_1_5_s_with_jitter_and_a_cap(retries, unit):
    delay = alarms.retry_delay(retries, unit)
    base = min(alarms.RETRY_CAP_S, alarms.RETRY_BASE_S * 2 ** (retries - 1))
    assert base * 0.75 <= delay <= base * 1.25
    assert delay <= alarms.RETRY_CAP_S * 1.25
    if retries == 1:
        assert 1.0 < delay < 2.0


def test_a_failing_alarm_is_rescheduled_then_failed_for_good():
    alarm = Alarm("turn", 100.0)
    seen = []
    for attempt in range(1, 5):
        alarm = alarms.failed_attempt(alarm, 100.0 + attempt, "boom", max_retries=3, unit=0.5)
        seen.append((alarm.retries, alarm.failed))
    assert seen == [(1, False), (2, False), (3, False), (4, True)]
    assert alarm.last_error == "boom"
    assert alarms.due([alarm], 1e9) == [] and alarms.earliest([alarm]) is None  # kept, never scheduled


def test_failed_alarms_stay_out_of_order_but_others_do_not():
    kept = Alarm("a", 1.0, failed=True)
    live = Alarm("b", 2.0)
    assert alarms.due([kept, live], 5.0) == [live]


@pytest.mark.parametrize("name", ["", "x" * 65, "arbiter:lobby", 3, None])
def test_game_timer_names_are_checked(name):
    with pytest.raises(ValueError):
        alarms.check_game_name(name)


@pytest.mark.parametrize("at", [float("nan"), float("inf"), "soon", True, None])
def test_due_times_are_checked(at):
    with pytest.raises(ValueError):
        alarms.check_due(at)
