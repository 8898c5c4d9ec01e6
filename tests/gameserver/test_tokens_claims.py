"""Join tokens: the `exp` a token carries is the `expires_at` reported for it, never before `now + ttl`;
and a numeric claim that no float holds (10**400, 1e400, NaN) is an invalid token, never a crash."""

from __future__ import annotations

import json

import jwt
import pytest
from hypothesis import given, settings, strategies as st

from gameserver import tokens
from gameserver.tokens import TokenError

SECRET = b"s" * 32
MATCH = "0" * 26


@settings(max_examples=300, deadline=None)
@given(now=st.floats(0, 1e10), ttl_s=st.one_of(st.floats(5e-324, 7 * 24 * 3600.0), st.sampled_from([0.5, 1.0, 3600.0])))
def test_a_token_expires_when_it_says_and_never_before_its_lifetime(now, ttl_s):
    token, expires_at = tokens.issue(SECRET, MATCH, "ann", tokens.PLAYER, now, ttl_s)
    exp = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert exp == expires_at and expires_at == int(expires_at)  # a whole second, the one reported
    assert now + ttl_s < expires_at <= now + ttl_s + 1
    assert tokens.verify(SECRET, token, now).expires_at == expires_at  # valid when issued, however short
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(SECRET, token, expires_at)


def test_a_half_second_token_is_valid_when_issued():
    token, expires_at = tokens.issue(SECRET, MATCH, "ann", tokens.PLAYER, 1000.7, 0.5)
    assert expires_at == 1002.0 and tokens.verify(SECRET, token, 1001.2).player == "ann"


def test_sign_rounds_a_grants_expiry_up():
    token = tokens.sign(SECRET, tokens.Grant(MATCH, "ann", tokens.PLAYER, 1000.2), now=0)
    assert jwt.decode(token, options={"verify_signature": False})["exp"] == 1001
    assert tokens.verify(SECRET, token, 1000.5).player == "ann"


def signed(claims_json: str) -> str:
    """A correctly signed token whose payload is this JSON text (json.dumps cannot write 1e400)."""
    return jwt.api_jws.encode(claims_json.encode(), SECRET, algorithm="HS256")


def claims(**numeric: str) -> str:
    base = {"iss": "arbiter", "mid": MATCH, "sub": "ann", "role": "player"}
    return json.dumps(base)[:-1] + "".join(f', "{name}": {value}' for name, value in numeric.items()) + "}"


HUGE = ["1" + "0" * 400, "-1" + "0" * 400, "1e400", "-1e400", "NaN", "Infinity", "-Infinity", "true", '"4e9"', "null"]


@pytest.mark.parametrize("value", HUGE)
def test_an_exp_that_is_not_a_finite_number_is_an_invalid_token(value):
    with pytest.raises(TokenError):
        tokens.verify(SECRET, signed(claims(exp=value)), 1000.0)


@pytest.mark.parametrize("value", HUGE)
def test_an_iat_is_not_read(value):
    assert tokens.verify(SECRET, signed(claims(exp="4e9", iat=value)), 1000.0).player == "ann"


@pytest.mark.parametrize("value", HUGE)
def test_an_nbf_out_of_range_is_refused_or_in_the_past_never_raised(value):
    """PyJWT checks nbf (int() of it, against the wall clock): a refusal must be a TokenError."""
    try:
        tokens.verify(SECRET, signed(claims(exp="4e9", nbf=value)), 1000.0)
    except TokenError:
        return
    assert value in ("-1" + "0" * 400, "true")  # before now: int() takes them
