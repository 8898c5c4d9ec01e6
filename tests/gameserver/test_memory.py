"""memory.Collector: after hibernations, collect, then freeze what survives; unfreeze and collect
everything every `full_every_s`, so that cycles made by objects frozen while alive are freed too."""

import gc
import weakref

import pytest
import trio
import trio.testing

from gameserver.config import NodeConfig
from gameserver.games import builtin_games
from gameserver.memory import Collector
from gameserver.node import Node as Node
from node_helpers import join, wall


class Loop:
    """Any object that can be in a reference cycle."""

    def __init__(self):
        self.other = self


@pytest.fixture(autouse=True)
def collector_state():
    gc.collect()
    gc.disable()  # no automatic pass may free what the test expects `settle` to free
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def frozen(obj) -> bool:
    """Whether `obj` is in the permanent generation (tracked, but in no collected generation)."""
    return gc.is_tracked(obj) and not any(o is obj for o in gc.get_objects())


def test_settle_frees_cyclic_garbage_first_and_freezes_what_survives():
    garbage, kept = Loop(), Loop()
    dead = weakref.ref(garbage)
    del garbage
    assert dead() is not None  # only a collection frees a cycle
    collector = Collector(full_every_s=600)
    collector.settle(now=0.0)
    assert dead() is None  # collected, not frozen for ever
    assert frozen(kept)


def test_cycles_of_objects_frozen_alive_are_freed_by_the_periodic_full_pass():
    collector = Collector(full_every_s=600)
    late = Loop()
    collector.settle(now=0.0)
    assert frozen(late)
    dead = weakref.ref(late)
    del late  # garbage now, but frozen: ordinary passes skip it
    collector.settle(now=599.0)
    assert dead() is not None and collector.full_passes == 0
    collector.settle(now=600.0)
    assert dead() is None and collector.full_passes == 1


def test_a_frozen_object_outside_cycles_is_freed_by_reference_counting():
    """Why the server's own objects must not be left in cycles, and why then freezing is safe."""

    class Leaf:
        pass

    collector = Collector(full_every_s=600)
    leaf = Leaf()
    collector.settle(now=0.0)
    assert frozen(leaf)
    dead = weakref.ref(leaf)
    del leaf
    assert dead() is None


async def test_a_node_asked_to_freeze_settles_after_hibernations(tmp_path, nursery, autojump_clock):
    node = Node(NodeConfig(data_dir=tmp_path, hibernate_after_s=10), builtin_games(), wall_clock=wall,
                 offload=False, freeze_gc=True)
    await nursery.start(node.run)
    match_id = (await node.create_match("connect_four", {})).match_id
    await join(node, match_id, "ann")
    await trio.sleep(10.5)
    assert match_id in node.hibernated and node.collector.settled == 0
    await trio.sleep(1)  # the node trims the heap 1 s after a hibernation, and settles first
    assert node.collector.settled == 1
    await node.shutdown()


def test_a_node_freezes_nothing_unless_asked(tmp_path):
    node = Node(NodeConfig(data_dir=tmp_path), builtin_games(), wall_clock=wall, offload=False)
    assert node.collector is None


def test_watch_freezes_what_survives_each_full_pass_on_the_loop():
    soon = []
    collector = Collector(full_every_s=600)
    collector.settle(now=0.0)
    collector.watch(soon.append, clock=lambda: 10.0)
    try:
        kept, garbage = Loop(), Loop()
        dead = weakref.ref(garbage)
        del garbage
        gc.collect()  # a full pass, as the collector makes when the old generation grew by a quarter
        assert dead() is None and len(soon) == 1 and not frozen(kept)  # the freeze waits for the loop
        gc.collect()
        assert len(soon) == 1  # one freeze pending at a time
        young = Loop()
        dead_young = weakref.ref(young)
        del young
        soon.pop()()  # the loop runs it
        assert frozen(kept) and collector.frozen_after_passes == 1 and collector.settled == 1
        assert dead_young() is None  # garbage made since the pass is collected, not frozen
        gc.collect()
        assert len(soon) == 1  # and the next pass asks again
    finally:
        collector.unwatch()
    soon.clear()
    gc.collect()
    assert soon == []


def test_watch_makes_the_periodic_full_pass_when_it_is_due():
    soon = []
    now = [0.0]
    collector = Collector(full_every_s=600)
    collector.settle(now=0.0)
    late = Loop()
    collector.settle(now=1.0)
    dead = weakref.ref(late)
    del late  # frozen garbage: only an unfreeze frees it
    collector.watch(soon.append, clock=lambda: now[0])
    try:
        now[0] = 600.0
        gc.collect()
        soon.pop()()
        assert dead() is None and collector.full_passes == 1 and collector.frozen_after_passes == 0
    finally:
        collector.unwatch()


def test_while_watching_the_collectors_own_full_passes_each_traverse_one_promotions_worth():
    """A full pass follows each collection of the middle generation (OLDEST_THRESHOLD), so it
    traverses about what that collection promoted, not ten collections' worth: short pauses."""
    soon = []
    young, middle, oldest = before = gc.get_threshold()
    collector = Collector(full_every_s=600)
    collector.settle(now=0.0)
    collector.watch(soon.append, clock=lambda: 1.0)
    traversed = []

    def measure(phase, info):
        if phase == "start" and info["generation"] == 2 and not collector._settling:
            traversed.append(len(gc.get_objects(generation=2)))

    gc.callbacks.insert(0, measure)
    gc.enable()
    try:
        assert gc.get_threshold() == (young, middle, 0)
        kept = []
        for _ in range(2_000):  # 200,000 long-lived objects, as players joining make
            kept.append([Loop() for _ in range(100)])
            while soon:
                soon.pop()()  # the loop runs the freezes
    finally:
        gc.disable()
        gc.callbacks.remove(measure)
        collector.unwatch()
    assert gc.get_threshold() == before
    assert len(traversed) >= 10 and collector.frozen_after_passes >= 10
    assert max(traversed) <= 2 * young * middle  # CPython's own thresholds: up to about 10 times as many


def test_a_watch_whose_loop_has_finished_asks_again_at_the_next_pass():
    asked = []

    def finished(fn):
        asked.append(fn)
        raise trio.RunFinishedError("the run is over")

    collector = Collector()
    collector.watch(finished, clock=lambda: 0.0)
    try:
        gc.collect()  # the error stays in the callback (the collector would print it)...
        gc.collect()  # ...and leaves no freeze pending for ever
        assert len(asked) == 2
    finally:
        collector.unwatch()


async def test_a_node_asked_to_freeze_freezes_after_the_collectors_full_passes(tmp_path, nursery, autojump_clock):
    node = Node(NodeConfig(data_dir=tmp_path), builtin_games(), wall_clock=wall, offload=False, freeze_gc=True)
    await nursery.start(node.run)
    kept = Loop()
    gc.collect()
    await trio.testing.wait_all_tasks_blocked()
    assert frozen(kept) and node.collector.settled == 1  # the first one is a settle (see Collector.settle)
    later = Loop()
    gc.collect()
    await trio.testing.wait_all_tasks_blocked()
    assert frozen(later) and node.collector.frozen_after_passes == 1
    await node.shutdown()
    nursery.cancel_scope.cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert node.collector._on_gc not in gc.callbacks
