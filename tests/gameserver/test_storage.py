"""Match files: creation never overwrites, bad files are refused untouched, recovery rebuilds exactly."""

import hashlib
import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gameserver import storage
from gameserver.games.arena import Arena, Params
from gameserver.records import step_record
from gameserver.recovery import Diverged, create_match_file, restore
from gameserver.protocol import MAX_SEQ
from gameserver.simulation import INPUT, JOIN, KINDS, Command
from gameserver.storage import MatchExists, MatchStore, NewerSchema, NotAMatchFile

MATCH = "0" * 26


def new_file(tmp_path, snapshot_every=10):
    path = storage.match_path(tmp_path, MATCH)
    meta, sim = create_match_file(path, Arena(), match_id=MATCH, params=Params(), seed=7,
                                  snapshot_every=snapshot_every, now=1000.0)
    return path, meta, sim


def play(path, sim, ticks, snapshot_every=10):
    store = MatchStore.open(path)
    try:
        for t in range(ticks):
            commands = [Command(JOIN, "a"), Command(JOIN, "b")] if sim.tick == 0 else [
                Command(INPUT, "a", sim.tick, {"dx": (t % 3) - 1, "dy": 1}),
                Command(INPUT, "b", sim.tick, {"dx": 1, "dy": (t % 2) - 0.5})]
            step = sim.step(commands)
            store.commit_step(step_record(sim, step, snapshot_every), now=1000.0 + t)
    finally:
        store.close()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_create_refuses_to_overwrite(tmp_path):
    path, meta, sim = new_file(tmp_path)
    before = digest(path)
    with pytest.raises(MatchExists):
        create_match_file(path, Arena(), match_id=MATCH, params=Params(), seed=8, snapshot_every=10, now=0.0)
    assert digest(path) == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no staging file left


def test_recovery_rebuilds_the_same_state(tmp_path):
    path, meta, sim = new_file(tmp_path, snapshot_every=10)
    play(path, sim, 37)
    with MatchStoreReader(path) as store:
        rebuilt = restore(store, Arena())
    assert rebuilt.tick == sim.tick == 37
    assert rebuilt.canonical() == sim.canonical()
    assert rebuilt.last_seq == sim.last_seq and rebuilt.seated == sim.seated
    with MatchStoreReader(path) as store:
        assert restore(store, Arena(), until=15).tick == 15


def test_recovery_finds_divergence_at_its_tick(tmp_path):
    path, meta, sim = new_file(tmp_path, snapshot_every=10)
    play(path, sim, 25)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE steps SET checksum = checksum + 1 WHERE tick = 23")
    conn.commit()
    conn.close()
    with MatchStoreReader(path) as store, pytest.raises(Diverged) as caught:
        restore(store, Arena())
    assert caught.value.tick == 23


def test_not_sqlite_is_refused_untouched(tmp_path):
    path = storage.match_path(tmp_path, MATCH)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"hello, not a database" * 100)
    before = digest(path)
    with pytest.raises(NotAMatchFile):
        MatchStore.open(path)
    assert digest(path) == before


def test_other_sqlite_is_refused(tmp_path):
    path = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    with pytest.raises(NotAMatchFile):
        MatchStore.open(path)


