"""One SQLite file per match: metadata, players, the input log, checksums, snapshots, events,
the game's key-value store and the result.

Only the match's actor writes its file (one writer). Everything a tick produced is committed in
one transaction (`commit_step`), before anything about that tick leaves the server. Files are
created beside their final name and linked into place, so an existing file is never overwritten.
Readers (status scans, the replay tool) open files read-only. See docs/operations.md for what
survives `kill -9` and power loss.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from .canonical import encode, flat_key
from . import alarms as alarm_math
from .alarms import Alarm
from .records import Snapshot, StepRecord
from .protocol import MAX_SEQ
from .simulation import CANCELLED, ENDED, INPUT, KINDS
from .simulation import Command, make_command

SCHEMA_VERSION = 5
APPLICATION_ID = 0x41524231  # "ARB1": tells an Arbiter match file from any other SQLite file
SUFFIX = ".sqlite3"
STAGING_SUFFIX = ".new"  # a match file being created: `.<match_id>.sqlite3.<pid>.<n>.new`, linked into place
CACHE_KIB = 32  # SQLite's page cache per open match file (its default is 2 MiB; a commit touches 4 to 6 pages)
# Prepared statements a connection keeps (Python's default: 128). A live match runs one to three a
# tick (the step's INSERT, with BEGIN and COMMIT when the tick writes more: see `commit_step`) and a
# few more now and then; those it ran once, to open and restore, held about 50 KB of SQLite's memory
# per open match file for as long as it stayed open.
STATEMENTS_KEPT = 8
# A live match's own commits never checkpoint its WAL (`wal_autocheckpoint = 0`): SQLite's automatic
# checkpoint would copy the WAL into the file and fsync it inside a tick's commit, on the event loop
# (at 1,000 pages: every ~17 s per arena match; ~60 us a tick on average, in stalls of tens of ms).
# Instead the node checkpoints each match every CHECKPOINT_EVERY_COMMITS commits, from a connection
# of its own in a worker thread (`checkpoint`). The write after a complete checkpoint starts the WAL
# over, and SQLite syncs the new header first (old frames must never pass for new ones after a power
# loss): an `fdatasync` of a few ms, so the actor makes that commit in a worker thread too
# (`MatchStore.restarts_wal`).
CHECKPOINT_EVERY_COMMITS = 250

CREATED = "created"  # schema-1 files only: a match not activated yet (treated as running)
LOBBY = "lobby"
RUNNING = "running"
CRASHED = "crashed"
FAILED = "failed"
FINISHED = (ENDED, CANCELLED, CRASHED, FAILED)

_SCHEMA_V1 = """
CREATE TABLE match (
    only INTEGER PRIMARY KEY CHECK (only = 1),
    match_id TEXT NOT NULL,
    game TEXT NOT NULL,
    game_version TEXT NOT NULL,
    params TEXT NOT NULL,
    seed INTEGER NOT NULL,
    tick_rate INTEGER NOT NULL,
    snapshot_every INTEGER NOT NULL,
    status TEXT NOT NULL,
    status_reason TEXT,
    tick INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    result TEXT
);
CREATE TABLE players (
    player_id TEXT PRIMARY KEY,
    join_order INTEGER NOT NULL,
    joined_tick INTEGER NOT NULL,
    left_tick INTEGER
);
CREATE TABLE inputs (
    tick INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    player_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT,
    PRIMARY KEY (tick, idx)
) WITHOUT ROWID;
CREATE TABLE checksums (tick INTEGER PRIMARY KEY, checksum INTEGER NOT NULL);
CREATE TABLE snapshots (
    tick INTEGER PRIMARY KEY,
    state TEXT NOT NULL,
    checksum INTEGER NOT NULL,
    seated TEXT NOT NULL,
    last_seq TEXT NOT NULL
);
CREATE TABLE events (
    tick INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    kind TEXT NOT NULL,
    data TEXT,
    PRIMARY KEY (tick, idx)
) WITHOUT ROWID;
CREATE TABLE kv (
    key TEXT NOT NULL,
    tick INTEGER NOT NULL,
    value TEXT,
    PRIMARY KEY (key, tick)
) WITHOUT ROWID;
"""



def _migrate_1_to_2(conn: sqlite3.Connection) -> None:
    """Alarms, and what replay needs to know of each step: its time and whether the game ticked."""
    conn.execute("ALTER TABLE checksums ADD COLUMN at REAL")
    conn.execute("ALTER TABLE checksums ADD COLUMN ticked INTEGER NOT NULL DEFAULT 1")
    conn.execute("ALTER TABLE snapshots ADD COLUMN started INTEGER NOT NULL DEFAULT 1")
    conn.execute("ALTER TABLE snapshots ADD COLUMN timers TEXT NOT NULL DEFAULT '{}'")
    conn.execute("ALTER TABLE match ADD COLUMN next_alarm_at REAL")
    conn.execute("CREATE TABLE alarms (name TEXT PRIMARY KEY, due REAL NOT NULL, retries INTEGER NOT NULL "
                 "DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, last_error TEXT)")


def _migrate_2_to_3(conn: sqlite3.Connection) -> None:
    """The open connections and their attachments."""
    conn.execute("CREATE TABLE connections (conn_id INTEGER PRIMARY KEY, player_id TEXT NOT NULL, role TEXT NOT NULL, "
                 "attachment TEXT, connected_at REAL NOT NULL)")


def _migrate_3_to_4(conn: sqlite3.Connection) -> None:
    """The matchmaker's roster (in snapshots: backfill changes it), the game code's fingerprint, and
    the match's labels (for listing: queue, visibility)."""
    conn.execute("ALTER TABLE snapshots ADD COLUMN roster TEXT")
    conn.execute("ALTER TABLE match ADD COLUMN code_fingerprint TEXT")
    conn.execute("ALTER TABLE match ADD COLUMN labels TEXT NOT NULL DEFAULT '{}'")


