"""Join tokens: the verified-token cache keeps every check that matters (expiry, secret, forgery)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from gameserver import tokens
from gameserver.token_cache import VerifiedTokens
from gameserver.tokens import Grant, TokenError

SECRET = b"s" * 32
OTHER = b"o" * 32
MATCH = "0" * 26


def token_for(player: str = "alice", expires_at: float = 1000.0, secret: bytes = SECRET) -> str:
    return tokens.sign(secret, Grant(MATCH, player, tokens.PLAYER, expires_at), now=0)


def test_a_cached_token_still_expires():
    token = token_for(expires_at=1000.0)
    assert tokens.verify(SECRET, token, 10.0).player == "alice"
    assert (SECRET, token) in tokens._verified
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(SECRET, token, 1000.0)


def test_a_cached_token_is_refused_under_another_secret():
    token = token_for()
    tokens.verify(SECRET, token, 10.0)
    with pytest.raises(TokenError, match="invalid token"):
        tokens.verify(OTHER, token, 10.0)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 200), st.sampled_from("abcdefghijklmnopqrstuvwxyz-_"))
def test_a_tampered_token_is_refused_and_never_cached(position, char):
    token = token_for(player="bob")
    tokens.verify(SECRET, token, 10.0)
    index = position % len(token)
    tampered = token[:index] + char + token[index + 1:]
    if tampered == token:
        return
    try:
        grant = tokens.verify(SECRET, tampered, 10.0)
    except TokenError:
        assert (SECRET, tampered) not in tokens._verified
    else:  # base64 padding bits: a different string with the same bytes decodes to the same claims
        assert grant == tokens.verify(SECRET, token, 10.0)


def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(tokens, "_verified", VerifiedTokens(8))
    for n in range(20):
        assert tokens.verify(SECRET, token_for(player=f"p{n}"), 10.0).player == f"p{n}"
    assert len(tokens._verified) == 8
    assert tokens.verify(SECRET, token_for(player="p0"), 10.0).player == "p0"  # evicted, verified again