def test_newer_schema_is_refused_untouched(tmp_path):
    path, meta, sim = new_file(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {storage.SCHEMA_VERSION + 1}")
    conn.close()
    before = digest(path)
    with pytest.raises(NewerSchema):
        MatchStore.open(path)
    assert digest(path) == before


def test_truncated_file_is_refused(tmp_path):
    path, meta, sim = new_file(tmp_path)
    play(path, sim, 30)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    before = digest(path)
    with pytest.raises(storage.MatchFileError):
        store = MatchStore.open(path)
        restore(store, Arena())
    assert digest(path) == before


def test_scan_reports_broken_files_and_lists_good_ones(tmp_path):
    path, meta, sim = new_file(tmp_path)
    (path.parent / f"{'1' * 26}.sqlite3").write_bytes(b"garbage")
    found, broken = storage.scan(tmp_path)
    assert [m.match_id for m in found] == [MATCH]
    assert len(broken) == 1 and "not an SQLite database" in broken[0][1]


def test_events_and_kv_are_read_back(tmp_path):
    path, meta, sim = new_file(tmp_path)
    play(path, sim, 3)
    with MatchStoreReader(path) as store:
        events = store.events_after(0)
        assert [(t, k) for t, k, _ in events] == [(1, "join"), (1, "join")]
        assert store.events_after(1) == []
        assert [p for p, _, _ in store.players()] == ["a", "b"]


class MatchStoreReader:
    def __init__(self, path):
        self.store = MatchStore.open(path, read_only=True)

    def __enter__(self):
        return self.store

    def __exit__(self, *exc):
        self.store.close()


def test_an_older_schema_is_migrated_in_place(tmp_path, monkeypatch):
    path, meta, sim = new_file(tmp_path)
    play(path, sim, 5)

    def add_notes(conn):
        conn.execute("ALTER TABLE match ADD COLUMN notes TEXT")

    monkeypatch.setattr(storage, "SCHEMA_VERSION", storage.SCHEMA_VERSION + 1)
    monkeypatch.setitem(storage.MIGRATIONS, storage.SCHEMA_VERSION - 1, add_notes)
    with pytest.raises(storage.MatchFileError):  # a reader never migrates
        MatchStore.open(path, read_only=True)
    store = MatchStore.open(path)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone() == (storage.SCHEMA_VERSION,)
        assert store.conn.execute("SELECT notes FROM match").fetchone() == (None,)
        assert restore(store, Arena()).canonical() == sim.canonical()
    finally:
        store.close()


def _schema_4_log(conn, sim, ticks, snapshot_every=10):
    """What Arbiter wrote until schema 4: a row per command in `inputs`, one per step in
    `checksums`, the match row's tick at every step."""
    logged = {}
    for t in range(ticks):
        commands = [Command(JOIN, "a"), Command(JOIN, "b")] if sim.tick == 0 else [
            Command(INPUT, "a", sim.tick, {"dx": (t % 3) - 1, "dy": 1}),
            Command(INPUT, "b", sim.tick, None if t % 4 == 0 else {"dx": 1, "dy": (t % 2) - 0.5, "say": "hé"})]
        step = sim.step(commands, now=2000.0 + t)
        record = step_record(sim, step, snapshot_every)
        with storage.transaction(conn):
            conn.executemany("INSERT INTO inputs (tick, idx, kind, player_id, seq, data) VALUES (?, ?, ?, ?, ?, ?)",
                             [(record.tick, i, c.kind, c.player, c.seq, storage._json(c.data))
                              for i, c in enumerate(record.commands)])
            conn.execute("INSERT INTO checksums (tick, checksum, at, ticked) VALUES (?, ?, ?, ?)",
                         (record.tick, record.checksum, record.at, record.ticked))
            if record.snapshot is not None:
                MatchStore._insert_snapshot(conn, record.snapshot)
            conn.execute("UPDATE match SET tick = ?, updated_at = ?", (record.tick, 1000.0 + t))
        logged[record.tick] = list(record.commands)
    return logged


def _schema_4_file(path, like):
    """A match file as Arbiter wrote it until schema 4, holding the match row and first snapshot of `like`."""
    with MatchStoreReader(like) as store:
        match_row = store.conn.execute("SELECT * FROM match").fetchone()
        snapshot = store.latest_snapshot()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA application_id = {storage.APPLICATION_ID}")
    conn.executescript(f"BEGIN; {storage._SCHEMA_V1} COMMIT;")
    for version in (1, 2, 3):
        storage.MIGRATIONS[version](conn)
    conn.execute("PRAGMA user_version = 4")
    conn.execute(f"INSERT INTO match VALUES ({', '.join('?' * len(match_row))})", match_row)
    MatchStore._insert_snapshot(conn, snapshot)
    conn.execute("INSERT INTO checksums (tick, checksum) VALUES (?, ?)", (snapshot.tick, snapshot.checksum))
    return conn


def test_a_schema_4_log_becomes_one_row_per_step(tmp_path):
    like, meta, sim = new_file(tmp_path / "new")
    path = tmp_path / "old.sqlite3"
    conn = _schema_4_file(path, like)
    try:
        logged = _schema_4_log(conn, sim, 25)
        rows = conn.execute("SELECT tick, idx, kind, player_id, seq, data FROM inputs ORDER BY tick, idx").fetchall()
        sums = conn.execute("SELECT tick, checksum, at, ticked FROM checksums ORDER BY tick").fetchall()
    finally:
        conn.close()
    store = MatchStore.open(path)
    try:
        assert store.conn.execute("PRAGMA user_version").fetchone() == (storage.SCHEMA_VERSION,)
        assert dict(store.commands_after(0)) == logged
        assert store.meta().tick == 25
        # the old tables, as views, read as they were
        assert store.conn.execute("SELECT tick, idx, kind, player_id, seq, data FROM inputs").fetchall() == rows
        assert store.conn.execute("SELECT tick, checksum, at, ticked FROM checksums").fetchall() == sums
        assert restore(store, Arena()).canonical() == sim.canonical()
        step = sim.step([Command(INPUT, "a", 99, {"dx": 1, "dy": 1})], now=3000.0)
        store.commit_step(step_record(sim, step, 10), now=3000.0)  # and the log goes on
        assert store.meta().tick == 26
    finally:
        store.close()
    with MatchStoreReader(path) as reader:
        assert restore(reader, Arena()).canonical() == sim.canonical()


def test_a_node_scan_migrates_files_an_older_arbiter_wrote(tmp_path):
    like, meta, sim = new_file(tmp_path / "new")
    path = storage.match_path(tmp_path / "data", MATCH)
    path.parent.mkdir(parents=True)
    conn = _schema_4_file(path, like)
    try:
        _schema_4_log(conn, sim, 12)
    finally:
        conn.close()
    with pytest.raises(storage.OlderSchema):
        MatchStore.open(path, read_only=True)
    found, broken = storage.scan(tmp_path / "data")
    assert broken == []
    assert [(m.match_id, m.tick) for m in found] == [(MATCH, 12)]
    with MatchStoreReader(path) as store:  # readers can read it now
        assert store.conn.execute("PRAGMA user_version").fetchone() == (storage.SCHEMA_VERSION,)
        assert restore(store, Arena()).canonical() == sim.canonical()


def test_the_match_row_says_how_far_the_match_got_without_a_write_per_step(tmp_path):
    path, meta, sim = new_file(tmp_path)
    play(path, sim, 12)
    with MatchStoreReader(path) as store:
        read = store.meta()
        assert store.conn.execute("SELECT tick FROM match").fetchone() == (0,)  # not written at each step
    assert read.tick == 12
    assert read.updated_at >= meta.updated_at


def test_a_live_match_never_checkpoints_in_its_commits_and_a_checkpoint_elsewhere_empties_its_wal(tmp_path):
    path, meta, sim = new_file(tmp_path)
    store = MatchStore.open(path)
    try:
        assert store.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        wal = path.with_name(path.name + "-wal")
        for t in range(400):  # far more than SQLite's automatic 1,000-page checkpoint would allow
            commands = [Command(JOIN, "a")] if sim.tick == 0 else [Command(INPUT, "a", sim.tick, {"dx": 1, "dy": 0})]
            store.commit_step(step_record(sim, sim.step(commands), 10), now=1000.0 + t)
        size_before = wal.stat().st_size
        storage.checkpoint(path)  # another connection, as the node does it in a worker thread
        # the next commit starts the WAL over from its beginning: it stops growing
        store.commit_step(step_record(sim, sim.step([Command(INPUT, "a", sim.tick, {"dx": 0, "dy": 1})]), 10),
                          now=2000.0)
        store.commit_step(step_record(sim, sim.step([Command(INPUT, "a", sim.tick, {"dx": 0, "dy": 1})]), 10),
                          now=2001.0)
        assert wal.stat().st_size == size_before  # reused from the start, not grown
        busy, log_frames, checkpointed = store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert log_frames < 20, log_frames  # only the two new commits are in it
    finally:
        store.close()
    with MatchStoreReader(path) as reader:
        assert reader.meta().tick == sim.tick


def test_restarts_wal_stays_set_until_a_write_made_after_the_checkpoint_ended(tmp_path):
    path, meta, sim = new_file(tmp_path)
    store = MatchStore.open(path)
    try:
        def commit(commands):
            store.commit_step(step_record(sim, sim.step(commands), 10), now=1000.0 + sim.tick)

        commit([Command(JOIN, "a")])  # a transaction
        assert not store.restarts_wal
        with store.checkpointed_elsewhere():  # as the node does around its checkpoint
            commit([Command(INPUT, "a", 1, {"dx": 1, "dy": 0})])  # one INSERT: may precede the checkpoint's end
            store.write_alarms([], None)
            assert store.restarts_wal
        commit([Command(INPUT, "a", 2, {"dx": 0, "dy": 1})])
        assert not store.restarts_wal
        with store.checkpointed_elsewhere():
            pass
        store.write_alarms([], None)  # any write restarts the WAL
        assert not store.restarts_wal
    finally:
        store.close()


def _synchronous(store):
    return store.conn.execute("PRAGMA synchronous").fetchone()[0]  # 0 OFF, 1 NORMAL, 2 FULL


def _one_step(store, sim, now):
    commands = [Command(JOIN, "a")] if sim.tick == 0 else [Command(INPUT, "a", sim.tick, {"dx": 1, "dy": 0})]
    store.commit_step(step_record(sim, sim.step(commands), 10), now=now)


def test_only_the_first_write_into_an_empty_wal_skips_syncing_and_only_at_normal(tmp_path):
    """A fresh WAL's first write runs at synchronous = OFF (no header or directory sync to wait
    for), every later one at the configured level; a WAL that already holds frames, or FULL, never."""
    path, meta, sim = new_file(tmp_path)
    store = MatchStore.open(path)
    try:
        assert _synchronous(store) == 0  # no WAL yet
        _one_step(store, sim, 1000.0)
        assert _synchronous(store) == 1  # NORMAL from then on
        _one_step(store, sim, 1001.0)
        assert _synchronous(store) == 1
        other = MatchStore.open(path)  # the WAL now holds frames: nothing may be skipped
        try:
            assert _synchronous(other) == 1
        finally:
            other.close()
    finally:
        store.close()
    full = MatchStore.open(path, synchronous="FULL")
    try:
        assert _synchronous(full) == 2
        _one_step(full, sim, 1002.0)
        assert _synchronous(full) == 2
    finally:
        full.close()
    with MatchStoreReader(path) as reader:  # every commit is there
        assert reader.meta().tick == sim.tick == 3


def test_a_first_write_that_fails_still_restores_the_configured_level(tmp_path):
    path, meta, sim = new_file(tmp_path)
    store = MatchStore.open(path)
    try:
        step = sim.step([Command(JOIN, "a")])
        record = step_record(sim, step, 10)
        store.commit_step(record, now=1000.0)
        assert _synchronous(store) == 1
    finally:
        store.close()
    store = MatchStore.open(path)
    try:
        assert _synchronous(store) == 0
        with pytest.raises(sqlite3.IntegrityError):
            store.commit_step(record, now=1001.0)  # the same tick's inputs again: refused, rolled back
        assert _synchronous(store) == 1
    finally:
        store.close()


@given(st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                                                        st.booleans(), st.none(), st.text(max_size=5),
                                                        st.lists(st.integers(), max_size=2)), max_size=4))
