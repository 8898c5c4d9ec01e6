"""Player authentication: bearer tokens that are HS256 JWTs signed with the server's player secret.

A studio's own login service signs them (claims: `sub` = player id, `exp`, and `aud` =
"arbiter:player") with the secret given to `arbiter up` (`--auth-secret-file`, or
$ARBITER_AUTH_SECRET). In development mode the server also hands out guest tokens itself
(`POST /v1/auth/guest`). Join tokens (gameserver/tokens.py) are a different kind: they carry a
match id and are never accepted here, nor player tokens at the WebSocket. Time is an input.
"""

from __future__ import annotations

import secrets

import attrs
import jwt

from gameserver.ids import InvalidId, check_player_id
from gameserver.token_cache import VerifiedTokens
from gameserver.tokens import claimed_expiry, expiry_after

AUDIENCE = "arbiter:player"
ISSUER = "arbiter"
GUEST_PREFIX = "guest-"


class AuthError(Exception):
    """No valid player token. The message is safe to show."""


@attrs.frozen
class PlayerAuth:
    secret: bytes
    guests: bool  # development mode: POST /v1/auth/guest hands out tokens
    guest_ttl_s: float = 24 * 3600.0
    cache_size: int = 10_000
    # Tokens already verified: token -> (player, exp); see gameserver/token_cache.py.
    _verified: VerifiedTokens[str] = attrs.field(
        default=attrs.Factory(lambda self: VerifiedTokens(self.cache_size), takes_self=True), eq=False, repr=False)

    def sign(self, player: str, now: float, ttl_s: float | None = None) -> tuple[str, float]:
        """A token for `player` valid from `now` for at least `ttl_s`, and when it expires (its `exp`,
        a whole second: see gameserver/tokens.py)."""
        expires_at = expiry_after(now, ttl_s if ttl_s is not None else self.guest_ttl_s)
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": player, "iat": int(now), "exp": int(expires_at)}
        return jwt.encode(claims, self.secret, algorithm="HS256"), expires_at

    def guest(self, now: float) -> tuple[str, str, float]:
        """A new guest player id, its token and when that expires."""
        player = GUEST_PREFIX + secrets.token_hex(8)
        token, expires_at = self.sign(player, now)
        return player, token, expires_at

    def verify(self, header: str | None, now: float) -> str:
        """The player id of an `Authorization: Bearer ...` header, or AuthError."""
        if not header:
            raise AuthError("this endpoint needs a player bearer token (Authorization: Bearer ...)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        token = token.strip()
        known = self._verified.get(token)
        if known is not None:
            if known[1] <= now:
                raise AuthError("player token expired")
            return known[0]
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"], audience=AUDIENCE,
                                options={"verify_exp": False, "verify_iat": False, "require": ["exp", "sub", "aud"]})
        except jwt.InvalidTokenError as error:
            raise AuthError(f"invalid player token: {error}") from None
        exp = claimed_expiry(claims)
        if exp is None:
            raise AuthError("invalid player token: exp is not a finite number")
        if exp <= now:
            raise AuthError("player token expired")
        try:
            player = check_player_id(claims["sub"])
        except (InvalidId, TypeError) as error:
            raise AuthError(f"invalid player token: {error}") from None
        self._verified.add(token, player, exp)
        return player
