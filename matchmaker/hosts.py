"""Where the HTTP API finds matches: the node in this process, or the workers of `arbiter up --workers N`.

The routes (matchmaker/api.py, ticket_api.py) and placement talk to a `MatchHost`. `LocalHost`
answers from the node in this process (one process, as `arbiter up --workers 1` runs);
tools/workers.py's `WorkerPool` forwards each call to the worker process that owns the match.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import attrs
from prometheus_client import generate_latest

from gameserver.alarms import Alarm
from gameserver.game import Game
from gameserver.node import BrokenFile, MatchSummary, Node, NodeError


class WorkerUnavailable(NodeError):
    """The worker that owns the match is not running (it exited and is being restarted, or the
    server is stopping): try again in a moment."""

    code = "worker_unavailable"


class WorkerError(Exception):
    """A worker failed on a request (a bug there, logged by the worker): the HTTP answer is a 500.
    Not a NodeError: nothing the caller did; callers that must go on (the matchmaker's placement)
    catch it by name."""


@attrs.frozen
class Created:
    match_id: str
    game: str
    status: str


@attrs.frozen
class WorkerInfo:
    """One server process that runs matches, as `GET /v1/node/workers` shows it."""

    worker: int
    pid: int | None  # None: not running now
    state: str  # "up", "unresponsive" (running, its last call timed out), "starting" (again, after it
    # exited) or "down" (stopped with the server)
    ws_url: str
    restarts: int
    live_matches: int | None  # None: not known (not up)
    unfinished_matches: int | None
    connections: int | None


class MatchHost(Protocol):
    games: dict[str, Game]
    token_ttl_s: float
    wall_clock: Callable[[], float]
    data_dir: Path

    @property
    def closing(self) -> bool: ...

    def ws_url(self, match_id: str) -> str:
        """Where a client connects for this match."""

    async def create_match(self, game: str, params: Any = None, name: str | None = None, *,
                           roster: list[str] | None = None, lobby_s: float | None = None,
                           labels: dict[str, str] | None = None) -> Created: ...

    async def change_roster(self, match_id: str, players: list[str], *, release: bool = False) -> list[str]: ...

    async def describe(self, match_id: str) -> dict[str, Any]: ...

    async def logged_inputs(self, match_id: str) -> dict[str, list[list[int]]]: ...

    async def listing(self) -> list[MatchSummary]: ...

    async def failed_alarms(self) -> list[tuple[str, Alarm]]: ...

    async def unusable(self) -> list[BrokenFile]: ...

    async def health(self) -> dict[str, int]:
        """live_matches, hibernated_matches, unfinished_matches, unusable_files, connections, workers, workers_up."""

    async def metrics(self) -> bytes:
        """Prometheus text format."""

    async def worker_info(self) -> list[WorkerInfo]: ...


class LocalHost:
    """The node in this process."""

    def __init__(self, node: Node, ws_base: Callable[[], str], connections: Callable[[], int]):
        self.node = node
        self.games = node.games
        self.token_ttl_s = node.config.token_ttl_s
        self.wall_clock = node.wall_clock
        self.data_dir = node.data_dir
        self._ws_base = ws_base
        self._connections = connections

    @property
    def closing(self) -> bool:
        return self.node.closing

    def ws_url(self, match_id: str) -> str:
        return f"{self._ws_base()}/v1/matches/{match_id}"

    async def create_match(self, game: str, params: Any = None, name: str | None = None, *,
                           roster: list[str] | None = None, lobby_s: float | None = None,
                           labels: dict[str, str] | None = None) -> Created:
        meta = await self.node.create_match(game, params, name, roster=roster, lobby_s=lobby_s, labels=labels)
        return Created(meta.match_id, meta.game, meta.status)

    async def change_roster(self, match_id: str, players: list[str], *, release: bool = False) -> list[str]:
        return await self.node.change_roster(match_id, players, release=release)

    async def describe(self, match_id: str) -> dict[str, Any]:
        return await self.node.describe(match_id)

    async def logged_inputs(self, match_id: str) -> dict[str, list[list[int]]]:
        return await self.node.logged_inputs(match_id)

    async def listing(self) -> list[MatchSummary]:
        return await self.node.listing()

    async def failed_alarms(self) -> list[tuple[str, Alarm]]:
        return await self.node.failed_alarms()

    async def unusable(self) -> list[BrokenFile]:
        return list(self.node.broken.values())

    async def health(self) -> dict[str, int]:
        node = self.node
        return {"live_matches": len(node.actors), "hibernated_matches": len(node.hibernated),
                "unfinished_matches": len(node.unfinished), "unusable_files": len(node.broken),
                "connections": self._connections(), "workers": 1, "workers_up": 1}

    async def metrics(self) -> bytes:
        return generate_latest(self.node.metrics.registry)

    async def worker_info(self) -> list[WorkerInfo]:
        node = self.node
        return [WorkerInfo(worker=0, pid=os.getpid(), state="up", ws_url=self._ws_base(), restarts=0,
                           live_matches=len(node.actors), unfinished_matches=len(node.unfinished),
                           connections=self._connections())]
