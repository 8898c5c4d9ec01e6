"""Storage faults under a node (MockClock, in-memory connections): a full disk, a read-only file,
a damaged file, a data directory where nothing can be created. The affected match fails cleanly
with a recorded reason, other matches go on ticking, nothing acknowledged is lost and no file is
overwritten.

The faults are SQLite's own errors, provoked on the live match's connection: `PRAGMA
max_page_count` makes the next commit that needs a page fail with SQLITE_FULL ("database or disk
is full"), `PRAGMA query_only` makes every write fail with SQLITE_READONLY ("attempt to write a
readonly database"), as a full disk or a file turned read-only under a running node would. The
real read-only data directory is in tests/tools/test_storage_faults_e2e.py.
"""

import hashlib
import json
import sqlite3

import pytest
import trio

from gameserver import protocol, storage
from gameserver.actor import InputMessage
from gameserver.config import NodeConfig
from gameserver.games.arena import Arena
from gameserver.games.connect_four import ConnectFour
from gameserver.node import MatchFailed, MatchStorageUnavailable, MatchUnavailable, Node, StorageFailed
from gameserver.protocol import Input
from gameserver.recovery import restore
from gameserver.storage import MatchStore
from node_helpers import frames, join, wall
from tools.replay_open import code_check
from tools.replay_verify import verify

GAMES = {"arena": Arena, "connect_four": ConnectFour}


@pytest.fixture
async def node(tmp_path, nursery):
    node = Node(NodeConfig(data_dir=tmp_path, snapshot_every=5), GAMES, offload=False, wall_clock=wall)
    await nursery.start(node.run)
    yield node
    await node.shutdown()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def acked(conn, player):
    """The last seq the connection was told is acknowledged (state frames and the welcome)."""
    seen = 0
    for frame in frames(conn):
        acks = frame.get("acks") or {}
        seen = max(seen, acks.get(player, 0))
    return seen


async def play_until_failed(actor, conn, first_seq, limit=2000):
    """Send inputs, one per tick, until the actor stops (bounded); the highest seq acknowledged."""
    seen = 0
    seq = first_seq
    with trio.fail_after(limit):  # MockClock seconds
        while not actor.finished.is_set():
            await actor.submit(InputMessage(conn, Input(seq, {"dx": 1, "dy": 0})))
            seq += 1
            await trio.sleep(0.05)
            seen = max(seen, acked(conn, conn.player))
    return seen, seq - 1


def logged_seqs(path, player):
    store = MatchStore.open(path, read_only=True)
    try:
        return {seq for (seq,) in store.conn.execute(
            "SELECT seq FROM inputs WHERE kind = 'input' AND player_id = ?", (player,))}
    finally:
        store.close()


def verifies(path):
    store = MatchStore.open(path, read_only=True)
    try:
        return verify(store, Arena(), code_check(store.meta(), Arena))["ok"]
    finally:
        store.close()


async def two_matches(node):
    """Two live arena matches with a player each, a few inputs acknowledged in each."""
    a, b = await node.create_match("arena"), await node.create_match("arena")
    actor_a, actor_b = await node.actor(a.match_id), await node.actor(b.match_id)
    ann, bob = await join(node, a.match_id, "ann"), await join(node, b.match_id, "bob")
    for seq in range(1, 6):
        await actor_a.submit(InputMessage(ann, Input(seq, {"dx": 1, "dy": 1})))
        await actor_b.submit(InputMessage(bob, Input(seq, {"dx": -1, "dy": 1})))
        await trio.sleep(0.05)
    await trio.sleep(0.1)
    return actor_a, actor_b, ann, bob