# The input log from schema 5 on: one row per step, written in one INSERT (until schema 4, a row
# per command in `inputs`, one in `checksums`, and an UPDATE of the match row: three B-tree pages,
# so three WAL frames, per commit). `commands` is a JSON array of [kind, player, seq, data], NULL
# when the step had none, `data` the input's JSON text (a string) or null; `checksum` is NULL for a
# step that did not complete (its game code crashed). An input's data is its JSON text as a JSON
# string (`"{\"dx\":1}"`): a reader decodes each distinct text once (`commands_after`). The old
# tables live on as views over it, for SQL readers (tools, people with sqlite3).
_STEPS = "CREATE TABLE steps (tick INTEGER PRIMARY KEY, checksum INTEGER, at REAL, ticked INTEGER NOT NULL DEFAULT 1, commands TEXT)"
_STEP_VIEWS = (
    "CREATE VIEW inputs AS SELECT s.tick AS tick, CAST(c.key AS INTEGER) AS idx,"
    " json_extract(c.value, '$[0]') AS kind, json_extract(c.value, '$[1]') AS player_id,"
    " json_extract(c.value, '$[2]') AS seq,"
    " json_extract(c.value, '$[3]') AS data"
    " FROM steps AS s, json_each(s.commands) AS c WHERE s.commands IS NOT NULL",
    "CREATE VIEW checksums AS SELECT tick, checksum, at, ticked FROM steps WHERE checksum IS NOT NULL",
)


def _migrate_4_to_5(conn: sqlite3.Connection) -> None:
    """One row per step (`_STEPS`) instead of the `inputs` and `checksums` tables."""
    conn.execute(_STEPS)
    steps: dict[int, list] = {}
    for tick, checksum, at, ticked in conn.execute("SELECT tick, checksum, at, ticked FROM checksums"):
        steps[tick] = [tick, checksum, at, ticked, []]
    for tick, kind, player, seq, data in conn.execute(
            "SELECT tick, kind, player_id, seq, data FROM inputs ORDER BY tick, idx"):
        steps.setdefault(tick, [tick, None, None, 1, []])[4].append(_command_json(kind, player, seq, data))
    conn.executemany("INSERT INTO steps (tick, checksum, at, ticked, commands) VALUES (?, ?, ?, ?, ?)",
                     [(t, c, at, ticked, _commands_json(commands) if commands else None)
                      for t, c, at, ticked, commands in steps.values()])
    conn.execute("DROP TABLE inputs")
    conn.execute("DROP TABLE checksums")
    for view in _STEP_VIEWS:
        conn.execute(view)


# MIGRATIONS[v] turns a version-v file into a version-(v + 1) file, inside one transaction.
# New files are created at version 1 and migrated, so a new file and a migrated one are the same.
MIGRATIONS: dict[int, Any] = {1: _migrate_1_to_2, 2: _migrate_2_to_3, 3: _migrate_3_to_4, 4: _migrate_4_to_5}


class MatchFileError(Exception):
    """A match file that cannot be used. It is reported and left exactly as it is."""


class NotAMatchFile(MatchFileError):
    """Not SQLite, or SQLite that is not an Arbiter match file."""


class NewerSchema(MatchFileError):
    """Written by a newer Arbiter: this version must not touch it."""


class OlderSchema(MatchFileError):
    """Written by an older Arbiter: it can be read once a writer has migrated it."""


class CorruptFile(MatchFileError):
    """SQLite says the file is damaged, or it lacks what every match file has, or it holds what
    Arbiter never writes (a JSON column that is not JSON, a log entry of the wrong shape or type)."""


# What `json.loads`, and unpacking what it returned, raise on damaged content that SQLite itself
# accepts (text that is not JSON, a value of the wrong type, an array of the wrong length, JSON
# nested too deep): the readers below turn it into `CorruptFile`, naming what is damaged.
DAMAGED_CONTENT = (ValueError, TypeError, RecursionError)


# The match row's columns that readers compute with: (index in `MatchStore.meta`'s row, name, types).
_META_CHECKED = ((4, "seed", (int,)), (5, "tick_rate", (int,)), (6, "snapshot_every", (int,)), (9, "tick", (int,)),
                 (10, "created_at", (float, int)), (11, "updated_at", (float, int)))


class StorageUnavailable(MatchFileError):
    """The storage refuses what the file needs, through no fault of the file: a full disk, a
    read-only file or directory, missing permissions, an I/O error. It may work again later."""


# SQLite's primary result codes that mean "the storage refused", not "the file is damaged".
_STORAGE_CODES = {3: "SQLITE_PERM", 5: "SQLITE_BUSY", 6: "SQLITE_LOCKED", 8: "SQLITE_READONLY", 10: "SQLITE_IOERR",
                  13: "SQLITE_FULL", 14: "SQLITE_CANTOPEN", 15: "SQLITE_PROTOCOL", 23: "SQLITE_AUTH"}


