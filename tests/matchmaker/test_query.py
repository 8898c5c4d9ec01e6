"""Query parameters are written one way only (matchmaker/query.py): decimal digits, an optional
fraction for numbers, `true` or `false`; whatever Python's float(), int() or a looser boolean would also
take is a 422 `invalid_request` naming the parameter."""

import pytest
from hypothesis import given, strategies as st

from matchmaker import query
from matchmaker.http_app import ApiError


def refused(read, *args, **kwargs) -> str:
    with pytest.raises(ApiError) as raised:
        read(*args, **kwargs)
    assert (raised.value.status, raised.value.code) == (422, "invalid_request")
    return raised.value.detail


@pytest.mark.parametrize("text", ["1_0", " 1", "1 ", "+1", "-0", "1e1", "1.", ".5", "1.5.0", "0x10", "inf", "nan",
                                  "１", "٣", "", "1,5"])
def test_a_number_is_decimal_digits_with_an_optional_fraction(text):
    assert refused(query.number, {"w": [text]}, "w", 0.0, low=0, high=60).startswith("query.w: expected decimal")


def test_numbers_within_bounds():
    assert [query.number({"w": [text]}, "w", 0.0, low=0, high=60) for text in ("0", "10", "2.5", "007", "60.0")] == [
        0.0, 10.0, 2.5, 7.0, 60.0]
    assert query.number({}, "w", 0.5, low=0, high=60) == 0.5
    assert refused(query.number, {"w": ["60.01"]}, "w", 0.0, low=0, high=60) == "query.w: must be from 0 to 60"
    assert refused(query.number, {"w": ["9" * 400]}, "w", 0.0, low=0, high=60) == "query.w: must be from 0 to 60"


@pytest.mark.parametrize("text", [" +1", "+1", " 1", "1 ", "-0", "1_0", "1.0", "1e3", "٣", "", "9" * 19])
def test_an_integer_is_decimal_digits(text):
    assert refused(query.integer, {"v": [text]}, "v", None, low=0).startswith("query.v: expected decimal digits")


def test_integers_within_bounds():
    assert query.integer({"v": ["7"]}, "v", None, low=0) == 7 and query.integer({}, "v", None, low=0) is None
    assert refused(query.integer, {"v": ["1001"]}, "v", 1, low=1, high=1000) == "query.v: must be from 1 to 1000"


@pytest.mark.parametrize("text", ["YES", "yes", "on", "t", "1", "0", "off", "f", "no", "True", "FALSE", " true", ""])
def test_a_boolean_is_true_or_false(text):
    assert refused(query.boolean, {"j": [text]}, "j") == f"query.j: expected true or false, got {text!r}"


def test_booleans():
    assert [query.boolean({"j": [text]}, "j") for text in ("true", "false")] == [True, False]
    assert query.boolean({}, "j") is None


@given(st.text(st.sampled_from("0123456789._+- e١"), max_size=6))
def test_a_number_is_accepted_exactly_when_it_is_digits_and_in_range(text):
    plain = text.isascii() and text.replace(".", "", 1).isdigit() and not text.startswith(".") \
        and not text.endswith(".")
    try:
        value = query.number({"w": [text]}, "w", 0.0, low=0, high=60)
    except ApiError:
        assert not plain or float(text) > 60
    else:
        assert plain and value == float(text)
