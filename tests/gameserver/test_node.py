"""The node and its actors under a MockClock, with in-memory connections (no sockets)."""

import sqlite3
import threading

import attrs
import pytest
import trio
import trio.testing

from gameserver import protocol, storage
from gameserver.actor import InputMessage, JoinRequest
from gameserver.config import NodeConfig
from gameserver.game import Game
from gameserver.games.arena import Arena
from gameserver.node import MatchNotFound, MatchOver, MatchUnavailable, Node
from gameserver.protocol import Input
from node_helpers import connection, frames


@attrs.define
class Counter:
    ticks: int = 0


@attrs.frozen
class Nothing:
    boom: bool = False


class Fragile(Game):
    """Crashes the match on an input with boom=true."""
    name = "fragile"
    tick_rate = 10
    state_type = Counter
    input_type = Nothing

    def init(self, params, ctx):
        return Counter()

    def tick(self, state, inputs, ctx):
        state.ticks += 1
        if any(i.data.boom for i in inputs):
            raise RuntimeError("boom")


@pytest.fixture
async def node(tmp_path, nursery):
    node = Node(NodeConfig(data_dir=tmp_path, snapshot_every=5), {"arena": Arena, "fragile": Fragile}, offload=False)
    await nursery.start(node.run)
    yield node
    await node.shutdown()


async def join(actor, player, role="player", resume_tick=None):
    """Join straight through the actor (not the node), as the node's own tests need."""
    conn = connection(actor.match_id, player, role, resume_tick=resume_tick, max_frames=64)
    assert await actor.submit(JoinRequest(conn))
    await conn.admitted.wait()
    return conn


async def test_ticks_on_absolute_deadlines_without_drift(node, autojump_clock):
    meta = await node.create_match("arena")
    actor = await node.actor(meta.match_id)
    start_tick = actor.sim.tick
    await trio.sleep(10.01)
    # 20 Hz for 10 s: exactly 200 ticks, whatever the per-tick work took
    assert actor.sim.tick - start_tick == 200
    assert node.metrics.late_ticks._value.get() == 0


async def test_concurrent_first_access_activates_once(node, autojump_clock):
    meta = await node.create_match("arena")
    actors = []
    async with trio.open_nursery() as nursery:
        async def get():
            actors.append(await node.actor(meta.match_id))
        for _ in range(10):
            nursery.start_soon(get)
    assert len({id(a) for a in actors}) == 1
    [family] = node.metrics.activation.collect()
    assert [s.value for s in family.samples if s.name.endswith("_count")] == [1.0]
    assert len(node.actors) == 1


async def test_state_frames_follow_commits_and_carry_acks(node, autojump_clock):
    meta = await node.create_match("arena")
    actor = await node.actor(meta.match_id)
    committed_inputs = []
    real_commit = actor.store.commit_step

    def spy(record, now):
        real_commit(record, now)
        committed_inputs.extend((c.player, c.seq) for c in record.commands if c.kind == "input")

    actor.store.commit_step = spy
    alice = await join(actor, "alice")
    welcome = frames(alice)[0]
    assert welcome["t"] == "welcome" and welcome["last_seq"] == 0 and "alice" in welcome["state"]["players"]
    for seq in (1, 2, 3):
        assert await actor.submit(InputMessage(alice, Input(seq, {"dx": 1, "dy": 0})))
    await alice.wakeup.wait()
    state = frames(alice)[-1]
    assert state["t"] == "state" and state["acks"]["alice"] == 3
    # output gate: everything acknowledged was committed before the frame existed
    assert ("alice", 3) in committed_inputs
    assert state["state"]["players"]["alice"]["last_seq"] == 3


async def test_duplicates_are_dropped_and_invalid_inputs_answered(node, autojump_clock):
    meta = await node.create_match("arena")
    actor = await node.actor(meta.match_id)
    bob = await join(actor, "bob")
    frames(bob)
    await actor.submit(InputMessage(bob, Input(1, {"dx": 1, "dy": 1})))
    await actor.submit(InputMessage(bob, Input(1, {"dx": -1, "dy": -1})))  # duplicate seq
    await actor.submit(InputMessage(bob, Input(2, {"dx": "left", "dy": 0})))  # invalid
    await trio.sleep(0.2)
    got = frames(bob)
    errors = [f for f in got if f["t"] == "error"]
    assert [(e["code"], e["seq"]) for e in errors] == [("invalid_input", 2)]
    assert got[-1]["state"]["players"]["bob"]["vx"] == 5.0  # the duplicate did not apply
    logged = sqlite3.connect(storage.match_path(node.data_dir, meta.match_id)).execute(
        "SELECT seq FROM inputs WHERE kind = 'input' AND player_id = 'bob'").fetchall()
    assert logged == [(1,)]


