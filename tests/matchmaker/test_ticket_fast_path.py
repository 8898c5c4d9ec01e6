"""The ticket routes' fast path (matchmaker/ticket_fast_path.py) answers exactly as the FastAPI routes do.

Two apps from create_app, each with its own matchmaker on the same fixed clock: one as served (the
fast path in front), one without the fast path. Hypothesis sends both the same requests (good and bad
bodies, content types, tokens) and the answers must be the same, apart from the random ticket ids.
"""

import itertools
import json
import math

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gameserver.config import NodeConfig
from gameserver.games import builtin_games
from gameserver.node import Node
from matchmaker.api import create_app
from matchmaker.auth import PlayerAuth
from matchmaker.http_common import MAX_BODY_BYTES
from matchmaker.placement import NodePlacement
from matchmaker.queues import default_modes
from matchmaker.service import Matchmaker
from matchmaker.ticket_fast_path import TicketFastPath, parse_ticket_request

NOW = 1_000_000.0
SECRET = b"k" * 32


def clock():
    return NOW


def make_app(tmp_path, name, fast):
    node = Node(NodeConfig(data_dir=tmp_path / name), builtin_games())
    matchmaker = Matchmaker(default_modes(), NodePlacement(node, b"s" * 32, lambda: "ws://x"), clock=clock)
    auth = PlayerAuth(secret=SECRET, guests=False)
    app = create_app(node, secret=b"s" * 32, ws_base=lambda: "ws://x", connections=lambda: 0, wall_clock=clock,
                     matchmaker=matchmaker, auth=auth)
    if not fast:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not TicketFastPath]
    return app


@pytest.fixture(scope="module")
def apps(tmp_path_factory):
    root = tmp_path_factory.mktemp("fast-path")
    return make_app(root, "fast", fast=True), make_app(root, "slow", fast=False)


