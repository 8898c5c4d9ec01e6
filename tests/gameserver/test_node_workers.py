"""Nodes as the workers of `arbiter up --workers N`: each owns the matches whose id hashes to it, in one
shared data directory, and a restart with any N finds every match exactly once. Also: a matchmade
match that left its lobby reads as running after a restart."""

import pytest
import trio

from gameserver import shards
from gameserver.config import NodeConfig
from gameserver.games.arena import Arena
from gameserver.ids import match_id_from_name
from gameserver.node import MatchNotFound, Node, WrongWorker
from node_helpers import join, wall


async def start_nodes(nursery, data_dir, workers):
    nodes = []
    for k in range(workers):
        node = Node(NodeConfig(data_dir=data_dir, workers=workers, worker=k), {"arena": Arena}, wall_clock=wall)
        await nursery.start(node.run)
        nodes.append(node)
    return nodes


async def stop_nodes(nodes, nursery):
    for node in nodes:
        await node.shutdown()
    nursery.cancel_scope.cancel()


async def test_each_worker_creates_scans_and_serves_only_its_own_matches(tmp_path):
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, tmp_path, 3)
        created = {k: [(await node.create_match("arena", {})).match_id for _ in range(4)]
                   for k, node in enumerate(nodes)}
        for k, ids in created.items():
            assert all(shards.owner(match_id, 3) == k for match_id in ids)
        mine, theirs = created[0][0], created[1][0]
        assert (await nodes[0].describe(mine))["match_id"] == mine
        with pytest.raises(WrongWorker):
            await nodes[0].describe(theirs)
        with pytest.raises(MatchNotFound):  # what a connection at the wrong worker's port gets: close 4004
            await nodes[0].actor(theirs)
        named = next(f"room-{i}" for i in range(100) if shards.owner(match_id_from_name(f"room-{i}"), 3) == 2)
        with pytest.raises(WrongWorker):
            await nodes[0].create_match("arena", {}, named)
        assert (await nodes[2].create_match("arena", {}, named)).match_id == match_id_from_name(named)
        created[2].append(match_id_from_name(named))
        await stop_nodes(nodes, nursery)

    async with trio.open_nursery() as nursery:  # a restart with the same N: each finds its own again
        nodes = await start_nodes(nursery, tmp_path, 3)
        for k, node in enumerate(nodes):
            assert set(node.unfinished) == set(created[k])
            assert {s.match_id for s in await node.listing()} == set(created[k])
        await stop_nodes(nodes, nursery)


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 1), (1, 2)])
async def test_a_restart_with_another_number_of_workers_finds_every_match_once(tmp_path, before, after):
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, tmp_path, before) if before > 1 else [
            await nursery.start(Node(NodeConfig(data_dir=tmp_path), {"arena": Arena}, wall_clock=wall).run)]
        ids = {(await node.create_match("arena", {})).match_id for node in nodes for _ in range(5)}
        await stop_nodes(nodes, nursery)
    async with trio.open_nursery() as nursery:
        nodes = await start_nodes(nursery, tmp_path, after) if after > 1 else [
            await nursery.start(Node(NodeConfig(data_dir=tmp_path), {"arena": Arena}, wall_clock=wall).run)]
        found = [set(node.unfinished) for node in nodes]
        assert set().union(*found) == ids and sum(len(f) for f in found) == len(ids)  # all, each once
        await stop_nodes(nodes, nursery)


def test_a_worker_outside_the_pool_is_a_bad_config(tmp_path):
    with pytest.raises(ValueError):
        NodeConfig(data_dir=tmp_path, workers=2, worker=2)


async def test_a_matchmade_match_that_started_reads_running_after_a_restart(tmp_path):
    async with trio.open_nursery() as nursery:
        node = await nursery.start(Node(NodeConfig(data_dir=tmp_path), {"arena": Arena}, wall_clock=wall).run)
        meta = await node.create_match("arena", {}, roster=["ann", "bob"], lobby_s=60)
        assert meta.status == "lobby"
        for player in ("ann", "bob"):
            await join(node, meta.match_id, player)
        actor = await node.actor(meta.match_id)
        with trio.fail_after(10):
            while actor.status != "running":
                await trio.sleep(0.01)
        tick = actor.sim.tick
        await node.shutdown()
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        node = await nursery.start(Node(NodeConfig(data_dir=tmp_path), {"arena": Arena}, wall_clock=wall).run)
        assert (await node.describe(meta.match_id))["status"] == "running"  # from the file, not loaded
        assert [s.status for s in await node.listing()] == ["running"]
        await join(node, meta.match_id, "ann")
        actor = await node.actor(meta.match_id)
        assert actor.status == "running"
        with trio.fail_after(10):  # and it ticks again
            while actor.sim.tick < tick + 3:
                await trio.sleep(0.01)
        await node.shutdown()
        nursery.cancel_scope.cancel()

