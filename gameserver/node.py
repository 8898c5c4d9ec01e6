"""A node: the match actors of one process, their files, and activation on demand.

Exactly one live actor per match id: concurrent first accesses wait for one activation. On start
the node scans its data directory and knows every unfinished match; an actor activates when a
connection (later an alarm) needs it, by loading its latest snapshot and re-simulating the
logged commands after it (in a worker thread, so other matches keep their tick timing). A file
that is damaged, not a match file, or from a newer schema is reported and skipped, never written.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import attrs
import trio

from . import canonical, memory, shards, storage
from .actor import Actor, InboxItem, MatchNotice, RosterChange, describe_match
from .alarms import RETENTION, Alarm
from .connection import Connection
from .protocol import CLOSE_GOING_AWAY
from .scheduler import AlarmScheduler
from .stalls import StallWatch
from .tokens import PLAYER
from .config import NodeConfig
from .game import Game, check_game_class
from .ids import InvalidId, check_match_id, match_id_from_name, new_match_id
from .metrics import Metrics
from .recovery import create_match_file, restore
from .simulation import GameCrashed, Simulation, exception_text
from .storage import FINISHED, MatchFileError, MatchMeta, MatchStore

log = logging.getLogger("arbiter.node")
STORAGE_RETRY_S = 5.0  # a match whose file the storage refused is tried again this long after


class NodeError(Exception):
    """An answer for the caller: `code` is stable, the message is safe to show."""

    code = "node_error"


class UnknownGame(NodeError):
    code = "unknown_game"


class InvalidParams(NodeError):
    code = "invalid_params"


class MatchNotFound(NodeError):
    code = "match_not_found"


class MatchUnavailable(NodeError):
    """The match's file cannot be used (damaged, newer schema, diverged). It is left as it is."""

    code = "match_unavailable"


class MatchStorageUnavailable(MatchUnavailable):
    """The storage refuses the match's file now (a full disk, a read-only data directory, an I/O
    error): the file is not damaged, and the match is tried again later (clients: 1013)."""

    code = "storage_unavailable"


class MatchFailed(MatchUnavailable):
    """The match failed while it ran (its storage failed, or its file turned out damaged): it is
    over for this node (clients: 4012)."""


class WrongWorker(MatchNotFound):
    """The match belongs to another worker of this server (`arbiter up --workers N`): the client used
    a WebSocket URL that is not its match's, or the number of workers changed since it got it."""

    code = "wrong_worker"


class StorageFailed(NodeError):
    """The storage refused a write (a full disk, a read-only data directory, an I/O error): try
    again later. Nothing was created or changed."""

    code = "storage_unavailable"


class NodeClosing(NodeError):
    """The node is shutting down: try again in a moment (on this node after a restart, or another)."""

    code = "node_closing"


class MatchOver(NodeError):
    code = "match_over"


class NameTaken(NodeError):
    code = "name_taken"


@attrs.frozen
class MatchSummary:
    """What a listing shows of a match."""

    match_id: str
    game: str
    status: str
    players: int  # seated now
    max_players: int
    labels: dict[str, str]
    created_at: float


@attrs.frozen
class BrokenFile:
    path: str
    reason: str


