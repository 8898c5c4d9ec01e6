"""Join tokens: HS256 JWTs bound to (match id, player id, role), with an expiry. Time is an input.

PyJWT does the signing and the signature check; the expiry is checked here against the `now` the
caller passes, so that this module never reads the clock and tests can move time freely.
"""

from __future__ import annotations

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
    claims = {"iss": ISSUER, "mid": grant.match_id, "sub": grant.player, "role": grant.role,
              "iat": int(now), "exp": int(grant.expires_at)}
    return jwt.encode(claims, secret, algorithm="HS256")


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
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise TokenError("invalid token: exp is not a number")
    if exp <= now:
        raise TokenError("token expired")
    role = claims["role"]
    if role not in ROLES:
        raise TokenError("invalid token: unknown role")
    try:
        return Grant(check_match_id(claims["mid"]), check_player_id(claims["sub"]), role, float(exp))
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