def is_storage_error(error: BaseException) -> bool:
    """Whether an SQLite or OS error is the storage's (full, read-only, I/O...), not damage in the file."""
    if isinstance(error, (OSError, StorageUnavailable)):
        return True
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.Error) and code is not None and code & 0xFF in _STORAGE_CODES


def file_error(path: Path, error: sqlite3.Error | OSError, doing: str = "damaged") -> MatchFileError:
    """The `MatchFileError` an SQLite or OS error means: `StorageUnavailable` if the storage refused,
    else `CorruptFile` (described as `doing`)."""
    if is_storage_error(error):
        return StorageUnavailable(f"{path}: storage error ({error})")
    return CorruptFile(f"{path}: {doing} ({error})")


class MatchExists(MatchFileError):
    """A file for this match id is already there."""


@attrs.frozen
class MatchMeta:
    match_id: str
    game: str
    game_version: str
    params: Any  # unstructured (JSON-able)
    seed: int
    tick_rate: int
    snapshot_every: int
    status: str
    status_reason: str | None
    tick: int
    created_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    result: Any
    next_alarm_at: float | None = None
    code_fingerprint: str | None = None  # of the game's code at creation (None: created before schema 4)
    labels: dict[str, str] = attrs.field(factory=dict)  # set at creation, for listing (queue, private...)


