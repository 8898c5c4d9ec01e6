"""Join tokens: HS256 JWTs bound to (match id, player id, role), with an expiry. Time is an input.

PyJWT does the signing and the signature check; the expiry is checked here against the `now` the
caller passes, so that this module never reads the clock and tests can move time freely.

`exp` is a whole second: `issue` puts the first whole second after `now + ttl_s` in it and reports
that same second, so a token is valid for at least `ttl_s` (at most 1 s more), and is valid when issued.
"""

from __future__ import annotations

import math
import os
import secrets
from pathlib import Path

import attrs
import jwt

from .ids import InvalidId, check_match_id, check_player_id
from .token_cache import VerifiedTokens

ISSUER = "arbiter"
PLAYER = "player"
SPECTATOR = "spectator"
ROLES = (PLAYER, SPECTATOR)
MIN_SECRET_BYTES = 32


class TokenError(Exception):
    """A token that does not admit anyone. The message is safe to show the client."""


@attrs.frozen
class Grant:
    match_id: str
    player: str
    role: str
    expires_at: float


def sign(secret: bytes, grant: Grant, now: float) -> str:
    """A token for `grant`; its `exp` is `grant.expires_at` rounded up (never earlier)."""
    claims = {"iss": ISSUER, "mid": grant.match_id, "sub": grant.player, "role": grant.role,
              "iat": int(now), "exp": math.ceil(grant.expires_at)}
    return jwt.encode(claims, secret, algorithm="HS256")


def expiry_after(now: float, ttl_s: float) -> float:
    """The first whole second after `now + ttl_s`: what a token issued at `now` for `ttl_s` expires at."""
    return float(math.floor(now + ttl_s) + 1)


def issue(secret: bytes, match_id: str, player: str, role: str, now: float, ttl_s: float) -> tuple[str, float]:
    """A token for (match, player, role) valid from `now` for at least `ttl_s`, and when it expires
    (exactly its `exp` claim)."""
    grant = Grant(match_id, player, role, expiry_after(now, ttl_s))
    return sign(secret, grant, now), grant.expires_at


def claimed_expiry(claims: dict) -> float | None:
    """The `exp` claim as a finite float, or None: not a number (JSON's true is not one), not finite
    (json reads 1e400 as inf, and takes NaN), or an integer beyond a float (10**400)."""
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        return None
    try:
        value = float(exp)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


# Tokens that verified, by (secret, token): see token_cache.py.
VERIFIED_CACHE_SIZE = 4096
_verified: VerifiedTokens[Grant] = VerifiedTokens(VERIFIED_CACHE_SIZE)


def verify(secret: bytes, token: str, now: float) -> Grant:
    """The grant a token carries, or `TokenError` if it is malformed, forged or expired."""
    known = _verified.get((secret, token))
    if known is None:
        grant = _verify_uncached(secret, token, now)
        _verified.add((secret, token), grant, grant.expires_at)
        return grant
    if known[1] <= now:
        raise TokenError("token expired")
    return known[0]


def _verify_uncached(secret: bytes, token: str, now: float) -> Grant:
    if not token.isascii():  # a JWT is base64url and dots; PyJWT would raise UnicodeEncodeError on some
        raise TokenError("invalid token: not ASCII")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], issuer=ISSUER,
                            options={"verify_exp": False, "verify_iat": False,
                                     "require": ["exp", "mid", "sub", "role", "iss"]})
    except jwt.InvalidTokenError as error:
        raise TokenError(f"invalid token: {error}") from None
    exp = claimed_expiry(claims)
    if exp is None:
        raise TokenError("invalid token: exp is not a finite number")
    if exp <= now:
        raise TokenError("token expired")
    role = claims["role"]
    if role not in ROLES:
        raise TokenError("invalid token: unknown role")
    try:
        return Grant(check_match_id(claims["mid"]), check_player_id(claims["sub"]), role, exp)
    except InvalidId as error:
        raise TokenError(f"invalid token: {error}") from None


def load_or_create_secret(path: Path) -> bytes:
    """The node's signing secret, created (0600) on first start so tokens survive restarts."""
    if path.exists():
        secret = path.read_bytes().strip()
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"{path}: a secret has at least {MIN_SECRET_BYTES} bytes")
        return secret
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_hex(32).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(secret)
    return secret