async def call(app, method, path, headers=(), body=b"", query=b""):
    """(status, headers, body) of one request, the body in one message."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
             "root_path": "", "headers": [(b"host", b"test"), *headers], "client": ("127.0.0.1", 1),
             "server": ("127.0.0.1", 2)}
    sent, delivered = [], False

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await trio.sleep_forever()

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def normalised(answer):
    """What must agree: the status, the content type, the body without the random ticket id."""
    status, headers, body = answer
    value = json.loads(body) if body else None
    if isinstance(value, dict):
        value.pop("ticket_id", None)
    return status, headers.get(b"content-type"), value


def token(player, ttl=3600):
    return PlayerAuth(secret=SECRET, guests=False).sign(player, NOW, ttl_s=ttl)[0]


players = itertools.count()
anything = st.recursive(st.none() | st.booleans() | st.integers(-10, 10**30) | st.floats() | st.text(max_size=5),
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                                     max_size=3), max_leaves=6)
# values that a number, a string or a list must not be (or may be: ints for floats, huge ints, NaN)
tricky = st.sampled_from([True, False, None, "1", "", 1, -1, 10**400, 1.5, math.inf, math.nan, [], {}, ["eu"]])
number = tricky | tricky | st.floats() | st.integers(-10, 10**400)
regions = st.sampled_from(["eu", "us", "", "eu\n"])
MANY = 65  # one more than a ticket's properties, or a party's players


@st.composite
def requests(draw):
    """A mostly valid request with a few things wrong (or none)."""
    player = f"p{next(players)}"
    fields = {"queue": draw(st.sampled_from(["arena", "connect_four"]))}
    if draw(st.booleans()):
        fields["numbers"] = {"skill": draw(st.floats(0, 3000) | st.integers(0, 3000))}
    if draw(st.booleans()):
        fields["string_sets"] = {"regions": draw(st.lists(st.sampled_from(["eu", "us"]), max_size=2))}
    if draw(st.booleans()):
        fields["latencies"] = {"eu": draw(st.floats(0, 300))}
    if draw(st.booleans()):
        fields["party"] = draw(st.sampled_from([[player], [player, player + "f"], None]))
    wrong = {
        "queue": st.sampled_from(["nope", "arena\n", "", "a" * 65]) | tricky,
        "party": st.sampled_from([[], [player + "f"], player, [1], [player] * MANY, [player, "bad id"],
                                  [player, player], [player] + [f"{player}-{n}" for n in range(MANY)]]) | anything,
        "numbers": st.dictionaries(st.sampled_from(["skill", "skill", "x", "", "a b"]), number, min_size=1, max_size=2)
        | st.just({f"n{n}": 1.0 for n in range(MANY)}) | anything,
        "strings": st.dictionaries(st.sampled_from(["mode", "mode", "", "a b"]), tricky | st.text(max_size=3),
                                   min_size=1, max_size=2)
        | st.just({f"s{n}": "x" for n in range(MANY)}) | anything,
        "string_sets": st.dictionaries(st.sampled_from(["regions", "regions", "x"]),
                                       tricky | st.lists(regions | tricky, max_size=3), min_size=1, max_size=2)
        | st.just({"regions": [f"r{n}" for n in range(MANY)]}) | st.just({f"r{n}": [] for n in range(MANY)})
        | anything,
        "latencies": st.dictionaries(regions, st.floats(-1, 500) | number, min_size=1, max_size=2)
        | st.just({f"r{n}": 1.0 for n in range(MANY)}) | anything,
        "extra": anything,
    }
    for name in draw(st.lists(st.sampled_from(sorted(wrong)), max_size=2, unique=True)):
        fields[name] = draw(wrong[name])
    if draw(st.integers(0, 9)) == 0:
        del fields["queue"]
    body = json.dumps(fields).encode()  # NaN and Infinity included, as Python's json writes them
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.sampled_from([b"", b"[]", b"null", b"{", body + b"x", json.dumps(fields).encode("utf-16")]))
    content_type = b"application/json"
    if draw(st.integers(0, 5)) == 0:
        content_type = draw(st.sampled_from([b"application/json; charset=utf-8", b"text/plain", None,
                                             b"application/merge-patch+json", b"APPLICATION/JSON"]))
    authorization = b"Bearer " + token(player).encode()
    if draw(st.integers(0, 5)) == 0:
        authorization = draw(st.sampled_from([b"bearer " + token(player).encode(), b"Bearer nonsense", b"Basic abc",
                                              None, b"Bearer " + token(player, ttl=-1).encode()]))
    headers = [(b"content-length", b"%d" % len(body))]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if authorization is not None:
        headers.append((b"authorization", authorization))
    return player, headers, body


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
@given(requests())
def test_the_fast_path_answers_as_fastapi_does(apps, request_):
    fast, slow = apps
    player, headers, body = request_

    async def both(method, path, headers, body=b"", query=b""):
        answers = [await call(app, method, path, headers, body, query) for app in (fast, slow)]
        assert normalised(answers[0]) == normalised(answers[1]), (method, path, headers, body)
        return answers

    async def run():
        created = await both("POST", "/v1/tickets", headers, body)
        if created[0][0] != 201:
            return
        auth = [(b"authorization", b"Bearer " + token(player).encode())]
        stranger = [(b"authorization", b"Bearer " + token(player + "-x").encode())]
        ids = [json.loads(answer[2])["ticket_id"] for answer in created]
        for method, who, query in (("GET", auth, b""), ("GET", stranger, b""), ("GET", auth, b"wait_s=0"),
                                   ("DELETE", stranger, b""), ("DELETE", auth, b""), ("DELETE", auth, b""),
                                   ("GET", auth, b"")):
            answers = [await call(app, method, f"/v1/tickets/{ticket_id}", who, query=query)
                       for app, ticket_id in zip((fast, slow), ids)]
            first, second = (normalised(a) for a in answers)
            if first[2] is not None and "detail" in first[2]:  # a refusal names the ticket: its own in each app
                first[2]["detail"] = first[2]["detail"].replace(ids[0], "ID")
                second[2]["detail"] = second[2]["detail"].replace(ids[1], "ID")
            assert first == second, (method, who, query)

    trio.run(run)


EDGES = [{"queue": "arena\n"}, {"queue": "arena", "party": "ann"}, {"queue": "arena", "numbers": {"skill": True}},
         {"queue": "arena", "numbers": {"skill": "1"}}, {"queue": "arena", "numbers": {"skill": 10**400}},
         {"queue": "arena", "numbers": {"skill": math.inf}}, {"queue": "arena", "numbers": None},
         {"queue": "arena", "party": []}, {"queue": "arena", "x": 1}, {"queue": 5}, {},
         {"queue": "arena", "numbers": {f"n{n}": 1 for n in range(MANY)}},
         {"queue": "arena", "strings": {f"s{n}": "x" for n in range(MANY)}},
         {"queue": "arena", "string_sets": {f"s{n}": [] for n in range(MANY)}},
         {"queue": "arena", "latencies": {f"r{n}": 1 for n in range(MANY)}},
         {"queue": "arena", "string_sets": {"regions": "eu"}}, {"queue": "arena", "strings": {"mode": 1}},
         {"queue": "arena", "latencies": {"eu": False}}, {"queue": "arena", "string_sets": {"regions": [1]}}]


@pytest.mark.parametrize("fields", EDGES)
def test_edge_cases_are_answered_alike(apps, fields):
    player = f"p{next(players)}"
    body = json.dumps(fields).encode()
    headers = [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json"),
               (b"authorization", b"Bearer " + token(player).encode())]
    fast, slow = (trio.run(call, app, "POST", "/v1/tickets", headers, body) for app in apps)
    assert normalised(fast) == normalised(slow)
    assert fast[0] == 422


def test_plain_requests_never_reach_fastapi_and_the_rest_do(tmp_path):
    app = make_app(tmp_path, "count", fast=True)
    reached = []

    async def run():
        await call(app, "GET", "/healthz")  # builds the middleware stack
        fast = app.middleware_stack
        while not isinstance(fast, TicketFastPath):
            fast = fast.app
        inner = fast.app

        async def counting(scope, receive, send):
            reached.append((scope["method"], scope["path"]))
            await inner(scope, receive, send)

        fast.app = counting
        auth = [(b"authorization", b"Bearer " + token("ann").encode())]
        body = json.dumps({"queue": "arena", "numbers": {"skill": 1500}}).encode()
        json_body = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        status, _, answer = await call(app, "POST", "/v1/tickets", auth + json_body, body)
        assert status == 201
        ticket_id = json.loads(answer)["ticket_id"]
        assert (await call(app, "GET", f"/v1/tickets/{ticket_id}", auth))[0] == 200
        assert (await call(app, "DELETE", f"/v1/tickets/{ticket_id}", auth))[0] == 200
        assert reached == []
        assert (await call(app, "GET", f"/v1/tickets/{ticket_id}", auth, query=b"wait_s=0"))[0] == 200
        assert (await call(app, "GET", f"/v1/tickets/{ticket_id}", []))[0] == 401
        assert (await call(app, "POST", "/v1/tickets", auth + json_body, b'{"queue": 5}'))[0] == 422
        assert len(reached) == 3

    trio.run(run)


def test_the_body_limit_still_holds(tmp_path):
    app = make_app(tmp_path, "limit", fast=True)
    auth = [(b"authorization", b"Bearer " + token("ann").encode())]
    body = json.dumps({"queue": "arena", "strings": {"x": "y" * MAX_BODY_BYTES}}).encode()
    headers = auth + [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    status, headers_out, answer = trio.run(call, app, "POST", "/v1/tickets", headers, body)
    assert status == 413 and json.loads(answer)["code"] == "body_too_large"
    assert headers_out[b"content-type"] == b"application/problem+json"


@pytest.mark.parametrize("body", [b'{"queue": "arena\\n"}', b'{"queue": "arena", "party": "ann"}',
                                  b'{"queue": "arena", "numbers": {"skill": true}}', b'{"queue": "arena", "x": 1}',
                                  b'{"queue": "arena", "numbers": {"skill": "1"}}', b'["arena"]',
                                  b'{"queue": "arena", "party": []}', b'{"queue": "arena", "numbers": null}'])
def test_what_pydantic_refuses_the_fast_path_leaves_to_it(body):
    assert parse_ticket_request(body) is None


def test_the_fast_path_reads_a_plain_ticket_as_pydantic_does():
    parsed = parse_ticket_request(b'{"queue": "arena", "party": ["ann", "bob"], "numbers": {"skill": 1500}, '
                                  b'"string_sets": {"regions": ["eu"]}, "latencies": {"eu": 20.5}, "party": null}')
    assert parsed.queue == "arena" and parsed.party is None  # the last of two keys, as json.loads reads it
    assert parsed.numbers == {"skill": 1500.0} and type(parsed.numbers["skill"]) is float
    assert parsed.string_sets == {"regions": ["eu"]} and parsed.latencies == {"eu": 20.5}
    assert math.isinf(parse_ticket_request(b'{"queue": "a", "numbers": {"s": Infinity}}').numbers["s"])
