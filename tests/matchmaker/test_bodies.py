"""The HTTP API's JSON bodies (matchmaker/bodies.py) accept exactly what matchmaker/openapi.json documents.

For every body class, hypothesis draws objects near the document's schema (its fields and some other
names; values of every JSON type, strings that match the patterns and strings that do not, numbers at
and around the limits), and `parse` must accept one exactly when the document's JSON Schema does.
"""

import json
import math

import attrs
import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matchmaker.bodies import CreateMatch, JoinByCode, NewCustomMatch, NewTicket, TokenRequest, parse
from matchmaker.http_app import ApiError, Request
from matchmaker.pages import openapi_text

DOCUMENT = json.loads(openapi_text())
CLASSES = [CreateMatch, JoinByCode, NewCustomMatch, NewTicket, TokenRequest]


def validator(cls):
    schema = {"components": DOCUMENT["components"], "$ref": f"#/components/schemas/{cls.__name__}"}
    return jsonschema_rs.Draft202012Validator(schema)


def request(body: bytes, content_type: bytes | None = b"application/json") -> Request:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    return Request({"headers": headers}, {}, body)


def refusal(body, cls, content_type=b"application/json") -> str | None:
    """The 422's detail, or None if `parse` accepted the body."""
    try:
        parse(request(body if isinstance(body, bytes) else json.dumps(body).encode(), content_type), cls)
    except ApiError as error:
        assert (error.status, error.code) == (422, "invalid_request")
        return error.detail
    return None


names = st.sampled_from(["alice", "arena", "ABCDEFGH", "ABCDEFG2", "a b", "", "x" * 64, "x" * 65, "é", "a\n",
                         "skill", "eu", "player", "spectator", "connect_four", "0000OOOO", "a:b@c.d-e_f"])
numbers = st.one_of(st.sampled_from([0, 0.0, -1, 1, 1.5, 604800, 604800.0, 604800.5, 1e300]),
                    st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False))
leaves = st.one_of(st.none(), st.booleans(), numbers, names)
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(names, inner, max_size=3)), max_leaves=6)


def many(members):
    """Objects of a few entries, or of about 64 (the documented limit), with these values."""
    return st.one_of(st.dictionaries(names, members, max_size=3),
                     st.dictionaries(st.text(max_size=4), members, min_size=63, max_size=65))


# For each field: values near what the document allows (valid, at a limit, just past it), or anything.
NEAR = {
    "game": names, "player_id": names, "queue": names, "code": names,
    "params": st.dictionaries(names, values, max_size=3),
    "name": st.one_of(st.none(), names, st.sampled_from(["x" * 256, "x" * 257])),
    "role": st.sampled_from(["player", "spectator", "admin", "Player"]),
    "ttl_s": st.one_of(st.none(), st.sampled_from([0, 0.0, -0.5, 5e-324, 1, 604800, 604800.0, 604800.5, 604801]),
                       numbers),
    "party": st.one_of(st.none(), st.lists(names, max_size=3), st.lists(names, min_size=63, max_size=65)),
    "numbers": many(numbers), "latencies": many(numbers), "strings": many(names),
    "string_sets": many(st.lists(names, max_size=2)), "private": st.booleans(),
}


def near(cls):
    """Objects with `cls`'s required fields and some of its others, each near what is documented or now and
    then anything at all."""
    def value(name):
        return st.one_of(NEAR[name], NEAR[name], NEAR[name], values)

    required = {a.name: value(a.name) for a in attrs.fields(cls) if a.default is attrs.NOTHING}
    optional = {a.name: value(a.name) for a in attrs.fields(cls) if a.default is not attrs.NOTHING}
    return st.fixed_dictionaries(required, optional=optional)


def mutated(body, change, name):
    """`body` with `name` dropped (change 1), a field too many (2), or as it is."""
    if change == 1:
        return {key: value for key, value in body.items() if key != name}
    return {**body, "other": 1} if change == 2 else body


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@settings(max_examples=500, deadline=None)
@given(data=st.data())
def test_a_body_is_accepted_exactly_when_the_document_allows_it(cls, data):
    body = data.draw(near(cls))
    change = data.draw(st.sampled_from([0, 0, 0, 0, 1, 2]))
    body = mutated(body, change, data.draw(st.sampled_from(sorted(body) or [""])))
    allowed = validator(cls).is_valid(body)
    detail = refusal(body, cls)
    assert (detail is None) == allowed, (body, detail)


