from hypothesis import given, strategies as st
import pytest

from gameserver import ids


def test_random_ids_are_valid_and_distinct():
    made = {ids.new_match_id() for _ in range(1000)}
    assert len(made) == 1000
    for match_id in made:
        assert ids.check_match_id(match_id) == match_id


@given(st.text(min_size=1, max_size=256))
def test_same_name_same_id_and_always_valid(name):
    first = ids.match_id_from_name(name)
    assert first == ids.match_id_from_name(name)
    assert ids.check_match_id(first) == first


def test_different_names_different_ids():
    assert ids.match_id_from_name("lobby-1") != ids.match_id_from_name("lobby-2")


@pytest.mark.parametrize("bad", [
    "", "../../etc/passwd", "a" * 26 + "/", "A" * 26, "8" + "0" * 25, "0" * 25, "0" * 27,
    "0" * 25 + "i", "0" * 25 + ".", None, 12, b"0" * 26, "0" * 25 + "\x00",
])
def test_malformed_ids_are_refused(bad):
    with pytest.raises(ids.InvalidId):
        ids.check_match_id(bad)


@given(st.text(max_size=40))
def test_a_valid_id_is_a_safe_file_name(text):
    try:
        value = ids.check_match_id(text)
    except ids.InvalidId:
        return
    assert "/" not in value and "\\" not in value and "." not in value and value.isascii()


@pytest.mark.parametrize("bad", ["", "a/b", "a" * 65, "x y", "é", None, "..\\x"])
def test_malformed_player_ids_are_refused(bad):
    with pytest.raises(ids.InvalidId):
        ids.check_player_id(bad)