async def test_a_game_crash_ends_only_that_match(node, autojump_clock):
    fragile = await node.create_match("fragile")
    arena = await node.create_match("arena")
    f_actor, a_actor = await node.actor(fragile.match_id), await node.actor(arena.match_id)
    a_conn = await join(a_actor, "ann")
    f_conn = await join(f_actor, "fay")
    await f_actor.submit(InputMessage(f_conn, Input(1, {"boom": True})))
    await f_actor.finished.wait()
    got = frames(f_conn)
    assert got[-1]["kind"] == "end" and got[-1]["data"]["status"] == "crashed"
    assert f_conn.close_request[0] == protocol.CLOSE_MATCH_CRASHED
    status = await node.describe(fragile.match_id)
    assert status["status"] == "crashed" and "RuntimeError: boom" in status["status_reason"]
    # the crashing input is in the log, for the replay tool
    assert sqlite3.connect(storage.match_path(node.data_dir, fragile.match_id)).execute(
        "SELECT COUNT(*) FROM inputs WHERE kind = 'input'").fetchone() == (1,)
    tick = a_actor.sim.tick
    await trio.sleep(1)
    assert a_actor.sim.tick >= tick + 19 and not a_conn.closing
    with pytest.raises(MatchOver):
        await node.actor(fragile.match_id)


async def test_reactivation_after_an_abandoned_actor_rebuilds_the_state(tmp_path, autojump_clock):
    config = NodeConfig(data_dir=tmp_path, snapshot_every=7)
    async with trio.open_nursery() as nursery:
        first = Node(config, {"arena": Arena}, offload=False)  # (a real thread would let the mock clock run ahead)
        await nursery.start(first.run)
        meta = await first.create_match("arena")
        actor = await first.actor(meta.match_id)
        conn = await join(actor, "ann")
        for seq in range(1, 40):
            await actor.submit(InputMessage(conn, Input(seq, {"dx": 1, "dy": -1})))
            await trio.sleep(0.05)
        await trio.sleep(0.3)
        state_before, tick_before = actor.sim.canonical(), actor.sim.tick
        nursery.cancel_scope.cancel()  # a crash: no shutdown, nothing more written
    async with trio.open_nursery() as nursery:
        second = Node(config, {"arena": Arena}, offload=False)
        await nursery.start(second.run)
        assert meta.match_id in second.unfinished
        revived = await second.actor(meta.match_id)
        assert revived.sim.tick == tick_before
        assert revived.sim.canonical() == state_before
        ann = await join(revived, "ann", resume_tick=tick_before - 3)
        got = frames(ann)
        assert got[0]["t"] == "welcome" and got[0]["last_seq"] == 39
        await second.shutdown()
        nursery.cancel_scope.cancel()


async def test_shutdown_closes_connections_going_away(node, autojump_clock):
    meta = await node.create_match("arena")
    actor = await node.actor(meta.match_id)
    conn = await join(actor, "ann")
    await node.shutdown()
    assert conn.close_request == (protocol.CLOSE_GOING_AWAY, "server shutting down")
    assert actor.finished.is_set()


async def test_unknown_and_broken_matches(node, autojump_clock, tmp_path):
    with pytest.raises(MatchNotFound):
        await node.actor("0" * 26)
    with pytest.raises(MatchNotFound):
        await node.actor("../../etc/passwd")
    bad = storage.match_path(node.data_dir, "2" * 26)
    bad.write_bytes(b"x" * 4096)
    with pytest.raises(MatchUnavailable) as refused:
        await node.actor("2" * 26)
    assert str(bad) in node.broken
    assert bad.read_bytes() == b"x" * 4096
    # clients (GET /v1/matches/{id}, close reasons) are told why, never where the data lives
    with pytest.raises(MatchUnavailable) as described:
        await node.describe("2" * 26)
    for error in (refused.value, described.value):
        assert "2" * 26 in str(error) and str(node.data_dir) not in str(error)


async def test_spectators_watch_but_do_not_join(node, autojump_clock):
    meta = await node.create_match("arena")
    actor = await node.actor(meta.match_id)
    watcher = await join(actor, "cam", role="spectator")
    assert frames(watcher)[0]["role"] == "spectator"
    assert actor.sim.seated == []
    actor.disconnected(watcher)
    await trio.sleep(0.1)
    assert actor.connections == {}


async def test_a_full_inbox_makes_senders_wait_then_refuses(tmp_path, nursery, autojump_clock):
    node = Node(NodeConfig(data_dir=tmp_path, inbox_size=2, inbox_wait_s=0.01), {"arena": Arena})
    await nursery.start(node.run)
    meta = await node.create_match("arena")
    actor = await node.actor(meta.match_id)
    conn = await join(actor, "ann")
    never = trio.Event()

    async def frozen(**_):
        await never.wait()

    actor._advance = frozen  # the actor stops draining its inbox
    await trio.sleep(0.1)
    assert await actor.submit(InputMessage(conn, Input(1, {"dx": 1, "dy": 1})))
    results = [await actor.submit(InputMessage(conn, Input(s, {"dx": 1, "dy": 1}))) for s in (2, 3, 4)]
    assert False in results  # refused, never silently dropped: the caller closes with 1013


