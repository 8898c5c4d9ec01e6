"""Matchmade matches: a roster of players, seats held until the lobby timeout, backfill reservations,
and the notices a node gives its listeners (MockClock, in-memory connections)."""

import pytest
import trio

from gameserver.actor import JoinRequest
from gameserver.config import NodeConfig
from gameserver.games.arena import Arena
from gameserver.node import MatchOver, Node
from gameserver.simulation import JOIN, RELEASE, RESERVE, TIMER, Command, Simulation
from gameserver.alarms import LOBBY
from node_helpers import connection, frames, join, wall


class BackfillArena(Arena):
    name = "backfill"
    backfill = True
    reconnect_grace_s = 5.0


@pytest.fixture
async def node(tmp_path, nursery, autojump_clock):
    node = Node(NodeConfig(data_dir=tmp_path, hibernate_after_s=float("inf")), {"arena": Arena, "backfill": BackfillArena},
                wall_clock=wall, offload=False)
    await nursery.start(node.run)
    yield node
    await node.shutdown()


def simulation(roster):
    return Simulation.new(Arena(), match_id="m", seed=1, params=Arena.params_type(), roster=roster)


def test_only_roster_players_take_seats_and_the_match_starts_when_all_have():
    sim = simulation(["ann", "bob", "cid"])
    assert not sim.started  # a roster match waits for its players even though arena has no lobby by default
    step = sim.step([Command(JOIN, "eve"), Command(JOIN, "ann"), Command(JOIN, "bob")])
    assert [r.code for r in step.rejected] == ["not_on_roster"] and sim.seated == ["ann", "bob"]
    assert not step.started
    assert sim.step([Command(JOIN, "cid")]).started  # three of four seats: the roster is complete


def test_at_the_lobby_timeout_a_roster_match_with_a_no_show_is_cancelled_naming_them():
    sim = simulation(["ann", "bob"])
    sim.step([Command(JOIN, "ann")])
    step = sim.step([Command(TIMER, "", 0, {"name": LOBBY})])
    assert step.status == "cancelled" and step.result.data == {"missing": ["bob"]}
    assert "bob" in step.result.reason


def test_reserve_and_release_change_the_roster_and_are_replayed_like_any_command():
    sim = simulation(["ann", "bob"])
    sim.step([Command(JOIN, "ann"), Command(JOIN, "bob")])
    sim.step([Command(RESERVE, "cid"), Command(RESERVE, "cid"), Command(JOIN, "cid")])
    assert sim.roster == ["ann", "bob", "cid"] and sim.seated == ["ann", "bob", "cid"]
    sim.step([Command(RESERVE, "dan"), Command(RELEASE, "dan"), Command(RELEASE, "ann")])  # ann is seated: kept
    assert sim.roster == ["ann", "bob", "cid"]
    assert [r.code for r in sim.step([Command(JOIN, "dan")]).rejected] == ["not_on_roster"]


def test_an_open_match_ignores_reservations():
    sim = Simulation.new(Arena(), match_id="m", seed=1, params=Arena.params_type())
    sim.step([Command(RESERVE, "ann")])
    assert sim.roster is None


async def test_a_roster_match_refuses_strangers_and_starts_when_the_roster_is_seated(node, autojump_clock):
    meta = await node.create_match("arena", roster=["ann", "bob"], lobby_s=10)
    assert meta.status == "lobby"
    stranger = connection(meta.match_id, "eve")
    assert await node.submit(meta.match_id, JoinRequest(stranger))
    await stranger.admitted.wait()
    assert stranger.admission_error is not None and "no seat" in stranger.admission_error[1]
    await join(node, meta.match_id, "ann")
    await join(node, meta.match_id, "bob")
    await trio.sleep(0.1)
    assert (await node.describe(meta.match_id))["status"] == "running"


async def test_a_no_show_cancels_the_match_and_the_listeners_hear_who_came(node, autojump_clock):
    notices = []
    node.listeners.append(notices.append)
    meta = await node.create_match("arena", roster=["ann", "bob"], lobby_s=10)
    ann = await join(node, meta.match_id, "ann")
    await trio.sleep(11)
    assert [(n.kind, n.status, n.seated) for n in notices] == [("finished", "cancelled", ("ann",))]
    assert "bob" in notices[0].reason
    end = [f for f in frames(ann) if f.get("kind") == "end"][-1]
    assert end["data"]["result"]["data"] == {"missing": ["bob"]}


async def test_backfill_reservation_lets_a_new_player_in_and_a_leave_is_told(node, autojump_clock):
    notices = []
    node.listeners.append(notices.append)
    meta = await node.create_match("backfill", roster=["ann", "bob"], lobby_s=10)
    await join(node, meta.match_id, "ann")
    bob = await join(node, meta.match_id, "bob")
    node.disconnected(meta.match_id, bob)
    await trio.sleep(6)  # past bob's reconnect grace: he leaves
    assert [(n.kind, n.seated, n.backfill) for n in notices] == [("started", ("ann", "bob"), True),
                                                                  ("left", ("ann",), True)]
    assert await node.change_roster(meta.match_id, ["cid"]) == ["ann", "bob", "cid"]
    await join(node, meta.match_id, "cid")
    assert (await node.actor(meta.match_id)).sim.seated == ["ann", "cid"]
    assert await node.change_roster(meta.match_id, ["dan"]) == ["ann", "bob", "cid", "dan"]
    assert await node.change_roster(meta.match_id, ["dan"], release=True) == ["ann", "bob", "cid"]


async def test_a_roster_survives_a_restart(tmp_path, autojump_clock):
    games = {"arena": Arena}
    async with trio.open_nursery() as nursery:
        first = Node(NodeConfig(data_dir=tmp_path, hibernate_after_s=float("inf")), games, wall_clock=wall,
                     offload=False)
        await nursery.start(first.run)
        meta = await first.create_match("arena", roster=["ann", "bob"], lobby_s=30)
        await join(first, meta.match_id, "ann")
        await first.change_roster(meta.match_id, ["cid"])
        await first.shutdown()
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        second = Node(NodeConfig(data_dir=tmp_path, hibernate_after_s=float("inf")), games, wall_clock=wall,
                      offload=False)
        await nursery.start(second.run)
        actor = await second.actor(meta.match_id)
        assert actor.sim.roster == ["ann", "bob", "cid"] and actor.sim.seated == ["ann"]
        await second.shutdown()
        nursery.cancel_scope.cancel()


async def test_a_finished_match_refuses_roster_changes(node, autojump_clock):
    meta = await node.create_match("arena", roster=["ann", "bob"], lobby_s=5)
    await trio.sleep(6)
    with pytest.raises(MatchOver):
        await node.change_roster(meta.match_id, ["cid"])


async def test_logged_inputs_are_read_as_ranges_beside_the_live_writer(node, autojump_clock):
    from gameserver.actor import InputMessage
    from gameserver.protocol import Input

    meta = await node.create_match("arena")
    ann = await join(node, meta.match_id, "ann")
    for seq in (1, 2, 3, 5, 6, 9):
        assert await node.submit(meta.match_id, InputMessage(ann, Input(seq, {"dx": 1, "dy": 0})))
        await trio.sleep(0.06)
    assert await node.logged_inputs(meta.match_id) == {"ann": [[1, 3], [5, 6], [9, 9]]}
    with pytest.raises(Exception):
        await node.logged_inputs("0" * 26)