@pytest.mark.parametrize("cls,body", [
    (NewTicket, {"queue": "arena", "party": ["a", "b"], "numbers": {"skill": 1500}, "strings": {"mode": "x"},
                 "string_sets": {"regions": ["eu"]}, "latencies": {"eu": 23}}),
    (TokenRequest, {"player_id": "alice", "role": "spectator", "ttl_s": 60}),
    (CreateMatch, {"game": "arena", "params": {"duration_s": 30}, "name": "n"}),
    (NewCustomMatch, {"game": "connect_four", "private": True}),
    (JoinByCode, {"code": "ABCDEFGH"}),
])
def test_documented_bodies_are_accepted(cls, body):
    assert validator(cls).is_valid(body)
    assert refusal(body, cls) is None


def test_an_integer_is_a_number_and_nothing_else_is():
    ticket = parse(request(b'{"queue": "q", "numbers": {"skill": 3}}'), NewTicket)
    assert ticket.numbers == {"skill": 3.0} and type(ticket.numbers["skill"]) is float
    assert refusal({"queue": "q", "numbers": {"skill": True}}, NewTicket) == (
        "body.numbers: 'skill': expected a number, got a boolean")
    assert refusal({"player_id": "a", "ttl_s": "60"}, TokenRequest) == "body.ttl_s: expected a number, got a string"


def test_refusals_say_where_and_what():
    assert refusal({"queue": "a b", "party": []}, NewTicket) == (
        "body.queue: must match ^[A-Za-z0-9_.:@-]{1,64}$; body.party: at least 1 item")
    assert refusal({"game": "arena", "x": 1}, CreateMatch) == "body: fields not allowed: x"
    assert refusal({}, CreateMatch) == "body.game: required field missing"
    assert refusal({"player_id": "a", "role": "admin"}, TokenRequest) == (
        "body.role: expected one of 'player', 'spectator'")
    assert refusal({"player_id": "a", "ttl_s": 0}, TokenRequest) == "body.ttl_s: must be greater than 0"
    assert refusal({"queue": "q", "string_sets": {"regions": ["eu", 3]}}, NewTicket) == (
        "body.string_sets: 'regions': [1]: expected a string, got a number")


@pytest.mark.parametrize("body,content_type,detail", [
    (b"{", b"application/json", "body: not JSON"),
    (b"\xff", b"application/json", "body: not JSON"),
    (b"[1]", b"application/json", "body: expected an object, got an array"),
    (b'"x"', b"application/json", "body: expected an object, got a string"),
    (b"[" * 100_000, b"application/json", "body: not JSON"),
    (b'{"game": "arena"}', b"text/plain", "body: expected a JSON body"),
    (b'{"game": "arena"}', None, "body: expected a JSON body"),
])
def test_what_is_not_a_json_object_is_refused(body, content_type, detail):
    assert refusal(body, CreateMatch, content_type).startswith(detail)


def test_json_media_types_with_parameters_and_suffixes_are_json():
    for content_type in (b"application/json; charset=utf-8", b"Application/JSON", b"application/merge-patch+json"):
        assert refusal(b'{"game": "arena"}', CreateMatch, content_type) is None


def test_numbers_beyond_a_float_are_refused_not_raised():
    assert refusal(b'{"queue": "q", "numbers": {"s": 1' + b"0" * 400 + b"}}", NewTicket) == (
        "body.numbers: 's': a number beyond the range of a float")
    ticket = parse(request(b'{"queue": "q", "numbers": {"s": 1e400}}'), NewTicket)  # json reads it as inf:
    assert math.isinf(ticket.numbers["s"])  # the ticket's own rules refuse it (test_matchmaking_api)


def test_a_lone_surrogate_is_refused_anywhere_in_a_body():
    """JSON lets a string escape half a UTF-16 pair, and json.loads takes UTF-8-encoded surrogates from
    bytes; either way Python gets a str that no UTF-8 encoder takes (SQLite's, the wire's, the logs')."""
    for body in (b'{"queue": "q", "strings": {"mode": "\\ud800"}}', b'{"queue": "q", "strings": {"\\udfff": "x"}}',
                 b'{"queue": "q", "strings": {"mode": "\xed\xa0\x80"}}'):
        assert refusal(body, NewTicket).startswith("body: "), body
    assert refusal(b'{"game": "arena", "params": {"deep": [{"x": "\\ud800"}]}}', CreateMatch).startswith(
        "body: a string with a lone surrogate")  # params go to the game, and then into the match file
    assert refusal('{"queue": "q", "strings": {"mode": "\\ud83d\\ude00 é"}}'.encode(), NewTicket) is None
