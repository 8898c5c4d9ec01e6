"""The HTTP API's JSON bodies (matchmaker/bodies.py) accept exactly what matchmaker/openapi.json documents.

For every body class, hypothesis draws objects near the document's schema (its fields and some other
names; values of every JSON type, strings that match the patterns and strings that do not, numbers at
and around the limits), and the server must accept one exactly when the document's JSON Schema does:
`parse`, and for a new ticket also the ticket's own rules (matchmaker/tickets.py) as POST /v1/tickets
applies them. The one limit a JSON Schema cannot state (a ticket's numbers, strings and string sets
together) is in NewTicket's description.
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
from matchmaker.queues import Mode
from matchmaker.service import Matchmaker
from matchmaker.ticket_api import create_ticket_for
from matchmaker.tickets import MAX_PROPERTIES, PlayerCount, QueueConfig

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


def server_refusal(body, cls) -> str | None:
    """`refusal`, and for a ticket that parses, what POST /v1/tickets then refuses with 422 (the ticket's
    rules), in a queue that takes any party the document allows."""
    detail = refusal(body, cls)
    if detail is not None or cls is not NewTicket:
        return detail
    new = parse(request(json.dumps(body).encode()), NewTicket)
    mode = Mode(QueueConfig(queue=new.queue, players=PlayerCount(1, 64), max_wait_s=math.inf), "arena")
    caller = new.party[0] if new.party else "alice"
    try:
        create_ticket_for(Matchmaker({new.queue: mode}, placement=None), caller, new.queue, new.party, new.numbers,
                          new.strings, new.string_sets, new.latencies)
    except ApiError as error:
        assert (error.status, error.code) == (422, "invalid_ticket"), error.detail
        return error.detail
    return None


def documented(body, cls) -> bool:
    """Whether the document allows `body`: its schema, and for a ticket the limit its description states."""
    if not validator(cls).is_valid(body):
        return False
    return cls is not NewTicket or sum(len(body.get(name, {})) for name in (
        "numbers", "strings", "string_sets")) <= MAX_PROPERTIES


names = st.sampled_from(["alice", "arena", "ABCDEFGH", "ABCDEFG2", "a b", "", "x" * 64, "x" * 65, "é", "a\n",
                         "skill", "eu", "player", "spectator", "connect_four", "0000OOOO", "a:b@c.d-e_f"])
numbers = st.one_of(st.sampled_from([0, 0.0, -1, 1, 1.5, 604800, 604800.0, 604800.5, 1e300]),
                    st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False))
leaves = st.one_of(st.none(), st.booleans(), numbers, names)
values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(names, inner, max_size=3)), max_leaves=6)


def many(members):
    """Objects of a few entries, or of about 64 (the documented limit) with any names or with names that
    match the pattern, with these values."""
    return st.one_of(st.dictionaries(names, members, max_size=3),
                     st.dictionaries(st.text(max_size=4), members, min_size=63, max_size=65),
                     st.dictionaries(st.text("ab_.:@-", min_size=1, max_size=4), members, min_size=20, max_size=65))


regions = st.sampled_from(["eu", "us-east", "x" * 64])  # valid members: a set of about 64 has duplicates


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
    "string_sets": many(st.one_of(st.lists(names, max_size=2), st.lists(regions, min_size=63, max_size=65))),
    "private": st.booleans(),
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
    allowed = documented(body, cls)
    detail = server_refusal(body, cls)
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


@pytest.mark.parametrize("body", [
    {"queue": "q", "party": ["ann", "a b"]}, {"queue": "q", "party": ["ann", "ann"]},
    {"queue": "q", "numbers": {"a b": 1}}, {"queue": "q", "numbers": {"": 1}},
    {"queue": "q", "strings": {"é": "x"}}, {"queue": "q", "strings": {"mode": "x" * 65}},
    {"queue": "q", "string_sets": {"regions": ["eu west"]}}, {"queue": "q", "string_sets": {"a\n": ["eu"]}},
    {"queue": "q", "string_sets": {"regions": ["eu"] * 65}},  # 65 as sent, though one region
    {"queue": "q", "latencies": {"eu": -0.5}}, {"queue": "q", "latencies": {"eu/west": 1}},
], ids=lambda body: json.dumps({k: v for k, v in body.items() if k != "queue"})[:40])
def test_what_the_tickets_rules_refuse_the_document_refuses(body):
    assert not validator(NewTicket).is_valid(body)
    assert refusal(body, NewTicket) is None and server_refusal(body, NewTicket) is not None


def test_the_total_of_a_tickets_properties_is_in_the_description():
    body = {"queue": "q", "numbers": {f"n{i}": 1 for i in range(30)}, "strings": {f"s{i}": "x" for i in range(30)},
            "string_sets": {f"t{i}": ["eu"] for i in range(5)}}
    assert validator(NewTicket).is_valid(body) and not documented(body, NewTicket)
    assert "at most 64 properties" in server_refusal(body, NewTicket)
    assert "together have at most 64 entries" in DOCUMENT["components"]["schemas"]["NewTicket"]["description"]


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
