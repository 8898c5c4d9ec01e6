"""Placement: where a formed match is created, and the join tokens its players get.

The matchmaker talks to gameserver nodes only through `Placement`. `NodePlacement` answers
in-process for `arbiter up --workers 1` (one node); `HostPlacement` places on a MatchHost, such as
the worker processes of `arbiter up --workers N` (the host picks the worker). A placement that asks
another machine over the network implements the same methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import attrs

from gameserver import tokens
from gameserver.node import Node
from matchmaker.hosts import MatchHost


@attrs.frozen
class Placed:
    match_id: str
    ws_url: str


class Placement(Protocol):
    async def create(self, game: str, params: dict[str, Any], *, roster: list[str] | None, lobby_s: float | None,
                     labels: dict[str, str], name: str | None = None) -> Placed:
        """Create a match (matchmade with a roster, or open without one). Raises gameserver.node.NodeError."""

    async def reserve(self, match_id: str, players: list[str], *, release: bool = False) -> list[str]:
        """Hold (or give back) seats in a running matchmade match; its roster after the change."""

    async def seated(self, match_id: str) -> list[str]:
        """Who holds a seat in the match now."""

    def token(self, match_id: str, player: str, role: str = tokens.PLAYER, ttl_s: float | None = None) -> tuple[str, float]:
        """A signed join token for (match, player, role), and when it expires (its `exp` claim, at least
        `ttl_s` from now: gameserver.tokens.issue)."""

    def ws_url(self, match_id: str) -> str:
        """Where a client connects for this match."""


class NodePlacement:
    """Placement on the node in this process."""

    def __init__(self, node: Node, secret: bytes, ws_base: Callable[[], str]):
        self.node = node
        self.secret = secret
        self._ws_base = ws_base

    async def create(self, game: str, params: dict[str, Any], *, roster: list[str] | None, lobby_s: float | None,
                     labels: dict[str, str], name: str | None = None) -> Placed:
        meta = await self.node.create_match(game, params, name, roster=roster, lobby_s=lobby_s, labels=labels)
        return Placed(meta.match_id, self.ws_url(meta.match_id))

    async def reserve(self, match_id: str, players: list[str], *, release: bool = False) -> list[str]:
        return await self.node.change_roster(match_id, players, release=release)

    async def seated(self, match_id: str) -> list[str]:
        described = await self.node.describe(match_id)
        return [p["player_id"] for p in described["players"]]

    def token(self, match_id: str, player: str, role: str = tokens.PLAYER, ttl_s: float | None = None) -> tuple[str, float]:
        ttl = ttl_s if ttl_s is not None else self.node.config.token_ttl_s
        return tokens.issue(self.secret, match_id, player, role, self.node.wall_clock(), ttl)

    def ws_url(self, match_id: str) -> str:
        return f"{self._ws_base()}/v1/matches/{match_id}"


class HostPlacement:
    """Placement on a MatchHost: new matches go where the host puts them (for the workers of
    `arbiter up --workers N`, the least loaded one, or the owner of a named match's id)."""

    def __init__(self, host: MatchHost, secret: bytes):
        self.host = host
        self.secret = secret

    async def create(self, game: str, params: dict[str, Any], *, roster: list[str] | None, lobby_s: float | None,
                     labels: dict[str, str], name: str | None = None) -> Placed:
        created = await self.host.create_match(game, params, name, roster=roster, lobby_s=lobby_s, labels=labels)
        return Placed(created.match_id, self.ws_url(created.match_id))

    async def reserve(self, match_id: str, players: list[str], *, release: bool = False) -> list[str]:
        return await self.host.change_roster(match_id, players, release=release)

    async def seated(self, match_id: str) -> list[str]:
        described = await self.host.describe(match_id)
        return [p["player_id"] for p in described["players"]]

    def token(self, match_id: str, player: str, role: str = tokens.PLAYER, ttl_s: float | None = None) -> tuple[str, float]:
        ttl = ttl_s if ttl_s is not None else self.host.token_ttl_s
        return tokens.issue(self.secret, match_id, player, role, self.host.wall_clock(), ttl)

    def ws_url(self, match_id: str) -> str:
        return self.host.ws_url(match_id)
