"""The checksum: the BLAKE2b-64 of the canonical text as a big-endian signed integer. Match files store
it for every tick, so it may never change: the same number as the formula it was written with."""

import pytest
import hashlib

from hypothesis import given
from hypothesis import strategies as st

from gameserver import canonical


def reference(text: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big", signed=True)


@given(st.binary(max_size=4096))
def test_the_checksum_is_the_blake2b_64_as_a_signed_big_endian_integer(text):
    assert canonical.checksum(text) == reference(text)
    assert -2 ** 63 <= canonical.checksum(text) < 2 ** 63


def test_known_checksums_do_not_change():
    # BLAKE2b-64 of b"" is e4a6a0577479b2b4 and of an empty arena state 1dd850e8594b9438 (negative when the
    # top bit is set): the numbers existing files hold for such states
    assert canonical.checksum(b"") == -1970711489451281740
    assert canonical.checksum(b'{"tick":0,"players":{}}') == 2150557780930171960


def test_checksums_in_a_row_do_not_share_state():
    texts = [b"a", b"b" * 300, b"", b"a"]
    assert [canonical.checksum(t) for t in texts] == [reference(t) for t in texts]


def test_flat_keys_tell_apart_equal_values_that_are_different_inputs():
    from gameserver.canonical import flat_key

    keys = [flat_key({"x": v}) for v in (0.0, -0.0, 0, False, 1, 1.0, True)]
    assert len(set(keys)) == len(keys)
    assert flat_key({"x": 0.5, "y": "a"}) == flat_key({"x": 0.5, "y": "a"})
    with pytest.raises(TypeError):
        flat_key({"x": [1]})