def match_path(data_dir: Path, match_id: str) -> Path:
    return data_dir / "matches" / f"{match_id}{SUFFIX}"


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    target = f"{path.resolve().as_uri()}?mode=ro" if read_only else path
    conn = sqlite3.connect(target, uri=read_only, isolation_level=None, check_same_thread=False,
                           cached_statements=STATEMENTS_KEPT)
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def checkpoint(path: Path) -> None:
    """Copy a live match's WAL into its file, from a connection of our own (PASSIVE: it never
    waits for the match's writer, and the writer never waits for it). Run in a worker thread, and
    see `MatchStore.restarts_wal`."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


def _check_header(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version, after checking that it is an Arbiter match file."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as error:
        if is_storage_error(error):
            raise file_error(path, error) from error
        raise NotAMatchFile(f"{path}: not an SQLite database ({error})") from error
    if app_id != APPLICATION_ID:
        raise NotAMatchFile(f"{path}: an SQLite file, but not an Arbiter match file")
    if version > SCHEMA_VERSION:
        raise NewerSchema(f"{path}: schema version {version} is newer than this Arbiter's "
                          f"{SCHEMA_VERSION}; upgrade Arbiter to open it")
    if version < 1:
        raise CorruptFile(f"{path}: schema version {version} is not a valid version")
    return version


class MatchStore:
    """An open match file. Not thread-safe: one caller at a time (the actor, or a thread it awaits)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, *, read_only: bool,
                 synchronous_after_first_write: str | None = None):
        self.conn = conn
        self.path = path
        self.read_only = read_only
        # Set while the connection runs at synchronous = OFF until its first write (see `open`).
        self._synchronous_after_first_write = synchronous_after_first_write
        # The write after a complete `checkpoint` starts the WAL over and syncs its new header: from
        # the start of a checkpoint (`checkpointed_elsewhere`) until a write that began after it ended,
        # `restarts_wal` is set, and the actor makes its commits in a worker thread.
        self._checkpointing = False
        self.restarts_wal = False

    # -- opening and creating ---------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, meta: MatchMeta, snapshot: Snapshot, *, kv: dict[str, Any] | None = None,
               alarms: list[Alarm] | None = None, synchronous: str = "NORMAL") -> MatchStore:
        """Create the file for a new match (with what `init` put in the key-value store, at tick 0).
        Raises `MatchExists` rather than overwrite."""
        if path.exists():
            raise MatchExists(f"{path} exists")
        staging = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}{STAGING_SUFFIX}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            cls._build(staging, meta, snapshot, kv, alarms)
            _fsync(staging)  # the file's contents are on disk before its name is
            os.link(staging, path)  # fails if `path` appeared meanwhile: never overwrite
        except FileExistsError as error:
            raise MatchExists(f"{path} exists") from error
        except (sqlite3.Error, OSError) as error:
            raise StorageUnavailable(f"{path}: cannot create the file: storage error ({error})") from error
        finally:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{staging}{suffix}").unlink(missing_ok=True)
        try:
            _fsync(path.parent)  # and the name too
        except OSError as error:
            raise StorageUnavailable(f"{path}: cannot sync its directory: storage error ({error})") from error
        return cls.open(path, synchronous=synchronous)

    @classmethod
    def _build(cls, staging: Path, meta: MatchMeta, snapshot: Snapshot, kv: dict[str, Any] | None,
               alarms: list[Alarm] | None) -> None:
        """Write a new match's file at a name nobody else uses."""
        conn = _connect(staging, read_only=False)
        try:
            # Nobody can see the staged file: no syncs while building it (an SQLite sync per
            # migration step and commit would be a dozen), one fsync of the whole file below.
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.executescript(f"BEGIN; {_SCHEMA_V1} PRAGMA user_version = 1; COMMIT;")
            _migrate(conn, 1)
            conn.execute("BEGIN")
            conn.execute(
                "INSERT INTO match (only, match_id, game, game_version, params, seed, tick_rate,"
                " snapshot_every, status, status_reason, tick, created_at, updated_at, started_at,"
                " ended_at, result, code_fingerprint, labels) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (meta.match_id, meta.game, meta.game_version, _json(meta.params), meta.seed,
                 meta.tick_rate, meta.snapshot_every, meta.status, meta.status_reason, meta.tick,
                 meta.created_at, meta.updated_at, meta.started_at, meta.ended_at, _json(meta.result),
                 meta.code_fingerprint, _json(meta.labels)),
            )
            cls._insert_snapshot(conn, snapshot)
            conn.execute("INSERT INTO steps (tick, checksum) VALUES (?, ?)", (snapshot.tick, snapshot.checksum))
            conn.executemany("INSERT INTO kv (key, tick, value) VALUES (?, ?, ?)",
                             [(key, snapshot.tick, _json(value)) for key, value in (kv or {}).items()])
            cls._write_alarms(conn, [(a.name, a) for a in alarms or []])
            conn.execute("UPDATE match SET next_alarm_at = ?", (alarm_math.earliest(alarms or []),))
            conn.execute("COMMIT")
        finally:
            conn.close()  # checkpoints and removes the WAL: the staged file is complete alone

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False, synchronous: str = "NORMAL",
             check: bool = True) -> MatchStore:
        """Open an existing match file; migrate an older schema (not when read-only)."""
        if not path.is_file():
            raise MatchFileError(f"{path}: no such file")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous is NORMAL or FULL")
        try:
            with path.open("rb") as handle:
                header = handle.read(16)
        except OSError as error:
            raise MatchFileError(f"{path}: cannot read ({error})") from error
        if header != b"SQLite format 3\x00":
            raise NotAMatchFile(f"{path}: not an SQLite database")
        try:
            conn = _connect(path, read_only=read_only)
        except sqlite3.Error as error:
            raise StorageUnavailable(f"{path}: cannot open ({error})") from error
        try:
            version = _check_header(conn, path)
            if check:
                verdict = conn.execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    raise CorruptFile(f"{path}: damaged ({verdict})")
            if version < SCHEMA_VERSION:
                if read_only:
                    raise OlderSchema(f"{path}: schema version {version} needs a migration; "
                                      "open it with a running node first")
                _migrate(conn, version)
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            first_write_unsynced = False
            if not read_only:
                # A new WAL's first write syncs its header and its directory: about 1 ms that a woken
                # match would spend before its first state frame. With the WAL absent or empty there is
                # no older frame that an unsynced header could let a crash replay, so that write runs
                # at synchronous = OFF, which loses nothing NORMAL keeps (NORMAL syncs no commit; the
                # WAL is synced before any checkpoint copies it). FULL keeps every sync.
                first_write_unsynced = synchronous == "NORMAL" and _wal_is_empty(path)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute(f"PRAGMA synchronous = {'OFF' if first_write_unsynced else synchronous}")
                conn.execute("PRAGMA wal_autocheckpoint = 0")  # see CHECKPOINT_EVERY_COMMITS
            store = cls(conn, path, read_only=read_only,
                        synchronous_after_first_write=synchronous if first_write_unsynced else None)
            store.meta()  # every match file has its match row
        except sqlite3.DatabaseError as error:
            conn.close()
            raise file_error(path, error) from error
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        try:
            self._restore_synchronous()  # closing checkpoints: at OFF it would not sync
        finally:
            self.conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with transaction(self.conn) as conn:
                yield conn
            self._wrote()
        finally:
            self._restore_synchronous()

    @contextmanager
    def checkpointed_elsewhere(self) -> Iterator[None]:
        """Around a `checkpoint` of this file from another connection (see `restarts_wal`)."""
        self.restarts_wal = self._checkpointing = True
        try:
            yield
        finally:
            self._checkpointing = False

    def _wrote(self) -> None:
        if not self._checkpointing:
            self.restarts_wal = False

    def _restore_synchronous(self) -> None:
        if self._synchronous_after_first_write is not None:
            synchronous, self._synchronous_after_first_write = self._synchronous_after_first_write, None
            self.conn.execute(f"PRAGMA synchronous = {synchronous}")

    # -- reading ------------------------------------------------------------------------------

    def meta(self) -> MatchMeta:
        row = self.conn.execute(
            "SELECT match_id, game, game_version, params, seed, tick_rate, snapshot_every, status,"
            " status_reason, tick, created_at, updated_at, started_at, ended_at, result, next_alarm_at,"
            " code_fingerprint, labels FROM match"
        ).fetchone()
        if row is None:
            raise CorruptFile(f"{self.path}: the match row is missing")
        values = list(row)
        for i, name, types in _META_CHECKED:
            if type(values[i]) not in types:
                raise self._damaged(f"match.{name} is {type(values[i]).__name__}, not {types[0].__name__}")
        if values[6] < 1:
            raise self._damaged(f"match.snapshot_every is {values[6]}, not 1 or more")
        # The match row is written when the match changes status, not at every step: the last
        # completed step says how far it got, and when.
        last = self.conn.execute(
            "SELECT tick, at FROM steps WHERE checksum IS NOT NULL ORDER BY tick DESC LIMIT 1").fetchone()
        if last is not None and last[0] > values[9]:
            values[9] = last[0]
            if type(last[1]) is float and last[1] > values[11]:  # (REAL: NULL at tick 0, a float after)
                values[11] = last[1]
        values[3] = self._json_column(values[3], "match.params")
        values[14] = self._json_column(values[14], "match.result") if values[14] is not None else None
        values[17] = self._json_column(values[17], "match.labels")
        if type(values[17]) is not dict:
            raise self._damaged("match.labels is not a JSON object")
        return MatchMeta(*values)

    def _damaged(self, what: str, error: BaseException | None = None) -> CorruptFile:
        return CorruptFile(f"{self.path}: damaged: {what}" + (f" ({type(error).__name__}: {error})" if error else ""))

    @contextmanager
    def _reading(self, what: Callable[[], str]) -> Iterator[None]:
        """Damaged content met inside (DAMAGED_CONTENT) raises CorruptFile saying `what()` is damaged
        (a function: asked only then, so that it can name the row reached)."""
        try:
            yield
        except DAMAGED_CONTENT as error:
            raise self._damaged(what(), error) from None

    def _json_column(self, text: Any, what: str) -> Any:
        with self._reading(lambda: f"{what} is not JSON"):
            return json.loads(text)

    def latest_snapshot(self, at_or_before: int | None = None) -> Snapshot:
        sql = "SELECT tick, state, checksum, seated, last_seq, started, timers, roster FROM snapshots"
        args: tuple = ()
        if at_or_before is not None:
            sql += " WHERE tick <= ?"
            args = (at_or_before,)
        row = self.conn.execute(sql + " ORDER BY tick DESC LIMIT 1", args).fetchone()
        if row is None:
            raise CorruptFile(f"{self.path}: no snapshot")
        seated, last_seq, timers = (self._json_column(row[i], f"snapshots.{name} at tick {row[0]}")
                                    for i, name in ((3, "seated"), (4, "last_seq"), (6, "timers")))
        roster = self._json_column(row[7], f"snapshots.roster at tick {row[0]}") if row[7] is not None else None
        if not (type(row[1]) is str and type(row[2]) is int and type(seated) is list and type(last_seq) is dict
                and type(timers) is dict and (roster is None or type(roster) is list)):
            raise self._damaged(f"the snapshot at tick {row[0]} has a column of the wrong type")
        return Snapshot(row[0], row[1], row[2], seated, last_seq, bool(row[5]), timers, roster)

    def commands_after(self, tick: int, until: int | None = None) -> Iterator[tuple[int, list[Command]]]:
        """(tick, commands) for every tick after `tick` that has commands, in order."""
        sql = "SELECT tick, commands FROM steps WHERE tick > ? AND commands IS NOT NULL"
        args: tuple = (tick,)
        if until is not None:
            sql += " AND tick <= ?"
            args = (tick, until)
        loads, make, kinds = json.loads, make_command, _KINDS
        decoded: dict[str, Any] = {}  # an input's JSON text -> its decoded object, for flat objects (they repeat)
        known = decoded.get
        t = tick
        # Damaged content (not JSON, not what `_command_json` writes, a data that is not JSON text) raises
        # in the loop: caught around it, so a sound row costs a type check per field and nothing more.
        with self._reading(lambda: f"steps.commands at tick {t} is not an array of [kind, player, seq, data] "
                                   "as Arbiter writes them"):
            for t, text in self.conn.execute(sql + " ORDER BY tick", args):
                commands = loads(text)
                if type(commands) is not list or not commands:
                    raise ValueError(_wrong_commands(commands))
                batch = []
                for kind, player, seq, data in commands:
                    # What `_command_json` writes (see `_wrong_commands`). A JSON object or string of 4 members
                    # unpacks too, into str keys or characters: its seq is not an int, so only an array passes.
                    if type(seq) is not int or not 0 <= seq <= MAX_SEQ or type(player) is not str or kind not in kinds:
                        raise ValueError(_wrong_commands(commands))
                    value = known(data)  # None for a null data too
                    if value is None and data is not None:
                        value = loads(data)
                        # Shared between commands only when nothing in it can change: the simulation reads a
                        # command's object and game code gets only its values (an input type is an attrs class).
                        if type(value) is dict and len(decoded) < 4096 and all(
                                type(v) in _IMMUTABLE_JSON for v in value.values()):
                            decoded[data] = value
                    batch.append(make(kind, player, seq, value))
                yield t, batch

    def steps_after(self, tick: int, until: int | None = None) -> dict[int, tuple[int, float, bool]]:
        """tick -> (checksum, time, ticked) for every completed step after `tick`."""
        sql = "SELECT tick, checksum, ifnull(at, 0.0), ticked FROM steps WHERE tick > ? AND checksum IS NOT NULL"
        args: tuple = (tick,)
        if until is not None:
            sql += " AND tick <= ?"
            args = (tick, until)
        steps = {}
        for t, c, at, ticked in self.conn.execute(sql, args):
            # What `commit_step` writes: a signed 64-bit checksum, a time (REAL; a whole one may read
            # back as an INTEGER) and a 0 or 1 (a type check per value: about 1 ms per 36,000 steps).
            if type(c) is not int or (type(at) is not float and type(at) is not int) or (ticked != 0 and ticked != 1):
                raise self._damaged(f"steps at tick {t} has a checksum, time or ticked of the wrong type")
            steps[t] = (c, at, bool(ticked))
        return steps

    def has_step(self, tick: int) -> bool:
        """Whether the log has a row for the step at `tick`, completed or not."""
        return self.conn.execute("SELECT 1 FROM steps WHERE tick = ?", (tick,)).fetchone() is not None

    def alarms(self) -> list[Alarm]:
        rows = self.conn.execute("SELECT name, due, retries, failed, last_error FROM alarms ORDER BY due, name")
        return [Alarm(name, due, retries, bool(failed), error) for name, due, retries, failed, error in rows]

    def logged_inputs(self) -> dict[str, list[list[int]]]:
        """Each player's logged input seqs, as sorted [first, last] ranges of consecutive seqs (read
        through `commands_after`, so a damaged log raises `CorruptFile` here too)."""
        seqs: dict[str, list[int]] = {}
        for _tick, batch in self.commands_after(0):
            for command in batch:
                if command.kind == INPUT:
                    seqs.setdefault(command.player, []).append(command.seq)
        ranges: dict[str, list[list[int]]] = {}
        for player in sorted(seqs):
            runs: list[list[int]] = []
            ranges[player] = runs
            for seq in sorted(seqs[player]):
                if runs and seq <= runs[-1][1] + 1:
                    runs[-1][1] = max(runs[-1][1], seq)
                else:
                    runs.append([seq, seq])
        return ranges

    def kv_at(self, tick: int) -> dict[str, Any]:
        """The key-value store as it was after `tick`."""
        rows = self.conn.execute(
            "SELECT key, value FROM kv AS a WHERE tick = (SELECT MAX(tick) FROM kv AS b"
            " WHERE b.key = a.key AND b.tick <= ?)", (tick,)).fetchall()
        with self._reading(lambda: f"a kv.value at or before tick {tick} is not JSON"):
            return {key: json.loads(value) for key, value in rows if value is not None}

    def events_after(self, tick: int, limit: int = 1000) -> list[tuple[int, str, Any]]:
        rows = self.conn.execute(
            "SELECT tick, kind, data FROM events WHERE tick > ? ORDER BY tick, idx LIMIT ?", (tick, limit))
        return self._events(rows)

    def latest_events_after(self, tick: int, limit: int) -> list[tuple[int, str, Any]]:
        """The newest `limit` events after `tick`, oldest first (what a resuming client needs most)."""
        rows = self.conn.execute(
            "SELECT tick, kind, data FROM events WHERE tick > ? ORDER BY tick DESC, idx DESC LIMIT ?", (tick, limit))
        return self._events(rows)[::-1]

    def _events(self, rows: Iterator[tuple[int, str, str | None]]) -> list[tuple[int, str, Any]]:
        events = []
        t = None
        with self._reading(lambda: f"events.data at tick {t} is not JSON"):
            for t, kind, data in rows:
                events.append((t, kind, json.loads(data) if data is not None else None))
        return events

    def players(self) -> list[tuple[str, int, int | None]]:
        return self.conn.execute(
            "SELECT player_id, joined_tick, left_tick FROM players ORDER BY join_order").fetchall()

    # -- writing ------------------------------------------------------------------------------

    def commit_step(self, record: StepRecord, now: float) -> None:
        """Write everything one tick produced in one transaction."""
        commands = record.commands
        row = (record.tick, record.checksum, record.at, record.ticked,
               _commands_json([_command_json(c.kind, c.player, c.seq, _input_json(c.data))
                               for c in commands]) if commands else None)
        if _only_a_step_row(record) and self._synchronous_after_first_write is None:
            # Most ticks write the step's row and nothing else: one statement is its own transaction
            # (SQLite's autocommit: atomic, rolled back if it fails), without BEGIN and COMMIT
            # (about 5 of 22 us per commit in a harness over 30 arena files).
            if _CRASH_AT is not None:
                _crash_point("commit-before")
            self.conn.execute(_INSERT_STEP, row)
            self._wrote()
            if _CRASH_AT is not None:
                _crash_point("commit-after")
            return
        with self._transaction() as conn:
            if commands:
                self._record_players(record)
            conn.execute(_INSERT_STEP, row)
            completed = record.tick if record.checksum is not None else record.tick - 1
            if record.events:
                conn.executemany(
                    "INSERT INTO events (tick, idx, kind, data) VALUES (?, ?, ?, ?)",
                    [(record.tick, i, kind, _json(data)) for i, (kind, data) in enumerate(record.events)])
            if record.kv_writes:
                conn.executemany(
                    "INSERT OR REPLACE INTO kv (key, tick, value) VALUES (?, ?, ?)",
                    [(key, record.tick, _json(value)) for key, value in record.kv_writes])
            if record.snapshot is not None:
                self._insert_snapshot(conn, record.snapshot)
            if record.alarm_writes:
                self._write_alarms(conn, record.alarm_writes)
                conn.execute("UPDATE match SET next_alarm_at = ?", (record.next_alarm_at,))
            if record.started:  # out of the lobby: the file says so too (a reader may never activate it)
                conn.execute("UPDATE match SET started_at = COALESCE(started_at, ?),"
                             " status = CASE status WHEN ? THEN ? ELSE status END", (now, LOBBY, RUNNING))
            if record.status is not None:  # (the match row's tick otherwise: see `meta`)
                self._set_status(record.status, record.status_reason, record.result, now, tick=completed)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        with self._transaction() as conn:
            self._insert_snapshot(conn, snapshot)

    def connections(self) -> list[tuple[int, str, str, Any, float]]:
        rows = self.conn.execute(
            "SELECT conn_id, player_id, role, attachment, connected_at FROM connections ORDER BY conn_id")
        with self._reading(lambda: "a connections.attachment is not JSON"):
            return [(i, p, r, json.loads(a) if a is not None else None, at) for i, p, r, a, at in rows]

    def write_alarms(self, writes: list[tuple[str, Alarm | None]], next_alarm_at: float | None, *,
                     connections_added: Sequence[tuple] = (), connections_removed: Sequence[int] = ()) -> None:
        """Set or delete runtime alarms outside a step (a drop, a reconnect, a failed attempt), and
        record what changed in the open connections, in one transaction: `connections_added` are rows
        (`Connection.row()`) inserted or replaced by their conn_id, `connections_removed` conn_ids
        deleted. The cost is the changes', not the table's: a join costs the same with 1 or 1,000
        connections open."""
        with self._transaction() as conn:
            self._write_alarms(conn, writes)
            conn.execute("UPDATE match SET next_alarm_at = ?", (next_alarm_at,))
            if connections_removed:
                conn.executemany("DELETE FROM connections WHERE conn_id = ?", [(i,) for i in connections_removed])
            if connections_added:
                conn.executemany("INSERT OR REPLACE INTO connections (conn_id, player_id, role, attachment, "
                                 "connected_at) VALUES (?, ?, ?, ?, ?)",
                                 [(i, p, r, _json(a), at) for i, p, r, a, at in connections_added])

    def set_status(self, status: str, reason: str | None, now: float, result: Any = None) -> None:
        with self._transaction():
            self._set_status(status, reason, result, now)

    def _set_status(self, status: str, reason: str | None, result: Any, now: float, tick: int | None = None) -> None:
        fields = ["status = ?", "status_reason = ?", "updated_at = ?"]
        args: list[Any] = [status, reason, now]
        if tick is not None:
            fields.append("tick = ?")
            args.append(tick)
        if status == RUNNING:
            fields.append("started_at = COALESCE(started_at, ?)")
            args.append(now)
        if status in FINISHED:
            fields += ["ended_at = ?", "result = ?"]
            args += [now, _json(result)]
        self.conn.execute(f"UPDATE match SET {', '.join(fields)}", args)

    def _record_players(self, record: StepRecord) -> None:
        for command in record.commands:
            if command.kind == "join":
                order = self.conn.execute("SELECT COUNT(*) FROM players").fetchone()[0]
                self.conn.execute(
                    "INSERT INTO players (player_id, join_order, joined_tick) VALUES (?, ?, ?)"
                    " ON CONFLICT (player_id) DO UPDATE SET left_tick = NULL",
                    (command.player, order, record.tick))
            elif command.kind == "leave":
                self.conn.execute("UPDATE players SET left_tick = ? WHERE player_id = ?",
                                  (record.tick, command.player))

    @staticmethod
    def _insert_snapshot(conn: sqlite3.Connection, snapshot: Snapshot) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO snapshots (tick, state, checksum, seated, last_seq, started, timers, roster)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (snapshot.tick, snapshot.state, snapshot.checksum, _json(snapshot.seated), _json(snapshot.last_seq),
             snapshot.started, _json(snapshot.timers), _json(snapshot.roster)))

    @staticmethod
    def _write_alarms(conn: sqlite3.Connection, writes: list[tuple[str, Alarm | None]]) -> None:
        for name, alarm in writes:
            if alarm is None:
                conn.execute("DELETE FROM alarms WHERE name = ?", (name,))
            else:
                conn.execute("INSERT OR REPLACE INTO alarms (name, due, retries, failed, last_error) "
                             "VALUES (?, ?, ?, ?, ?)", (name, alarm.due, alarm.retries, alarm.failed, alarm.last_error))