def test_input_json_is_the_canonical_encoding_cached_or_not(data):
    first = storage._input_json(data)
    assert first == storage._json(data)
    assert storage._input_json(dict(data)) == first  # a second time: from the cache for flat objects
    if data:  # equal-comparing values of other types are not mixed up
        for name, value in data.items():
            if type(value) is int and not isinstance(value, bool) and value in (0, 1):
                other = dict(data, **{name: bool(value)})
                assert storage._input_json(other) == storage._json(other)


# Commands as the runtime can log them: every kind, a player id, a seq from 0 to the protocol's MAX_SEQ
# (so that the readers' checks of a command's types refuse nothing the writer writes). No NUL in a
# player id: the `inputs` view's json_extract ends a string there.
LOGGED = st.lists(st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from(["a", "b"])
                                     | st.text(st.characters(blacklist_characters="\x00"), max_size=6),
                                     st.integers(0, 9) | st.sampled_from([0, MAX_SEQ]) | st.integers(0, MAX_SEQ),
                                     st.none() | st.sampled_from([{"dx": 1, "dy": 0}, {"dx": -1, "dy": 0.5}])
                                     | st.dictionaries(st.text(max_size=2), st.integers() | st.lists(st.integers(),
                                                                                                       max_size=2),
                                                       max_size=2)),
                           max_size=5), min_size=1, max_size=12)