async def test_a_full_disk_fails_that_match_cleanly_and_the_others_go_on(node, autojump_clock):
    actor_a, actor_b, ann, bob = await two_matches(node)
    path = storage.match_path(node.data_dir, actor_a.match_id)
    pages = actor_a.store.conn.execute("PRAGMA page_count").fetchone()[0]
    actor_a.store.conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full for this file
    seen, sent = await play_until_failed(actor_a, ann, first_seq=6)

    # the match failed, with the reason, and its players were told (1011, retryable: they come back to a refusal)
    assert actor_a.status == storage.FAILED and "database or disk is full" in actor_a.status_reason
    assert ann.close_request[0] == protocol.CLOSE_INTERNAL
    status = await node.describe(actor_a.match_id)
    assert status["status"] == "failed" and "database or disk is full" in status["status_reason"]
    assert "database or disk is full" in node.broken[str(path)].reason
    with pytest.raises(MatchFailed, match="disk is full"):  # over for this node (clients: 4012)
        await node.actor(actor_a.match_id)
    # nothing acknowledged was lost, and the file is whole: it verifies up to its last committed tick
    assert 5 <= seen < sent
    assert set(range(1, seen + 1)) <= logged_seqs(path, "ann")
    assert verifies(path)
    # the other match goes on ticking and acknowledging
    tick = actor_b.sim.tick
    await actor_b.submit(InputMessage(bob, Input(6, {"dx": 0, "dy": 0})))
    await trio.sleep(1)
    assert actor_b.sim.tick >= tick + 19 and not actor_b.over and acked(bob, "bob") == 6


async def test_a_file_turned_read_only_fails_its_match_in_memory_and_resumes_after_a_restart(
        tmp_path, autojump_clock):
    config = NodeConfig(data_dir=tmp_path, snapshot_every=5)
    async with trio.open_nursery() as nursery:
        node = Node(config, GAMES, offload=False, wall_clock=wall)
        await nursery.start(node.run)
        actor_a, actor_b, ann, bob = await two_matches(node)
        match_a = actor_a.match_id
        path = storage.match_path(tmp_path, match_a)
        actor_a.store.conn.execute("PRAGMA query_only = ON")  # every write now fails: SQLITE_READONLY
        seen, sent = await play_until_failed(actor_a, ann, first_seq=6)
        assert actor_a.status == storage.FAILED and not actor_a.failure_recorded
        # the file could not take the failure: the node remembers it, shows it and refuses the match
        status = await node.describe(match_a)
        assert status["status"] == "failed" and "readonly" in status["status_reason"]
        assert "not recorded in the file" in node.broken[str(path)].reason
        with pytest.raises(MatchUnavailable):
            await node.actor(match_a)
        assert not actor_b.over and actor_b.sim.tick > 0
        before = digest(path)
        await node.shutdown()
        nursery.cancel_scope.cancel()
    assert seen == 5 and digest(path) == before
    # after a restart the file (still `running`) is the truth: the match goes on from its last
    # committed tick, with every acknowledged input
    async with trio.open_nursery() as nursery:
        node = Node(config, GAMES, offload=False, wall_clock=wall)
        await nursery.start(node.run)
        revived = await node.actor(match_a)
        assert revived.sim.last_seq["ann"] == seen
        await node.shutdown()
        nursery.cancel_scope.cancel()


async def test_a_damaged_file_is_reported_and_never_written(node, autojump_clock):
    game = await node.create_match("connect_four")
    other = await node.create_match("arena")
    other_actor = await node.actor(other.match_id)
    path = storage.match_path(node.data_dir, game.match_id)
    with sqlite3.connect(path) as conn:  # enough rows for several pages
        conn.executemany("INSERT INTO events (tick, idx, kind, data) VALUES (?, ?, 'note', ?)",
                         [(1000 + i, 0, json.dumps("x" * 200)) for i in range(200)])
    conn.close()
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page:3 * page + 64] = b"\xa5" * 64  # a page header in the middle of the file
    path.write_bytes(bytes(data))
    before = digest(path)
    with pytest.raises(MatchUnavailable, match="damaged"):
        await node.actor(game.match_id)
    reason = node.broken[str(path)].reason
    assert "damaged" in reason and "storage error" not in reason
    assert game.match_id not in node.unfinished
    assert digest(path) == before and not path.with_name(path.name + "-wal").exists()
    tick = other_actor.sim.tick
    await trio.sleep(0.5)
    assert other_actor.sim.tick >= tick + 9


