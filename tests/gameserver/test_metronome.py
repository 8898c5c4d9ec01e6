"""The node-wide tick timer (gameserver/metronome.py), under MockClock."""

import trio
import trio.testing

from gameserver.metronome import Metronome, current
from gameserver.ticks import Schedule


async def test_parked_tasks_wake_at_their_deadlines_in_order(autojump_clock):
    metronome = current()
    assert current() is metronome  # one per trio run
    woke: list[tuple[str, float]] = []

    async def sleeper(name, deadline):
        await metronome.sleep_until(deadline)
        woke.append((name, trio.current_time()))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for name, delay in [("c", 0.3), ("a", 0.1), ("b", 0.2), ("a2", 0.1), ("past", -1.0)]:
            nursery.start_soon(sleeper, name, start + delay)
    names = [name for name, _ in woke]  # a and a2 share a deadline: either may go first (trio's order)
    assert names[0] == "past" and set(names[1:3]) == {"a", "a2"} and names[3:] == ["b", "c"]
    for name, at in woke:
        expected = {"past": 0.0, "a": 0.1, "a2": 0.1, "b": 0.2, "c": 0.3}[name]
        assert abs((at - start) - expected) < 1e-9, (name, at - start)


async def test_a_parked_task_can_be_woken_early_or_cancelled(autojump_clock):
    metronome = current()
    entries = []
    start = trio.current_time()
    woke_at = []

    async def sleeper():
        await metronome.sleep_until(start + 100, entries.append)
        woke_at.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sleeper)
        await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(1)
        Metronome.wake(entries[0])
        Metronome.wake(entries[0])  # a second wake does nothing
    assert woke_at == [1.0]

    with trio.move_on_after(2) as scope:
        await metronome.sleep_until(trio.current_time() + 50)
    assert scope.cancelled_caught
    # the cancelled entry stays in the heap until its time, and is skipped: a later sleeper still wakes
    before = trio.current_time()
    await metronome.sleep_until(before + 60)
    assert trio.current_time() - before == 60


def test_schedules_start_on_the_slot_grid():
    schedule = Schedule.starting(100.0123, 20, slot=0.005)
    assert abs(schedule.deadline() - 100.065) < 1e-9
    schedule.advance(100.066)
    assert abs(schedule.deadline() - 100.115) < 1e-9
    assert Schedule.starting(100.0123, 20).deadline() == 100.0123 + 0.05


async def test_matches_that_start_together_tick_in_different_slots(autojump_clock):
    """Each new schedule takes the slot of the period that the metronome's parked matches use least
    (Metronome.load): 40 matches started at the same instant end up 4 to a slot, not 40 in one."""
    metronome = current()
    period, slot = 0.05, 0.005
    deadlines = []

    async def match():
        schedule = Schedule.starting(trio.current_time(), 20, slot, metronome.load(period, slot))
        deadlines.append(schedule.deadline())
        for _ in range(3):
            await metronome.sleep_until(schedule.deadline())
            schedule.advance(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(40):
            nursery.start_soon(match)
            await trio.testing.wait_all_tasks_blocked()  # parked before the next one starts
        assert metronome.load(period, slot) == [4] * 10
    assert len({round(d, 6) for d in deadlines}) == 10