def _wal_is_empty(path: Path) -> bool:
    """Whether the match file's WAL is absent or holds no frame (shorter than its 32-byte header)."""
    try:
        return (path.parent / (path.name + "-wal")).stat().st_size < 32
    except FileNotFoundError:
        return True


_INSERT_STEP = "INSERT INTO steps (tick, checksum, at, ticked, commands) VALUES (?, ?, ?, ?, ?)"


def _only_a_step_row(record: StepRecord) -> bool:
    """Whether committing `record` writes the `steps` row alone (see commit_step)."""
    return not (record.events or record.kv_writes or record.snapshot is not None or record.alarm_writes
                or record.started or record.status is not None
                or any(c.kind == "join" or c.kind == "leave" for c in record.commands))


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed if the block completes, rolled back if anything raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        if _CRASH_AT is not None:
            _crash_point("commit-before")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if _CRASH_AT is not None:
        _crash_point("commit-after")


# TEST ONLY: the crash-safety fault suite (tools/faults_crash.py) sets ARBITER_TEST_CRASH_AT=POINT:N
# in the environment of the `arbiter up` it starts, and the process (the server, or one of its
# workers) SIGKILLs itself the Nth time one of its write transactions reaches POINT: "commit-before"
# (every statement done, COMMIT not run) or "commit-after" (committed, nothing about it sent yet);
# the suite then kills the rest of the server. Unset (always, outside that suite): off.
_CRASH_AT = os.environ.get("ARBITER_TEST_CRASH_AT") or None
_crash_counts: dict[str, int] = {}