async def test_damage_found_by_a_live_match_is_not_written_over(node, autojump_clock):
    """SQLite reports a damaged page while the match runs: it fails, and its file is left as it is
    (no failure status written into a damaged file)."""
    actor_a, actor_b, ann, bob = await two_matches(node)
    path = storage.match_path(node.data_dir, actor_a.match_id)

    def damaged(record, now):
        raise sqlite3.DatabaseError("database disk image is malformed")

    actor_a.store.commit_step = damaged
    await actor_a.finished.wait()
    assert actor_a.status == storage.FAILED and actor_a.status_reason.startswith("match file damaged")
    assert not actor_a.failure_recorded
    assert (await node.describe(actor_a.match_id))["status"] == "failed"
    store = MatchStore.open(path, read_only=True)
    try:
        assert store.meta().status == "running"  # nothing written
    finally:
        store.close()
    assert not actor_b.over


async def test_nothing_can_be_created_answers_a_storage_error_and_leaves_nothing(node, autojump_clock, monkeypatch):
    """A data directory where no file can be created (read-only, full): creating a match is refused
    with `storage_unavailable`, no staging file is left, the node goes on."""
    arena = await node.create_match("arena")
    actor = await node.actor(arena.match_id)

    def refuse(*_args, **_kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(storage.os, "link", refuse)  # the last step of a creation: the name
    with pytest.raises(StorageFailed, match="Permission denied") as refused:
        await node.create_match("arena")
    assert refused.value.code == "storage_unavailable"
    assert sorted(p.name for p in (node.data_dir / "matches").iterdir()) == [f"{arena.match_id}.sqlite3",
                                                                              f"{arena.match_id}.sqlite3-shm",
                                                                              f"{arena.match_id}.sqlite3-wal"]
    monkeypatch.undo()
    again = await node.create_match("arena")
    assert again.match_id != arena.match_id and not actor.over


async def test_a_match_the_storage_refuses_to_open_stays_known_and_is_tried_again(tmp_path, autojump_clock,
                                                                                  monkeypatch):
    config = NodeConfig(data_dir=tmp_path, snapshot_every=5)
    async with trio.open_nursery() as nursery:
        node = Node(config, GAMES, offload=False, wall_clock=wall)
        await nursery.start(node.run)
        meta = await node.create_match("connect_four")
        await node.shutdown()
        nursery.cancel_scope.cancel()
    real_open = MatchStore.open.__func__

    def unwritable(cls, path, *, read_only=False, **kwargs):
        if not read_only:
            raise storage.StorageUnavailable(f"{path}: storage error (attempt to write a readonly database)")
        return real_open(cls, path, read_only=read_only, **kwargs)

    async with trio.open_nursery() as nursery:
        node = Node(config, GAMES, offload=False, wall_clock=wall)
        await nursery.start(node.run)
        monkeypatch.setattr(MatchStore, "open", classmethod(unwritable))
        with pytest.raises(MatchStorageUnavailable, match="readonly") as refused:  # clients: 1013
            await node.actor(meta.match_id)
        assert refused.value.code == "storage_unavailable" and str(refused.value).startswith("try again later")
        path = str(storage.match_path(tmp_path, meta.match_id))
        assert "storage error" in node.broken[path].reason
        assert meta.match_id in node.unfinished  # not damaged: still a match of this node
        monkeypatch.undo()
        await trio.sleep(6)  # the retry (STORAGE_RETRY_S): it activates now, and the report is gone
        assert meta.match_id in node.actors and path not in node.broken
        await node.shutdown()
        nursery.cancel_scope.cancel()


def test_stale_staging_files_are_removed_at_start(tmp_path):
    from gameserver.node import remove_stale_staging

    folder = tmp_path / "matches"
    folder.mkdir()
    dead = folder / f".{'1' * 26}.sqlite3.999999999.12345.new"
    names = [dead, dead.with_name(dead.name + "-wal"), folder / f".{'1' * 26}.sqlite3.1.2.new"]
    for path in names:
        path.write_bytes(b"x")
    keep = [folder / f"{'1' * 26}.sqlite3", folder / "notes.txt", folder / ".hidden"]
    for path in keep:
        path.write_bytes(b"x")
    remove_stale_staging(tmp_path)
    # pid 1 is alive (init): its staging file stays; the dead process's go; nothing else is touched
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in keep + [names[2]])