@given(LOGGED, st.integers(0, 3))
def test_the_log_reads_back_as_it_was_written(tmp_path_factory, ticks, after):
    """commands_after gives every tick's commands in order, equal to what was logged (equal flat objects
    of immutable values shared, others not), and steps_after
    each completed step's checksum, time and ticked; the `inputs` and `checksums` views show the same."""
    path, _meta, _sim = new_file(tmp_path_factory.mktemp("log"))
    store = MatchStore.open(path)
    try:
        written = {}
        for tick, batch in enumerate(ticks, start=1):
            commands = [Command(kind, player, seq, data) for kind, player, seq, data in batch]
            text = storage._commands_json([storage._command_json(c.kind, c.player, c.seq, storage._input_json(c.data))
                                           for c in commands]) if commands else None
            with storage.transaction(store.conn) as conn:
                if tick % 3:  # a step without its time: read as 0.0
                    conn.execute("INSERT INTO steps (tick, checksum, at, ticked, commands) VALUES (?, ?, ?, ?, ?)",
                                 (tick, tick * 7, None if tick % 2 else tick / 4, tick % 4 != 1, text))
                elif commands:  # a step that did not complete: its commands, no checksum
                    conn.execute("INSERT INTO steps (tick, commands) VALUES (?, ?)", (tick, text))
            if commands:
                written[tick] = commands
        read = dict(store.commands_after(after))
        assert read == {t: c for t, c in written.items() if t > after}
        assert list(read) == sorted(read)
        flat = [c.data for batch in read.values() for c in batch if c.data is not None]
        for i, one in enumerate(flat):
            for other in flat[i + 1:]:
                if storage._json(one) == storage._json(other):
                    if all(type(v) is int for v in one.values()):
                        assert one is other  # one object for equal inputs, when nothing in it can change
                    if any(type(v) is list for v in one.values()):
                        assert one is not other  # a list could be changed through one of them
        viewed = store.conn.execute("SELECT tick, idx, kind, player_id, seq, data FROM inputs WHERE tick > ?"
                                    " ORDER BY tick, idx", (after,)).fetchall()
        assert viewed == [(t, i, c.kind, c.player, c.seq, storage._input_json(c.data))
                          for t, batch in written.items() if t > after for i, c in enumerate(batch)]
        assert dict(store.commands_after(after, until=len(ticks) - 1)) == {
            t: c for t, c in written.items() if after < t <= len(ticks) - 1}
        steps = store.steps_after(after)
        assert steps == {t: (t * 7, 0.0 if t % 2 else t / 4, t % 4 != 1)
                         for t in range(after + 1, len(ticks) + 1) if t % 3}
        assert all(type(at) is float and type(ticked) is bool for _c, at, ticked in steps.values())
        assert store.conn.execute("SELECT tick, checksum FROM checksums WHERE tick > ?", (after,)).fetchall() == [
            (t, c) for t, (c, _at, _ticked) in sorted(steps.items())]
    finally:
        store.close()