def _crash_point(point: str) -> None:
    wanted, _, nth = (_CRASH_AT or "").partition(":")
    if point != wanted:
        return
    _crash_counts[point] = _crash_counts.get(point, 0) + 1
    if _crash_counts[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _json(value: Any) -> str | None:
    return None if value is None else encode(value).decode()


_input_json_cache: dict[tuple, str] = {}


_IMMUTABLE_JSON = (str, int, float, bool, type(None))
_names_json: dict[str, str] = {}  # a command's kind or player -> its JSON
_data_literals: dict[str, str] = {}  # an input's JSON text -> that text as a JSON string


def _command_json(kind: str, player: str, seq: int, data_json: str | None) -> str:
    """One command of a step's `commands` array; `data_json` is its data already as JSON text."""
    if data_json is None:
        literal = "null"
    else:
        literal = _data_literals.get(data_json)
        if literal is None:
            literal = json.dumps(data_json, ensure_ascii=False)
            if len(data_json) <= 256:
                if len(_data_literals) >= 4096:
                    _data_literals.clear()
                _data_literals[data_json] = literal
    names = _names_json
    kind_json = names.get(kind)
    if kind_json is None:
        kind_json = names[kind] = json.dumps(kind, ensure_ascii=False)
    player_json = names.get(player)
    if player_json is None:
        if len(names) >= 4096:
            names.clear()
        player_json = names[player] = json.dumps(player, ensure_ascii=False)
    return f"[{kind_json},{player_json},{int(seq)},{literal}]"


def _commands_json(commands: list[str]) -> str:
    return f"[{','.join(commands)}]"


# What a step's `commands` holds, as `commit_step` writes it, checked by `commands_after`: a non-empty
# array (a step without commands has NULL) of [kind, player, seq, data], with a kind of the
# simulation's, a player id string, a seq from 0 (joins, leaves, alarms) to the protocol's MAX_SEQ (a
# client's inputs, from 1), and the data as JSON text or null (any JSON value once decoded).
_KINDS = (INPUT, *(kind for kind in KINDS if kind != INPUT))  # the kind logged most, first: one comparison


def _wrong_commands(commands: Any) -> str:
    """What is wrong in a step's decoded `commands`, which `commands_after` refused (for CorruptFile's
    message): the first thing that is not what `commit_step` writes."""
    if type(commands) is not list:
        return f"{_shown(commands)}, not an array"
    if not commands:
        return "an empty array"
    for i, command in enumerate(commands):
        if type(command) is not list or len(command) != 4:
            return f"command {i} is {_shown(command)}, not [kind, player, seq, data]"
        kind, player, seq, _data = command
        if type(seq) is not int or not 0 <= seq <= MAX_SEQ:
            return f"command {i}'s seq is {_shown(seq)}, not an integer from 0 to {MAX_SEQ}"
        if type(player) is not str:
            return f"command {i}'s player is {_shown(player)}, not a string"
        if kind not in KINDS:
            return f"command {i}'s kind is {_shown(kind)}, not one of {', '.join(KINDS)}"
    return "a command of the wrong shape"


def _shown(value: Any) -> str:
    """A decoded JSON value, as JSON (cut at 60 characters) with its Python type."""
    text = json.dumps(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


def _input_json(data: Any) -> str | None:
    """An input's data as JSON. Players send the same few inputs again and again (a direction, a
    move): a flat object of scalars is encoded once and looked up after that (`canonical.flat_key`:
    1, 1.0, True, 0.0 and -0.0 are different keys). The cache is emptied at 4,096 entries."""
    if type(data) is not dict:
        return _json(data)
    try:
        key = flat_key(data)
        found = _input_json_cache.get(key)
    except TypeError:  # a list or an object inside: not a key
        return _json(data)
    if found is None:
        found = _json(data)
        if len(_input_json_cache) >= 4096:
            _input_json_cache.clear()
        _input_json_cache[key] = found
    return found


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    while version < SCHEMA_VERSION:
        with transaction(conn):
            MIGRATIONS[version](conn)
            version += 1
            conn.execute(f"PRAGMA user_version = {version}")


def failed_alarms(data_dir: Path, skip: set[str] = frozenset(),
                  owns: Callable[[str], bool] | None = None) -> list[tuple[str, Alarm]]:
    """(match id, alarm) for every failed alarm in the data directory's match files, read-only
    (only in the files whose match id `owns` accepts, if given)."""
    found: list[tuple[str, Alarm]] = []
    for path in sorted((data_dir / "matches").glob(f"*{SUFFIX}")):
        if path.stem in skip or (owns is not None and not owns(path.stem)):
            continue
        try:
            store = MatchStore.open(path, read_only=True, check=False)
        except MatchFileError:
            continue  # reported by scan() and activation
        try:
            found += [(path.stem, a) for a in store.alarms() if a.failed]
        except sqlite3.DatabaseError:
            continue
        finally:
            store.close()
    return found


def scan(data_dir: Path, owns: Callable[[str], bool] | None = None) -> tuple[list[MatchMeta], list[tuple[Path, str]]]:
    """Every match file's metadata, and the files that could not be read with the reason (only the
    files whose name, less the suffix, `owns` accepts, if given: the others are not opened). A file
    of an older schema is migrated (the node scans at start, so after an upgrade every file is)."""
    found: list[MatchMeta] = []
    broken: list[tuple[Path, str]] = []
    folder = data_dir / "matches"
    if not folder.is_dir():
        return found, broken
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        if owns is not None and not owns(path.stem):
            continue
        try:
            try:
                store = MatchStore.open(path, read_only=True, check=False)
            except OlderSchema:  # written before an upgrade: migrated now, once
                MatchStore.open(path, check=False).close()
                store = MatchStore.open(path, read_only=True, check=False)
        except MatchFileError as error:
            broken.append((path, str(error)))
            continue
        try:
            found.append(store.meta())
        except (MatchFileError, sqlite3.DatabaseError) as error:
            broken.append((path, str(error)))
        finally:
            store.close()
    return found, broken
