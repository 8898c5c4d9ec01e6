"""Player tokens: signed, checked, expiring; the cache of verified tokens never outlives a token."""

import jwt
import pytest

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
