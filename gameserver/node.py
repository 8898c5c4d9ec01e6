"""A node: the match actors of one process, their files, and activation on demand.

Exactly one live actor per match id: concurrent first accesses wait for one activation. On start
the node scans its data directory and knows every unfinished match; an actor activates when a
connection (later an alarm) needs it, by loading its latest snapshot and re-simulating the
logged commands after it (in a worker thread, so other matches keep their tick timing). A file
that is damaged, not a match file, or from a newer schema is reported and skipped, never written.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from . import canonical, storage
from .actor import Actor, describe_match
from .config import NodeConfig
from .game import Game, check_game_class
from .ids import InvalidId, check_match_id, match_id_from_name, new_match_id
from .metrics import Metrics
from .recovery import create_match_file, restore
from .simulation import GameCrashed, Simulation
from .storage import FINISHED, MatchFileError, MatchMeta, MatchStore

log = logging.getLogger("arbiter.node")


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


class NodeClosing(NodeError):
    """The node is shutting down: try again in a moment (on this node after a restart, or another)."""

    code = "node_closing"


class MatchOver(NodeError):
    code = "match_over"


class NameTaken(NodeError):
    code = "name_taken"


@attrs.frozen
class BrokenFile:
    path: str
    reason: str


class Node:
    def __init__(self, config: NodeConfig, games: dict[str, type[Game]], *, metrics: Metrics | None = None,
                 wall_clock: Callable[[], float] = time.time):
        for cls in games.values():
            check_game_class(cls)
        self.config = config
        self.games: dict[str, Game] = {name: cls() for name, cls in games.items()}
        self.metrics = metrics or Metrics()
        self.wall_clock = wall_clock
        self.actors: dict[str, Actor] = {}
        self.unfinished: dict[str, MatchMeta] = {}
        self.broken: dict[str, BrokenFile] = {}
        self._activating: dict[str, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self.closing = False

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    async def run(self, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        (self.data_dir / "matches").mkdir(parents=True, exist_ok=True)
        found, broken = await trio.to_thread.run_sync(storage.scan, self.data_dir)
        for meta in found:
            if meta.status not in FINISHED:
                self.unfinished[meta.match_id] = meta
        for path, reason in broken:
            self._report_broken(path, reason)
        log.info("data directory %s: %d unfinished matches, %d unusable files",
                 self.data_dir, len(self.unfinished), len(self.broken))
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started(self)
            await trio.sleep_forever()

    async def shutdown(self) -> None:
        """Stop every actor: each finishes its tick, closes its connections with 1001 and leaves."""
        self.closing = True
        actors = list(self.actors.values())
        for actor in actors:
            actor.stop()
        for actor in actors:
            await actor.finished.wait()

    # -- creating -----------------------------------------------------------------------------

    async def create_match(self, game_name: str, params: Any = None, name: str | None = None) -> MatchMeta:
        """Create a match's file. With a name, the id is derived from it and creation is idempotent."""
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
        path = storage.match_path(self.data_dir, match_id)
        if name is not None and path.exists():
            existing, _players = await self._read_file(path)
            if existing.game != game_name:
                raise NameTaken(f"the name is taken by a {existing.game} match")
            return existing
        seed = secrets.randbits(63)

        def create() -> MatchMeta:
            return create_match_file(path, game, match_id=match_id, params=structured, seed=seed,
                                     snapshot_every=self.config.snapshot_every, now=self.wall_clock(),
                                     synchronous=self.config.synchronous)[0]

        try:
            meta = await trio.to_thread.run_sync(create)
        except (GameCrashed, TypeError, ValueError) as error:
            raise InvalidParams(f"{game_name} could not start a match with these parameters: {error}") from None
        except storage.MatchExists:
            if name is None:
                raise  # 128 random bits collided: not a case to handle quietly
            return await self.create_match(game_name, params, name)
        self.unfinished[match_id] = meta
        log.info("created %s match %s", game_name, match_id)
        return meta

    # -- activating ---------------------------------------------------------------------------

    async def actor(self, match_id: str) -> Actor:
        """The live actor of a match, activating it if needed (once, however many ask)."""
        try:
            check_match_id(match_id)
        except InvalidId as error:
            raise MatchNotFound(str(error)) from None
        while True:
            if self.closing:
                raise NodeClosing("the node is shutting down")
            actor = self.actors.get(match_id)
            if actor is not None and not actor.finished.is_set():
                return actor
            pending = self._activating.get(match_id)
            if pending is None:
                break
            await pending.wait()
            if match_id not in self.actors:
                break  # the activation we waited for failed: try (and report) it ourselves
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

        def load() -> tuple[MatchStore, MatchMeta, Simulation]:
            store = MatchStore.open(path, synchronous=self.config.synchronous)
            try:
                meta = store.meta()
                if meta.status in FINISHED:
                    raise MatchOver(f"match {match_id} is {meta.status}")
                game = self.games.get(meta.game)
                if game is None:
                    raise MatchUnavailable(f"this node does not have the game {meta.game!r}")
                return store, meta, restore(store, game)
            except BaseException:
                store.close()
                raise

        try:
            store, meta, sim = await trio.to_thread.run_sync(load)
        except (MatchFileError, GameCrashed) as error:
            self._report_broken(path, str(error))
            self.unfinished.pop(match_id, None)
            raise MatchUnavailable(f"match {match_id} cannot be loaded: {error}") from None
        self.metrics.activation.observe(trio.current_time() - started)
        if meta.game_version != self.games[meta.game].version:
            log.warning("match %s was created with %s %s; this node runs %s", match_id, meta.game,
                        meta.game_version, self.games[meta.game].version)
        actor = Actor(game=self.games[meta.game], store=store, sim=sim, meta=meta, config=self.config,
                      metrics=self.metrics, wall_clock=self.wall_clock)
        assert self._nursery is not None, "Node.run must be running"
        await self._nursery.start(self._run_actor, actor)
        return actor

    async def _run_actor(self, actor: Actor, task_status: trio.TaskStatus[None]) -> None:
        self.actors[actor.match_id] = actor
        self.metrics.live_matches.inc()
        try:
            await actor.run(task_status=task_status)
        finally:
            if self.actors.get(actor.match_id) is actor:
                del self.actors[actor.match_id]
            self.metrics.live_matches.dec()
            if actor.status in FINISHED:
                self.unfinished.pop(actor.match_id, None)

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
        actor = self.actors.get(match_id)
        if actor is not None:
            return actor.describe()
        path = storage.match_path(self.data_dir, match_id)
        if not path.exists():
            raise MatchNotFound(f"no match {match_id}")

        meta, players = await self._read_file(path)
        return describe_match(meta, players=players, connections=0, live=False)

    async def _read_file(self, path: Path) -> tuple[MatchMeta, list[dict[str, Any]]]:
        def read() -> tuple[MatchMeta, list[dict[str, Any]]]:
            store = MatchStore.open(path, read_only=True, check=False)
            try:
                players = [{"player_id": p, "connected": False, "seated": left is None}
                           for p, _joined, left in store.players()]
                return store.meta(), players
            finally:
                store.close()

        try:
            return await trio.to_thread.run_sync(read)
        except MatchFileError as error:
            raise MatchUnavailable(str(error)) from None


__all__ = ["Node", "NodeError", "UnknownGame", "InvalidParams", "MatchNotFound", "MatchUnavailable",
           "MatchOver", "NameTaken", "NodeClosing", "BrokenFile"]