class Node:
    def __init__(self, config: NodeConfig, games: dict[str, type[Game]], *, metrics: Metrics | None = None,
                 wall_clock: Callable[[], float] = time.time, offload: bool = True, freeze_gc: bool = False,
                 watch_stalls: bool = False):
        """`offload`: load and create match files in worker threads, so that other matches keep
        their timing (the default). Tests under MockClock turn it off: the mock clock would jump
        ahead while a thread works. `freeze_gc`: after hibernations and after the collector's own full
        passes, freeze what survives (memory.Collector), so that its next full passes skip it; it changes the
        whole process's collector, so only a server process (`arbiter up`) asks for it. `watch_stalls`:
        log the event loop's stalls longer than `config.stall_log_s` with what was running
        (stalls.StallWatch); a server process asks for it."""
        for name, cls in games.items():
            check_game_class(cls)
            if name != cls.name:  # files record cls.name: a match made here must be found here again
                raise TypeError(f"the game {cls.__name__} is named {cls.name!r}, not {name!r}")
        self.config = config
        self.games: dict[str, Game] = {name: cls() for name, cls in games.items()}
        self.metrics = metrics or Metrics()
        self.wall_clock = wall_clock
        self.actors: dict[str, Actor] = {}
        self.unfinished: dict[str, MatchMeta] = {}
        self.broken: dict[str, BrokenFile] = {}
        self.failed: dict[str, str] = {}  # match id -> why, for matches that failed since start (storage errors)
        self.hibernated: dict[str, list[Connection]] = {}  # match id -> its open connections, kept for it
        self._activating: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.scheduler = AlarmScheduler(wall_clock, self._alarm_due, lead_s=config.alarm_wake_ahead_s)
        self._offload = trio.to_thread.run_sync if offload else _run_inline
        self._trim_pending = False
        self.collector = memory.Collector() if freeze_gc else None
        self._stall_watch = (StallWatch(config.stall_log_s, self.metrics.loop_stalls.observe)
                             if watch_stalls and config.stall_log_s > 0 else None)
        self._en_route: dict[str, int] = {}  # messages between node.submit and an actor's inbox
        self.listeners: list[Callable[[MatchNotice], None]] = []  # told when matches finish or lose players
        self._last_seen: dict[str, MatchSummary] = {}  # matches not in memory, as their actor left them
        self.closing = False
        self._checkpointing: set[Path] = set()  # match files whose WAL is being checkpointed
        self._checkpoint_limiter = trio.CapacityLimiter(1)

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    def owns(self, match_id: str) -> bool:
        """Whether this node serves `match_id` (always, unless it is one worker of several)."""
        return self.config.workers == 1 or shards.owner(match_id, self.config.workers) == self.config.worker

    def _check_owned(self, match_id: str) -> None:
        if not self.owns(match_id):
            raise WrongWorker(f"match {match_id} is served by worker {shards.owner(match_id, self.config.workers)}, "
                              f"not by this one ({self.config.worker} of {self.config.workers}): ask the HTTP API "
                              f"for the match's ws_url")

    async def run(self, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        (self.data_dir / "matches").mkdir(parents=True, exist_ok=True)
        owns = None if self.config.workers == 1 else self.owns
        await self._offload(remove_stale_staging, self.data_dir, owns)
        found, broken = await self._offload(storage.scan, self.data_dir, owns)
        for meta in found:
            if meta.status not in FINISHED:
                self.unfinished[meta.match_id] = meta
            if meta.next_alarm_at is not None:  # alarms that came due while the node was down fire at once
                self.scheduler.set(meta.match_id, meta.next_alarm_at)
        for path, reason in broken:
            self._report_broken(path, reason)
        log.info("data directory %s: %d unfinished matches, %d unusable files",
                 self.data_dir, len(self.unfinished), len(self.broken))
        if self.collector is not None:
            self.collector.watch(trio.lowlevel.current_trio_token().run_sync_soon, trio.current_time)
        if self._stall_watch is not None:
            self._stall_watch.start()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.scheduler.run)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            if self.collector is not None:
                self.collector.unwatch()
            if self._stall_watch is not None:
                self._stall_watch.stop()

    async def shutdown(self) -> None:
        """Stop every actor: each finishes its step, closes its connections with 1001 and leaves;
        the connections of hibernated matches are closed with 1001 too."""
        self.closing = True
        actors = list(self.actors.values())
        for actor in actors:
            actor.stop()
        for actor in actors:
            await actor.finished.wait()
        for connections in self.hibernated.values():
            for conn in connections:
                conn.close(CLOSE_GOING_AWAY, "server shutting down")
        self.hibernated.clear()
        self.metrics.hibernated.set(0)

    # -- what connections call ----------------------------------------------------------------

    def submit_nowait(self, match_id: str, item: InboxItem) -> bool:
        """Deliver a message at once to a match that is live here and has room in its inbox (the
        common case: a player's input); False if that cannot be done now, and `submit` must."""
        if self.closing:
            return False
        actor = self.actors.get(match_id)
        return actor is not None and actor.submit_nowait(item)

    async def submit(self, match_id: str, item: InboxItem) -> bool:
        """Deliver a message to a match, waking it if it hibernated. False: refused (inbox full for
        too long, or the match is over); NodeError if the match cannot be reached at all.

        While a message is on its way here, the match does not hibernate (`en_route`): a match woken
        by a message always receives it, however busy the node."""
        self._en_route[match_id] = self._en_route.get(match_id, 0) + 1
        try:
            for _ in range(3):
                actor = await self.actor(match_id)
                if await actor.submit(item):
                    return True
                if actor.over or not actor.finished.is_set():
                    return False  # over, or alive with a full inbox: the sender is refused
                # it stopped between our lookup and the delivery (a shutdown): look again
            return False
        finally:
            left = self._en_route[match_id] - 1
            if left:
                self._en_route[match_id] = left
            else:
                del self._en_route[match_id]

    async def change_roster(self, match_id: str, players: list[str], *, release: bool = False) -> list[str]:
        """Hold seats for `players` in a matchmade match (a backfill), or give back held seats they
        did not take (`release`); returns the roster once the change is committed. NodeError if
        the match cannot take it (over, unknown, or its inbox stayed full)."""
        item = RosterChange(tuple(players), release)
        if not await self.submit(match_id, item):
            raise MatchOver(f"match {match_id} cannot change its roster now")
        await item.done.wait()
        actor = self.actors.get(match_id)
        if actor is None or actor.over or actor.sim.roster is None:
            raise MatchOver(f"match {match_id} is over or has no roster")
        return list(actor.sim.roster)

    def en_route(self, match_id: str) -> bool:
        """Whether a message for `match_id` is on its way to its actor."""
        return match_id in self._en_route

    def disconnected(self, match_id: str, conn: Connection) -> None:
        """A connection closed. Its match is told (woken if it hibernated, to start the player's
        reconnect grace). Never blocks."""
        actor = self.actors.get(match_id)
        if actor is not None and not actor.finished.is_set():
            actor.disconnected(conn)
            return
        held = self.hibernated.get(match_id)
        if held is not None and conn in held:
            held.remove(conn)
            if self._nursery is not None and not self.closing:
                self._nursery.start_soon(self._wake, match_id)

    async def _wake(self, match_id: str) -> None:
        try:
            await self.actor(match_id)
        except NodeError as error:
            log.info("match %s not woken: %s", match_id, error)
        except Exception:  # a task of the node's own: whatever it was, the node goes on
            log.exception("match %s not woken", match_id)

    async def _alarm_due(self, match_id: str) -> None:
        """The scheduler says an alarm of `match_id` is due."""
        try:
            await self._deliver_alarm(match_id)
        except Exception:  # a task of the node's own (in the scheduler's nursery): the node goes on
            log.exception("the alarm of match %s was not delivered", match_id)

    async def _deliver_alarm(self, match_id: str) -> None:
        actor = self.actors.get(match_id)
        if actor is not None and not actor.finished.is_set():
            actor.poke()
            return
        if self.closing or match_id in self._activating:
            return
        if match_id in self.unfinished:
            await self._wake(match_id)  # it handles its due alarms as it starts (or is over: MatchOver)
            return
        path = storage.match_path(self.data_dir, match_id)
        try:
            meta, _players, alarms = await self._read_file(path, with_alarms=True)
        except NodeError as error:
            log.info("alarm of %s not delivered: %s", match_id, error)
            return
        now = self.wall_clock()
        if meta.status in FINISHED:
            if any(a.name == RETENTION and not a.failed and a.due <= now for a in alarms):
                await self._retire(match_id, path)
            elif meta.next_alarm_at is not None:
                self.scheduler.set(match_id, meta.next_alarm_at, exact=True)  # woken ahead: now at the time
        elif meta.next_alarm_at is None:
            return  # handled or deleted since it was scheduled: nothing to wake for
        elif meta.next_alarm_at > now + self.scheduler.lead_s:
            self.scheduler.set(match_id, meta.next_alarm_at)  # moved since it was scheduled
        else:
            await self._wake(match_id)

    async def _retire(self, match_id: str, path: Path) -> None:
        """A finished match's retention is over: delete its file (and SQLite's side files)."""
        def delete() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)

        try:
            await self._offload(delete)
        except OSError as error:
            log.error("cannot delete match %s after its retention (tried again in %s s): %s",
                      match_id, STORAGE_RETRY_S, error)
            self.scheduler.set(match_id, self.wall_clock() + STORAGE_RETRY_S, exact=True)
            return
        self.unfinished.pop(match_id, None)
        log.info("match %s deleted: its retention is over", match_id)

    # -- creating -----------------------------------------------------------------------------

    async def create_match(self, game_name: str, params: Any = None, name: str | None = None, *,
                           roster: list[str] | None = None, lobby_s: float | None = None,
                           labels: dict[str, str] | None = None) -> MatchMeta:
        """Create a match's file. With a name, the id is derived from it and creation is idempotent.
        With a `roster` (the matchmaker's players) only they may join, and the match starts when all
        of them have, or is cancelled if they have not after `lobby_s`."""
        game = self.games.get(game_name)
        if game is None:
            raise UnknownGame(f"no game {game_name!r}; this node has {', '.join(sorted(self.games))}")
        try:
            structured = canonical.converter.structure(params if params is not None else {}, game.params_type)
        except Exception as error:
            raise InvalidParams(f"invalid parameters for {game_name}: {canonical.describe_error(error)}") from None
        try:
            match_id = match_id_from_name(name) if name is not None else new_match_id()
        except InvalidId as error:
            raise InvalidParams(str(error)) from None
        if not self.owns(match_id):
            if name is not None:
                self._check_owned(match_id)
            match_id = shards.new_match_id_for(self.config.worker, self.config.workers)
        path = storage.match_path(self.data_dir, match_id)
        if name is not None and path.exists():
            existing, _players = await self._read_file(path)
            if existing.game != game_name:
                raise NameTaken(f"the name is taken by a {existing.game} match")
            return existing
        seed = secrets.randbits(63)
        now = self.wall_clock()

        def create() -> MatchMeta:
            return create_match_file(path, game, match_id=match_id, params=structured, seed=seed,
                                     snapshot_every=self.config.snapshot_every, now=now,
                                     synchronous=self.config.synchronous, roster=roster, lobby_s=lobby_s,
                                     labels=labels)[0]

        try:
            meta = await self._offload(create)
            if meta.next_alarm_at is not None:
                self.scheduler.set(match_id, meta.next_alarm_at)  # the lobby timeout
        except (GameCrashed, TypeError, ValueError, RecursionError) as error:
            raise InvalidParams(f"{game_name} could not start a match with these parameters: {error}") from None
        except storage.MatchExists:
            if name is None:
                raise  # 128 random bits collided: not a case to handle quietly
            return await self.create_match(game_name, params, name, roster=roster, lobby_s=lobby_s, labels=labels)
        except storage.StorageUnavailable as error:
            log.error("cannot create a %s match: %s", game_name, error)
            raise StorageFailed(f"cannot create a match now: {error}") from None
        self.unfinished[match_id] = meta
        self._last_seen[match_id] = MatchSummary(match_id, game_name, meta.status, 0, game.max_players, meta.labels,
                                                 meta.created_at)
        log.info("created %s match %s", game_name, match_id)
        return meta

    # -- activating ---------------------------------------------------------------------------

    async def actor(self, match_id: str) -> Actor:
        """The live actor of a match, activating it if needed (once, however many ask)."""
        try:
            check_match_id(match_id)
        except InvalidId as error:
            raise MatchNotFound(str(error)) from None
        self._check_owned(match_id)
        while True:
            if self.closing:
                raise NodeClosing("the node is shutting down")
            if match_id in self.failed:
                raise MatchFailed(f"match {match_id} failed: {self.failed[match_id]}")
            actor = self.actors.get(match_id)
            if actor is not None and not actor.finished.is_set():
                return actor
            pending = self._activating.get(match_id)
            if pending is None:
                break
            # Another caller is activating it: wait, then look again. (If that activation failed,
            # or the actor already left, the first of us to get here activates; the rest wait.)
            await pending.wait()
        done = trio.Event()
        self._activating[match_id] = done
        try:
            return await self._activate(match_id)
        finally:
            del self._activating[match_id]
            done.set()

    async def _activate(self, match_id: str) -> Actor:
        path = storage.match_path(self.data_dir, match_id)
        if not path.exists():
            raise MatchNotFound(f"no match {match_id}")
        started = trio.current_time()

        # A match this node hibernated was checked when it was first activated: waking skips the check.
        check = match_id not in self.hibernated

        def load() -> tuple[MatchStore, MatchMeta, Simulation, list[Alarm], set[int]]:
            store = MatchStore.open(path, synchronous=self.config.synchronous, check=check)
            try:
                meta = store.meta()
                if meta.status in FINISHED:
                    raise MatchOver(f"match {match_id} is {meta.status}")
                game = self.games.get(meta.game)
                if game is None:
                    raise MatchUnavailable(f"this node does not have the game {meta.game!r}")
                recorded = {row[0] for row in store.connections()}
                return store, meta, restore(store, game), store.alarms(), recorded
            except BaseException:
                store.close()
                raise

        try:
            store, meta, sim, alarms, recorded = await self._offload(load)
        except (sqlite3.Error, OSError) as error:  # found while re-simulating: not named by storage yet
            self._load_failed(match_id, path, storage.file_error(path, error))
        except (MatchFileError, GameCrashed) as error:
            self._load_failed(match_id, path, error)
        except NodeError:
            raise
        except Exception as error:  # content storage did not check; the match, not the node, is refused
            log.exception("loading match %s failed", match_id)
            self._load_failed(match_id, path, storage.CorruptFile(f"{path}: cannot be loaded: {exception_text(error)}"))
        self.metrics.activation.observe(trio.current_time() - started)
        self.broken.pop(str(path), None)  # an earlier failure (a storage error) is over
        self.unfinished.setdefault(match_id, meta)
        if meta.game_version != self.games[meta.game].version:
            log.warning("match %s was created with %s %s; this node runs %s", match_id, meta.game,
                        meta.game_version, self.games[meta.game].version)
        adopted = self.hibernated.pop(match_id, [])
        if adopted or match_id in self.hibernated:
            self.metrics.hibernated.set(len(self.hibernated))
        actor = Actor(game=self.games[meta.game], store=store, sim=sim, meta=meta, config=self.config,
                      metrics=self.metrics, wall_clock=self.wall_clock, alarms=alarms, adopted=adopted,
                      schedule_alarm=self.scheduler.set, on_hibernate=self._keep_connections, offload=self._offload,
                      en_route=self.en_route, notify=self._notify, checkpoint=self._checkpoint_soon,
                      recorded_connections=recorded)
        assert self._nursery is not None, "Node.run must be running"
        await self._nursery.start(self._run_actor, actor)
        if actor.over:  # its first write failed
            raise MatchFailed(f"match {match_id} failed: {actor.status_reason}")
        return actor

    def _load_failed(self, match_id: str, path: Path, error: Exception) -> NoReturn:
        """Report a file that could not be activated, and refuse. A damaged or diverging file leaves the
        list of unfinished matches; one the storage refused (full, read-only) stays, and the match is
        tried again in STORAGE_RETRY_S (or at the next connection) so that its alarms still fire."""
        self._report_broken(path, str(error))
        why = _why(path, error)
        if isinstance(error, storage.StorageUnavailable):
            self.scheduler.set(match_id, self.wall_clock() + STORAGE_RETRY_S, exact=True)
            raise MatchStorageUnavailable(f"try again later: match {match_id} cannot be loaded now: {why}") from None
        self.unfinished.pop(match_id, None)
        raise MatchUnavailable(f"match {match_id} cannot be loaded: {why}") from None

    async def _run_actor(self, actor: Actor, task_status: trio.TaskStatus[None]) -> None:
        self.actors[actor.match_id] = actor
        self.metrics.live_matches.inc()
        try:
            await actor.run(task_status=task_status)
        finally:
            if self.actors.get(actor.match_id) is actor:
                del self.actors[actor.match_id]
            if actor.over:
                self._last_seen.pop(actor.match_id, None)
            else:
                self._last_seen[actor.match_id] = self._summary_of(actor)
            self.metrics.live_matches.dec()
            if actor.status in FINISHED:
                self.unfinished.pop(actor.match_id, None)
            if actor.status == storage.FAILED:
                # Refused from now on, even if the failure could not be written to the file (a full disk).
                self.failed[actor.match_id] = actor.status_reason or "failed"
                self._report_broken(storage.match_path(self.data_dir, actor.match_id),
                                    f"match {actor.match_id} failed at tick {actor.sim.tick}: {actor.status_reason}"
                                    + ("" if actor.failure_recorded else " (not recorded in the file)"))

    def _checkpoint_soon(self, store: storage.MatchStore) -> None:
        """Checkpoint a live match's WAL in a worker thread, one file at a time (storage.checkpoint)."""
        if store.path in self._checkpointing or self._nursery is None:
            return
        self._checkpointing.add(store.path)
        self._nursery.start_soon(self._checkpoint, store)

    async def _checkpoint(self, store: storage.MatchStore) -> None:
        path = store.path
        try:
            async with self._checkpoint_limiter:
                with store.checkpointed_elsewhere():  # its commits in threads until its WAL restarts
                    await self._offload(storage.checkpoint, path)
        except (sqlite3.Error, OSError) as error:  # the match goes on; its WAL grows until the next one
            log.warning("checkpointing %s failed: %s", path.name, error)
        finally:
            self._checkpointing.discard(path)

    def _notify(self, notice: MatchNotice) -> None:
        for listener in self.listeners:
            try:
                listener(notice)
            except Exception:
                log.exception("a match listener failed on %s", notice)

    def _keep_connections(self, match_id: str, connections: list[Connection]) -> None:
        """A match hibernates: hold its open connections until it wakes."""
        self.hibernated[match_id] = connections
        self.metrics.hibernated.set(len(self.hibernated))
        self._trim_soon()

    def _trim_soon(self) -> None:
        """After hibernations, give what they freed back to the OS (at most once a second), having
        frozen what survives if `freeze_gc`."""
        if self._trim_pending or self._nursery is None or self.closing:
            return
        self._trim_pending = True

        async def trim_later() -> None:
            await trio.sleep(1.0)
            self._trim_pending = False
            if self.collector is not None:
                self.collector.settle(trio.current_time())
            await self._offload(memory.trim)

        self._nursery.start_soon(trim_later)

    def _report_broken(self, path: Path, reason: str) -> None:
        log.error("unusable match file, left untouched: %s", reason)
        self.broken[str(path)] = BrokenFile(str(path), reason)

    # -- reading ------------------------------------------------------------------------------

    async def describe(self, match_id: str) -> dict[str, Any]:
        """A match's status: from its live actor, else from its file (read-only)."""
        try:
            check_match_id(match_id)
        except InvalidId as error:
            raise MatchNotFound(str(error)) from None
        self._check_owned(match_id)
        actor = self.actors.get(match_id)
        if actor is not None and not actor.finished.is_set():
            return actor.describe()
        path = storage.match_path(self.data_dir, match_id)
        if not path.exists():
            raise MatchNotFound(f"no match {match_id}")

        meta, players, alarms = await self._read_file(path, with_alarms=True)
        if match_id in self.failed and meta.status != storage.FAILED:  # the file could not be told
            meta = attrs.evolve(meta, status=storage.FAILED, status_reason=self.failed[match_id])
        held = {conn.player: conn for conn in self.hibernated.get(match_id, []) if conn.role == PLAYER}
        for player in players:
            conn = held.get(player["player_id"])
            player["connected"] = conn is not None
            player["attachment"] = conn.attachment if conn is not None else None
        return describe_match(meta, players=players, connections=len(self.hibernated.get(match_id, [])), live=False,
                              alarms=alarms)

    async def listing(self) -> list[MatchSummary]:
        """A summary of every unfinished match: from live actors, else as last seen (an actor that
        left memory), else from its file (once; then remembered)."""
        found = []
        for match_id, meta in list(self.unfinished.items()):
            actor = self.actors.get(match_id)
            if actor is not None and not actor.finished.is_set():
                summary = self._summary_of(actor)
            else:
                summary = self._last_seen.get(match_id)
                if summary is None:
                    try:
                        described = await self.describe(match_id)
                    except NodeError:
                        continue
                    game = self.games.get(meta.game)
                    summary = MatchSummary(match_id, meta.game, described["status"], len(described["players"]),
                                           game.max_players if game else 0, meta.labels, meta.created_at)
                    self._last_seen[match_id] = summary
            if summary.status not in FINISHED and match_id in self.unfinished:
                found.append(summary)
        return found

    @staticmethod
    def _summary_of(actor: Actor) -> MatchSummary:
        return MatchSummary(actor.match_id, actor.meta.game, actor.status, len(actor.sim.seated),
                            actor.game.max_players, actor.meta.labels, actor.meta.created_at)

    async def failed_alarms(self) -> list[tuple[str, Alarm]]:
        """Every alarm recorded as failed, in every match file of this node (live ones from memory)."""
        found = [(match_id, a) for match_id, actor in self.actors.items() for a in actor.alarms.values() if a.failed]
        live = set(self.actors)
        found += await self._offload(storage.failed_alarms, self.data_dir, live,
                                     None if self.config.workers == 1 else self.owns)
        return sorted(found, key=lambda pair: (pair[1].due, pair[0], pair[1].name))

    async def logged_inputs(self, match_id: str) -> dict[str, list[list[int]]]:
        """Every player's logged (committed) input seqs, as [first, last] ranges, read from the
        match's file (read-only; safe beside its live writer)."""
        try:
            check_match_id(match_id)
        except InvalidId as error:
            raise MatchNotFound(str(error)) from None
        self._check_owned(match_id)
        path = storage.match_path(self.data_dir, match_id)
        if not path.exists():
            raise MatchNotFound(f"no match {match_id}")

        def read() -> dict[str, list[list[int]]]:
            store = MatchStore.open(path, read_only=True, check=False)
            try:
                return store.logged_inputs()
            finally:
                store.close()

        try:
            return await self._offload(read)
        except MatchFileError as error:
            raise self._unreadable(path, error) from None

    def _unreadable(self, path: Path, error: MatchFileError) -> MatchUnavailable:
        log.warning("cannot read %s", error)
        return MatchUnavailable(f"match {path.name.removesuffix(storage.SUFFIX)} cannot be read: {_why(path, error)}")

    async def _read_file(self, path: Path, with_alarms: bool = False) -> Any:
        def read() -> Any:
            store = MatchStore.open(path, read_only=True, check=False)
            try:
                players = [{"player_id": p, "connected": False, "seated": left is None, "attachment": None}
                           for p, _joined, left in store.players()]
                if with_alarms:
                    return store.meta(), players, store.alarms()
                return store.meta(), players
            finally:
                store.close()

        try:
            return await self._offload(read)
        except MatchFileError as error:
            raise self._unreadable(path, error) from None


