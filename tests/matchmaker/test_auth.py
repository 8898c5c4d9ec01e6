"""Player tokens: signed, checked, expiring; the cache of verified tokens never outlives a token."""

import jwt
import pytest
from hypothesis import given, settings, strategies as st

from matchmaker.auth import AuthError, PlayerAuth

SECRET = b"s" * 32


def test_a_signed_token_names_its_player_until_it_expires_even_when_cached():
    auth = PlayerAuth(SECRET, guests=False)
    token, expires_at = auth.sign("ann", now=1000.0, ttl_s=60)
    assert auth.verify(f"Bearer {token}", 1001.0) == "ann"
    assert auth.verify(f"bearer {token}", 1059.0) == "ann"  # from the cache
    with pytest.raises(AuthError, match="expired"):
        auth.verify(f"Bearer {token}", expires_at)


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Bearer not-a-jwt"])
def test_malformed_headers_are_refused(header):
    with pytest.raises(AuthError):
        PlayerAuth(SECRET, guests=False).verify(header, 0.0)


def test_forged_wrong_audience_and_bad_subjects_are_refused():
    auth = PlayerAuth(SECRET, guests=False)
    forged = PlayerAuth(b"f" * 32, guests=False).sign("ann", 0.0)[0]
    join_token = jwt.encode({"iss": "arbiter", "sub": "ann", "exp": 10**10, "mid": "x"}, SECRET, algorithm="HS256")
    bad_subject = jwt.encode({"aud": "arbiter:player", "sub": "../etc", "exp": 10**10}, SECRET, algorithm="HS256")
    none_alg = jwt.encode({"aud": "arbiter:player", "sub": "ann", "exp": 10**10}, None, algorithm="none")
    for token in (forged, join_token, bad_subject, none_alg):
        with pytest.raises(AuthError):
            auth.verify(f"Bearer {token}", 1.0)


def test_guests_get_fresh_ids():
    auth = PlayerAuth(SECRET, guests=True)
    first, second = auth.guest(0.0), auth.guest(0.0)
    assert first[0] != second[0] and first[0].startswith("guest-")
    assert auth.verify(f"Bearer {first[1]}", 1.0) == first[0]


def signed_claims(claims_json: str) -> str:
    """A correctly signed player token whose payload is this JSON text (json.dumps cannot write 1e400)."""
    return jwt.api_jws.encode(claims_json.encode(), SECRET, algorithm="HS256")


@pytest.mark.parametrize("exp", ["1" + "0" * 400, "1e400", "NaN", "Infinity", "-Infinity", "true", '"4e9"'])
def test_a_signed_token_whose_exp_is_not_a_finite_number_is_refused(exp):
    token = signed_claims('{"aud": "arbiter:player", "sub": "ann", "exp": %s}' % exp)
    with pytest.raises(AuthError, match="exp is not a finite number|expired"):
        PlayerAuth(SECRET, guests=False).verify(f"Bearer {token}", 1000.0)


@settings(max_examples=200, deadline=None)
@given(now=st.floats(0, 1e10), ttl_s=st.floats(5e-324, 30 * 24 * 3600.0))
def test_a_player_token_expires_when_it_says_and_never_before_its_lifetime(now, ttl_s):
    auth = PlayerAuth(SECRET, guests=False)
    token, expires_at = auth.sign("ann", now, ttl_s)
    assert jwt.decode(token, options={"verify_signature": False})["exp"] == expires_at
    assert now + ttl_s < expires_at <= now + ttl_s + 1
    assert auth.verify(f"Bearer {token}", now) == "ann"
    with pytest.raises(AuthError, match="expired"):
        auth.verify(f"Bearer {token}", expires_at)
