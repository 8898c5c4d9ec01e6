"""stalls: a stall of the event loop is reported once, with the stack of what ran, and its length
when the loop polls again; an idle loop (waiting in its poll) is never stalled."""

import logging
import threading
import time

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from gameserver.config import NodeConfig
from gameserver.games.arena import Arena
from gameserver.node import Node
from gameserver.stalls import StallClock, StallWatch


def test_a_stall_is_reported_once_when_it_passes_the_threshold_and_its_length_when_the_loop_polls():
    clock = StallClock(threshold_s=0.1)
    assert clock.check(now=10.05, polled_at=10.0, waiting=False) is None  # 50 ms: not yet
    assert clock.check(now=10.12, polled_at=10.0, waiting=False) == ("began", pytest.approx(0.12))
    assert clock.check(now=10.5, polled_at=10.0, waiting=False) is None  # reported once
    assert clock.check(now=10.71, polled_at=10.7, waiting=False) == ("ended", 10.7 - 10.0)
    assert clock.check(now=10.75, polled_at=10.7, waiting=False) is None


def test_an_idle_loop_waiting_in_its_poll_is_not_stalled():
    clock = StallClock(threshold_s=0.1)
    assert clock.check(now=100.0, polled_at=10.0, waiting=True) is None
    assert clock.check(now=100.01, polled_at=100.0, waiting=False) is None


@given(st.lists(st.tuples(st.floats(0.0, 0.5), st.booleans(), st.booleans()), max_size=60))
def test_every_reported_stall_began_past_the_threshold_and_ended_with_a_later_poll(steps):
    """Steps: (time passing, whether the loop polls, whether it is in its poll at the check)."""
    threshold = 0.1
    clock = StallClock(threshold)
    now = polled_at = 0.0
    open_since = None
    for elapsed, polls, waiting in steps:
        now += elapsed
        if polls:
            polled_at = now
        in_poll = waiting and not polls
        event = clock.check(now, polled_at, in_poll)
        if event is None:  # nothing missed: no stall left unreported, no ended one left open
            assert open_since is None or polled_at == open_since
            assert open_since is not None or in_poll or now - polled_at < threshold
            continue
        kind, seconds = event
        if kind == "began":
            assert open_since is None and not in_poll and seconds >= threshold
            assert seconds == now - polled_at
            open_since = polled_at
        else:
            assert open_since is not None and polls and seconds == polled_at - open_since
            open_since = None


def test_the_watch_logs_what_blocked_the_loop_and_ignores_an_idle_one(caplog):
    lengths = []

    def a_game_hook_that_blocks():
        time.sleep(0.3)  # (the stall under test, not a wait for something)

    async def main():
        watch = StallWatch(threshold_s=0.1, on_stall=lengths.append, check_s=0.005)
        watch.start()
        try:
            await trio.sleep(0.3)  # idle: in the poll
            a_game_hook_that_blocks()
            await trio.sleep(0)  # the loop polls again
            await trio.sleep(0.05)
        finally:
            watch.stop()

    with caplog.at_level(logging.WARNING, logger="arbiter.stalls"):
        trio.run(main)
    began = [r.getMessage() for r in caplog.records if "has not polled" in r.getMessage()]
    assert len(began) == 1 and "a_game_hook_that_blocks" in began[0]
    assert len(lengths) == 1 and 0.3 <= lengths[0] < 0.6


def test_a_node_asked_to_watch_counts_stalls_in_its_metrics_and_stops_watching_with_it(tmp_path):
    async def main():
        node = Node(NodeConfig(data_dir=tmp_path, stall_log_s=0.05), {"arena": Arena}, watch_stalls=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(node.run)
            time.sleep(0.2)  # (the stall under test)
            await trio.sleep(0.1)  # the loop polls again, and the watch sees it
            await node.shutdown()
            nursery.cancel_scope.cancel()
        return node

    node = trio.run(main)
    assert node.metrics.registry.get_sample_value("arbiter_loop_stall_seconds_count") == 1
    assert node.metrics.registry.get_sample_value("arbiter_loop_stall_seconds_sum") >= 0.2
    assert not any(t.name == "arbiter stall watch" for t in threading.enumerate())


def test_a_node_not_asked_to_watch_or_with_the_threshold_at_zero_starts_no_watch(tmp_path):
    assert Node(NodeConfig(data_dir=tmp_path), {"arena": Arena})._stall_watch is None
    assert Node(NodeConfig(data_dir=tmp_path, stall_log_s=0), {"arena": Arena}, watch_stalls=True)._stall_watch is None