async def test_waiters_of_a_failed_or_short_activation_activate_once(tmp_path, nursery, autojump_clock):
    """Callers waiting on an activation whose actor is gone at once: activations never overlap."""
    node = Node(NodeConfig(data_dir=tmp_path, hibernate_after_s=0.0), {"arena": Arena})
    await nursery.start(node.run)
    meta = await node.create_match("arena", {"lobby_s": 60})  # a lobby: not ticking, hibernates at once
    running, overlap = [0], [0]
    real_activate = node._activate

    async def counting(match_id):
        running[0] += 1
        overlap[0] = max(overlap[0], running[0])
        try:
            return await real_activate(match_id)
        finally:
            running[0] -= 1

    node._activate = counting
    async with trio.open_nursery() as callers:
        for _ in range(8):
            callers.start_soon(node.actor, meta.match_id)
    assert overlap[0] == 1  # one actor per match id, ever
    assert node._activating == {}


def offloaded_inline(node) -> list[bool]:
    """Make the node's hops to a worker thread (and its actors') run inline, and tell them apart: the
    returned list's last item is True while one runs. (The mock clock jumps while a real thread
    works, and ticks that fall that far behind are skipped.) Call before the actors start."""
    inside = [False]

    async def inline(fn, *args):
        inside.append(True)
        try:
            return fn(*args)
        finally:
            inside.pop()

    node._offload = inline
    return inside


async def test_a_ticking_match_has_its_wal_checkpointed_off_its_tick_path(node, autojump_clock, monkeypatch):
    checkpointed = []
    real = storage.checkpoint
    offloaded = offloaded_inline(node)

    def spy(path):
        checkpointed.append((path, offloaded[-1]))
        real(path)

    monkeypatch.setattr(storage, "checkpoint", spy)
    meta = await node.create_match("arena")
    actor = await node.actor(meta.match_id)
    assert actor.store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # never in a commit
    await trio.sleep(2 * storage.CHECKPOINT_EVERY_COMMITS / 20 + 3)  # 20 Hz: two requests' worth of commits
    # requested every CHECKPOINT_EVERY_COMMITS commits (the first after fewer), run in a worker thread
    assert checkpointed in ([(actor.store.path, True)] * 2, [(actor.store.path, True)] * 3)


async def test_matches_started_together_checkpoint_apart(node, autojump_clock):
    """Each match's first checkpoint comes after a random number of commits, up to
    CHECKPOINT_EVERY_COMMITS: a server's matches started together do not all checkpoint (and then
    restart their WALs) within the same second."""
    offloaded_inline(node)
    first = {}
    real = node._checkpoint_soon

    def spy(store):
        first.setdefault(store.path, trio.current_time())
        real(store)

    node._checkpoint_soon = spy
    for _ in range(20):
        await node.actor((await node.create_match("arena")).match_id)
    await trio.sleep(storage.CHECKPOINT_EVERY_COMMITS / 20 + 2)
    assert len(first) == 20
    assert max(first.values()) - min(first.values()) > storage.CHECKPOINT_EVERY_COMMITS / 20 / 4


async def test_the_commit_that_starts_the_wal_over_after_a_checkpoint_is_offloaded(node, autojump_clock, monkeypatch):
    """SQLite syncs a restarted WAL's new header in the commit that restarts it: that commit is made
    in a worker thread, not on the event loop; the others are made on it."""
    commits = []  # (whether it started the WAL over, whether it was offloaded)
    real = storage.MatchStore.commit_step
    offloaded = offloaded_inline(node)

    def salt(store):  # a restarted WAL gets new salts in its header
        with open(store.path.with_name(store.path.name + "-wal"), "rb") as wal:
            return wal.read(24)[16:]

    def spy(store, record, now):
        before = salt(store)
        real(store, record, now)
        commits.append((salt(store) != before, offloaded[-1]))

    monkeypatch.setattr(storage.MatchStore, "commit_step", spy)
    meta = await node.create_match("arena")
    await node.actor(meta.match_id)
    await trio.sleep(2 * storage.CHECKPOINT_EVERY_COMMITS / 20 + 3)
    restarts = [offloaded for restarted, offloaded in commits if restarted]
    assert restarts in ([True] * 2, [True] * 3)  # (the first checkpoint comes sooner than the next)
    assert sum(offloaded for _, offloaded in commits) == len(restarts)


async def test_matches_started_together_tick_spread_over_the_period(node, autojump_clock):
    """Each match's first deadline goes to the slot of the period that the other ticking matches use
    least, so 20 arena matches activated at the same instant tick 2 to a 5 ms slot, not 20 at once."""
    from gameserver.metronome import SLOT_S, current

    for _ in range(20):
        meta = await node.create_match("arena")
        await node.actor(meta.match_id)
        await trio.testing.wait_all_tasks_blocked()  # its actor parked on its first deadline
    assert current().load(1 / Arena.tick_rate, SLOT_S) == [2] * 10
    await trio.sleep(1)
    assert node.metrics.late_ticks._value.get() == 0
