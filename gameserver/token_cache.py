"""Tokens that already verified, so that a token presented again costs a dict lookup instead of
PyJWT's decode and HMAC (60 to 100 us). Used for join tokens (gameserver/tokens.py: a client that
reconnects, spectators sharing a token) and player tokens (matchmaker/auth.py: a client sends the
same token with every request)."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class VerifiedTokens(Generic[V]):
    """Key of a token that verified -> (what it carries, when it expires). Only tokens that verified
    go in, so forged ones cannot fill it; at `size` entries the oldest makes room. The caller
    checks the expiry on every hit: a cached token expires as an uncached one does."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[Hashable, tuple[V, float]] = {}

    def get(self, key: Hashable) -> tuple[V, float] | None:
        return self._entries.get(key)

    def add(self, key: Hashable, value: V, expires_at: float) -> None:
        if len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]  # the oldest entry
        self._entries[key] = (value, expires_at)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)