def _why(path: Path, error: Exception) -> str:
    """What went wrong with a match file, for clients: why, not where (the path stays in the log)."""
    return str(error).replace(f"{path}: ", "").replace(str(path), "its file")


async def _run_inline(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


def remove_stale_staging(data_dir: Path, owns: Callable[[str], bool] | None = None) -> None:
    """Remove files left by match creations that a crash interrupted (`.<id>.sqlite3.<pid>.<n>.new`
    and SQLite's side files: never linked to a match's name, so nobody's match) whose process is gone
    (only those of the match ids `owns` accepts, if given)."""
    for path in (data_dir / "matches").glob(f".*{storage.STAGING_SUFFIX}*"):
        found = _STAGING.fullmatch(path.name)
        if found is None or (owns is not None and not owns(found.group(1))):
            continue
        pid = int(found.group(2))
        if pid == os.getpid() or _alive(pid):
            continue
        try:
            path.unlink()
            log.info("removed %s, left by an interrupted match creation", path.name)
        except OSError as error:
            log.warning("cannot remove %s: %s", path.name, error)


_STAGING = re.compile(r"\.([0-9a-z]{26})\.sqlite3\.(\d+)\.\d+\.new(?:-wal|-shm|-journal)?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["Node", "NodeError", "UnknownGame", "InvalidParams", "MatchNotFound", "MatchUnavailable",
           "MatchStorageUnavailable", "MatchFailed", "MatchOver", "NameTaken", "NodeClosing", "WrongWorker",
           "StorageFailed", "BrokenFile"]