def test_a_step_row_alone_is_its_own_transaction_and_a_failed_one_leaves_nothing(tmp_path):
    """commit_step writes most ticks with one autocommit INSERT (no BEGIN/COMMIT): it must be as atomic
    and as visible to other connections as the explicit transaction the other ticks use."""
    path, meta, sim = new_file(tmp_path)
    store = MatchStore.open(path)
    statements = []
    store.conn.set_trace_callback(statements.append)
    try:
        store.commit_step(step_record(sim, sim.step([Command(JOIN, "a")]), 1000), now=1000.0)  # a join: BEGIN
        assert statements[0] == "BEGIN IMMEDIATE" and "COMMIT" in statements
        statements.clear()
        record = step_record(sim, sim.step([Command(INPUT, "a", 1, {"dx": 1, "dy": 0})]), 1000)
        store.commit_step(record, now=1001.0)
        assert len(statements) == 1 and statements[0].startswith("INSERT INTO steps")
        assert not store.conn.in_transaction
        other = sqlite3.connect(path)  # committed: another connection sees it
        assert other.execute("SELECT tick, checksum FROM steps ORDER BY tick DESC LIMIT 1").fetchone() == (
            record.tick, record.checksum)
        with pytest.raises(sqlite3.IntegrityError):
            store.commit_step(record, now=1002.0)  # the same tick again: refused whole
        assert not store.conn.in_transaction
        assert other.execute("SELECT COUNT(*) FROM steps WHERE tick = ?", (record.tick,)).fetchone() == (1,)
        other.close()
        store.commit_step(step_record(sim, sim.step([]), 1000), now=1003.0)  # and the file goes on
    finally:
        store.close()
    with MatchStoreReader(path) as reader:
        assert reader.meta().tick == sim.tick
