"""The match file's `connections` table: written row by row (a join or a leave costs the same with one
or hundreds of connections open), and after hibernation, a wake or a restart it lists exactly the
open connections with their attachments."""

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gameserver import storage
from gameserver.actor import JoinRequest
from gameserver.config import NodeConfig
from gameserver.connection import Connection
from gameserver.games.arena import Arena, Params
from gameserver.games.connect_four import ConnectFour
from gameserver.node import Node
from gameserver.recovery import create_match_file
from gameserver.storage import MatchStore
from node_helpers import wall

MATCH = "0" * 26


@pytest.fixture
def store(tmp_path):
    path = storage.match_path(tmp_path, MATCH)
    create_match_file(path, Arena(), match_id=MATCH, params=Params(), seed=7, snapshot_every=10, now=1000.0)
    store = MatchStore.open(path)
    yield store
    store.close()


def row(conn_id, player="p", role="spectator", attachment=None):
    return (conn_id, player, role, attachment, 1000.0 + conn_id)


def test_rows_are_added_and_removed_by_conn_id(store):
    store.write_alarms([], None, connections_added=[row(1, "ann", "player", {"v": 1}), row(2), row(3)])
    store.write_alarms([], None, connections_removed=[2], connections_added=[row(4, "bob", attachment=[1, 2])])
    assert store.connections() == [row(1, "ann", "player", {"v": 1}), row(3), row(4, "bob", attachment=[1, 2])]
    # a row added again under its id replaces it; removing an id that is not there changes nothing
    store.write_alarms([], None, connections_added=[row(3, "cy")], connections_removed=[99])
    assert store.connections() == [row(1, "ann", "player", {"v": 1}), row(3, "cy"), row(4, "bob", attachment=[1, 2])]
    store.write_alarms([], None)  # alarms only: the table stays
    assert len(store.connections()) == 3


def test_a_join_writes_one_row_whatever_the_table_holds(store):
    store.write_alarms([], None, connections_added=[row(i) for i in range(1, 501)])
    before = store.conn.total_changes
    store.write_alarms([], None, connections_added=[row(501)])
    joined = store.conn.total_changes - before
    store.write_alarms([], None, connections_removed=[7])
    left = store.conn.total_changes - before - joined
    assert joined <= 2 and left <= 2  # the row, and the match's next alarm
    assert len(store.connections()) == 500


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.lists(st.integers(1, 12), max_size=4), st.lists(st.integers(1, 12), max_size=4),
                          st.integers(0, 3)), max_size=12))
def test_the_table_is_the_model_after_any_sequence_of_writes(store, batches):
    store.conn.execute("DELETE FROM connections")
    model: dict[int, tuple] = {}
    for added, removed, version in batches:
        removed = [i for i in removed if i not in added]  # one id is added or removed in a batch, as the actor does
        rows = [row(i, attachment={"v": version}) for i in dict.fromkeys(added)]
        store.write_alarms([], None, connections_added=rows, connections_removed=removed)
        for i in removed:
            model.pop(i, None)
        model.update((r[0], r) for r in rows)
    assert store.connections() == [model[i] for i in sorted(model)]


# -- through a node ---------------------------------------------------------------------------


def spectator(match_id, name, attachment=None):
    return Connection(match_id=match_id, player=name, role="spectator", fmt="json", resume_tick=None,
                      max_frames=1000, attachment=attachment, connected_at=wall())


async def watch(node, match_id, name, attachment=None):
    conn = spectator(match_id, name, attachment)
    assert await node.submit(match_id, JoinRequest(conn))
    await conn.admitted.wait()
    assert conn.admission_error is None, conn.admission_error
    return conn


def recorded(tmp_path, match_id):
    store = MatchStore.open(storage.match_path(tmp_path, match_id), read_only=True)
    try:
        return {(p, r, str(a)) for _i, p, r, a, _at in store.connections()}
    finally:
        store.close()


def expected(conns):
    return {(c.player, c.role, str(c.attachment)) for c in conns}


async def test_joins_cost_the_same_with_many_spectators_and_the_table_survives_hibernation_and_restart(
        tmp_path, autojump_clock):
    config = NodeConfig(data_dir=tmp_path, hibernate_after_s=10, max_spectators=1000)
    async with trio.open_nursery() as nursery:
        node = Node(config, {"connect_four": ConnectFour}, wall_clock=wall, offload=False)
        await nursery.start(node.run)
        match_id = (await node.create_match("connect_four")).match_id
        conns = [await watch(node, match_id, f"fan{i}", {"seat": i}) for i in range(150)]
        actor = node.actors[match_id]
        changes = []
        for i in range(150, 153):
            before = actor.store.conn.total_changes
            conns.append(await watch(node, match_id, f"fan{i}", {"seat": i}))
            changes.append(actor.store.conn.total_changes - before)
        # the join's step (its checksum, the match row) and one row of `connections`: not 150 rows
        # rewritten (the whole table deleted and inserted again was 2 x 151 changes)
        assert max(changes) < 10, changes
        before = actor.store.conn.total_changes
        node.disconnected(match_id, conns.pop(3))
        await trio.sleep(0.01)
        assert actor.store.conn.total_changes - before < 10
        assert recorded(tmp_path, match_id) == expected(conns)

        await trio.sleep(11)  # hibernates: the node holds the connections
        assert match_id in node.hibernated and match_id not in node.actors
        assert recorded(tmp_path, match_id) == expected(conns)
        gone = conns.pop(0)
        node.disconnected(match_id, gone)  # closed while hibernated: wakes the match, which drops its row
        conns.append(await watch(node, match_id, "late", ["a", 1]))
        assert match_id in node.actors
        assert recorded(tmp_path, match_id) == expected(conns)
        await trio.sleep(11)  # hibernates again; then a restart: every connection was closed (1001)
        assert match_id in node.hibernated
        await node.shutdown()
        nursery.cancel_scope.cancel()
    assert recorded(tmp_path, match_id) == expected(conns)
    async with trio.open_nursery() as nursery:
        node = Node(config, {"connect_four": ConnectFour}, wall_clock=wall, offload=False)
        await nursery.start(node.run)
        again = await watch(node, match_id, "back", {"after": "restart"})
        assert recorded(tmp_path, match_id) == expected([again])  # the rows of the last run are gone
        await node.shutdown()
        nursery.cancel_scope.cancel()


async def test_spectators_kept_through_hibernation_count_toward_the_cap(tmp_path, autojump_clock):
    config = NodeConfig(data_dir=tmp_path, hibernate_after_s=10, max_spectators=2)
    async with trio.open_nursery() as nursery:
        node = Node(config, {"connect_four": ConnectFour}, wall_clock=wall, offload=False)
        await nursery.start(node.run)
        match_id = (await node.create_match("connect_four")).match_id
        first = await watch(node, match_id, "fan0")
        await watch(node, match_id, "fan1")
        await trio.sleep(11)
        assert match_id in node.hibernated and match_id not in node.actors
        late = spectator(match_id, "fan2")
        assert await node.submit(match_id, JoinRequest(late))  # wakes the match, which adopts both
        await late.admitted.wait()
        assert late.admission_error == (1013, "the match has 2 spectators, its most: try again later")
        node.disconnected(match_id, first)
        assert (await watch(node, match_id, "fan2")).role == "spectator"  # the place freed is taken
        assert node.actors[match_id].spectators == 2
        await node.shutdown()
        nursery.cancel_scope.cancel()
