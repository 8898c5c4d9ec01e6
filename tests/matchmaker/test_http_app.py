"""The HTTP API's routing (matchmaker/http_app.py), pages (matchmaker/pages.py) and query parameters
(matchmaker/query.py), called as ASGI apps in the test's own loop. The server around them is tested over
loopback in test_http_server.py, test_matchmaking_api.py and test_schema.py."""

import json

import pytest

from matchmaker import query
from matchmaker.http_app import ApiError, App, Request, Route, json_response, problem
from matchmaker.pages import WEB, document_routes, openapi_text, serve_page


async def call(app, method, path, *, body=b"", headers=(), query_string=b"", chunks=None):
    """Send one request through `app`: (status, headers as a dict, body)."""
    incoming = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in (chunks or [])]
    incoming.append({"type": "http.request", "body": body, "more_body": False})
    sent = []

    async def receive():
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "query_string": query_string,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}  # as servers give them
    await app(scope, receive, send)
    start, *rest = sent
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, b"".join(m["body"] for m in rest)


def echo(name):
    async def handler(request: Request):
        return json_response({"route": name, "params": request.path_params, "body": request.body.decode(),
                              "query": request.query(), "token": request.header(b"authorization")})
    return handler


class Boom(Exception):
    pass


async def failing(_request):
    raise ApiError(409, "taken", "it is taken", headers={"retry-after": "3"})


async def booming(_request):
    raise Boom("mapped")


async def crashing(_request):
    raise KeyError("not mapped")


APP = App([Route("GET", "/v1/things", echo("list")), Route("POST", "/v1/things", echo("create")),
           Route("GET", "/v1/things/{thing_id}", echo("one")), Route("DELETE", "/v1/things/{thing_id}", echo("del")),
           Route("GET", "/v1/things/{thing_id}/parts/{part}", echo("part")),
           Route("GET", "/taken", failing), Route("GET", "/boom", booming), Route("GET", "/crash", crashing)],
          errors=lambda error: problem(418, "mapped", str(error)) if isinstance(error, Boom) else None)


async def test_routes_by_path_and_method_with_parameters():
    status, _, body = await call(APP, "GET", "/v1/things/abc/parts/7", query_string=b"a=1&a=2&b=",
                                 headers=[("Authorization", "Bearer t")])
    assert status == 200
    assert json.loads(body) == {"route": "part", "params": {"thing_id": "abc", "part": "7"}, "body": "",
                                "query": {"a": ["1", "2"], "b": [""]}, "token": "Bearer t"}
    assert json.loads((await call(APP, "DELETE", "/v1/things/x"))[2])["route"] == "del"
    status, _, body = await call(APP, "POST", "/v1/things", chunks=[b"ab", b"c"], body=b"d")
    assert (status, json.loads(body)["body"]) == (200, "abcd")


@pytest.mark.parametrize("path", ["/v1/things/", "/v1/things/a/b", "/v1/things/a/parts/", "/v1", "/nothing",
                                  "/v1/things/a/parts/1/2"])
async def test_a_path_no_route_has_is_404_problem(path):
    status, headers, body = await call(APP, "GET", path)
    assert (status, headers["content-type"]) == (404, "application/problem+json")
    assert json.loads(body) == {"type": "about:blank", "title": "not found", "status": 404, "detail": "Not Found",
                                "code": "not_found"}


async def test_another_method_is_405_with_allow():
    status, headers, body = await call(APP, "PUT", "/v1/things/x")
    assert (status, headers["allow"], json.loads(body)["code"]) == (405, "GET, DELETE, HEAD", "method_not_allowed")
    status, headers, _ = await call(App([Route("POST", "/only-post", echo("p"))]), "HEAD", "/only-post")
    assert (status, headers["allow"]) == (405, "POST")


async def test_head_runs_the_get_route():
    """The server sends the head only (test_http_hardening.py checks that on the wire)."""
    status, headers, body = await call(APP, "HEAD", "/v1/things/abc")
    assert (status, json.loads(body)["route"]) == (200, "one")
    assert int(headers["content-length"]) == len(body)


async def test_errors_become_problems_and_others_propagate():
    status, headers, body = await call(APP, "GET", "/taken")
    assert (status, headers["retry-after"]) == (409, "3")
    assert json.loads(body) == {"type": "about:blank", "title": "taken", "status": 409, "detail": "it is taken",
                                "code": "taken"}
    status, _, body = await call(APP, "GET", "/boom")
    assert (status, json.loads(body)["code"]) == (418, "mapped")
    with pytest.raises(KeyError):  # the server answers 500 and logs it (test_http_server.py)
        await call(APP, "GET", "/crash")


async def test_a_client_that_leaves_before_its_body_gets_no_answer():
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await APP({"type": "http", "method": "POST", "path": "/v1/things", "headers": []}, receive, send)
    assert sent == []


async def test_a_websocket_is_routed_or_refused():
    seen = []

    async def handler(scope, receive, send, params):
        seen.append(params)

    app = App([], websockets=[("/w/{match_id}", handler)])
    sent = []

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        sent.append(message)

    await app({"type": "websocket", "path": "/w/m1", "headers": []}, receive, send)
    assert seen == [{"match_id": "m1"}] and sent == []
    await app({"type": "websocket", "path": "/other", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1000}]


# -- pages ------------------------------------------------------------------------------------------


PAGES = App(document_routes(), fallback=serve_page)


async def test_pages_are_files_of_the_web_directory():
    status, headers, body = await call(PAGES, "GET", "/")
    assert (status, headers["content-type"], body) == (200, "text/html; charset=utf-8",
                                                       (WEB / "index.html").read_bytes())
    status, headers, body = await call(PAGES, "GET", "/arbiter.js")
    assert (status, headers["content-type"]) == (200, "text/javascript; charset=utf-8")
    assert body == (WEB / "arbiter.js").read_bytes()
    etag = headers["etag"]
    status, _, body = await call(PAGES, "GET", "/arbiter.js", headers=[("If-None-Match", f'"x", {etag}')])
    assert (status, body) == (304, b"")


@pytest.mark.parametrize("path", ["/../pyproject.toml", "/..", "/.hidden", "/web/index.html", "/nope.html",
                                  "//etc/passwd", "/%2e%2e/x", "/index.html/"])
async def test_nothing_outside_the_web_directory_is_served(path):
    status, _, body = await call(PAGES, "GET", path)
    assert (status, json.loads(body)["code"]) == (404, "not_found")


async def test_pages_take_get_and_head_only():
    status, headers, _ = await call(PAGES, "POST", "/index.html")
    assert (status, headers["allow"]) == (405, "GET, HEAD")
    assert (await call(PAGES, "HEAD", "/index.html"))[0] == 200


@pytest.mark.parametrize("path", ["/v1/nonexistent", "/v1/things/", "/nope.html", "/.."])
async def test_a_path_that_is_no_page_is_404_whatever_the_method(path):
    for method in ("POST", "PUT", "DELETE"):
        status, headers, body = await call(PAGES, method, path)
        assert (status, json.loads(body)["code"], "allow" in headers) == (404, "not_found", False)


async def test_the_openapi_document_and_its_viewer():
    status, headers, body = await call(PAGES, "GET", "/openapi.json")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert json.loads(body) == json.loads(openapi_text())
    status, headers, body = await call(PAGES, "GET", "/docs")
    assert status == 200 and b'url: "/openapi.json"' in body


# -- query parameters ---------------------------------------------------------------------------------


def refused(function, *args, **kwargs):
    with pytest.raises(ApiError) as raised:
        function(*args, **kwargs)
    assert (raised.value.status, raised.value.code) == (422, "invalid_request")
    return raised.value.detail


def test_numbers_are_finite_and_within_bounds():
    assert query.number({}, "w", 0.5, low=0, high=60) == 0.5
    assert query.number({"w": ["1", "2.5"]}, "w", 0, low=0, high=60) == 2.5  # the last one counts
    for text in ("nan", "inf", "-1", "60.01", "x", ""):
        assert refused(query.number, {"w": [text]}, "w", 0, low=0, high=60).startswith("query.w: ")


def test_integers_are_digits_within_bounds():
    assert query.integer({"v": ["7"]}, "v", None, low=0) == 7
    assert query.integer({}, "v", None, low=0) is None
    for text in ("1.5", "1e3", "-1", "x", "", "9" * 19, " 7 ", "+7", "1_0"):
        assert refused(query.integer, {"v": [text]}, "v", None, low=0).startswith("query.v: ")
    assert refused(query.integer, {"v": ["1001"]}, "v", 1, low=1, high=1000) == "query.v: must be from 1 to 1000"


def test_booleans_and_texts():
    assert [query.boolean({"j": [t]}, "j") for t in ("true", "false")] == [True, False]
    assert query.boolean({}, "j") is None
    for text in ("maybe", "YES", "1", "off", "f", "True"):
        assert refused(query.boolean, {"j": [text]}, "j") == f"query.j: expected true or false, got {text!r}"
    assert refused(query.text, {"g": ["x" * 65]}, "g", max_length=64) == "query.g: at most 64 characters"
    assert refused(query.texts, {"l": ["a"] * 17}, "l", max_items=16) == "query.l: at most 16 values"
    assert query.texts({}, "l", max_items=16) == []


def whole_app(data_dir, admin_token=None):
    """create_app as `arbiter up --workers 1` builds it, on a node that is not running."""
    from gameserver.config import NodeConfig
    from gameserver.node import Node
    from matchmaker.api import create_app
    from matchmaker.auth import PlayerAuth
    from matchmaker.placement import NodePlacement
    from matchmaker.queues import default_modes
    from matchmaker.service import Matchmaker
    from tools.cli import builtin_games

    node = Node(NodeConfig(data_dir=data_dir), builtin_games())
    matchmaker = Matchmaker(default_modes(), NodePlacement(node, b"x" * 32, lambda: "ws://x"))
    return create_app(node, secret=b"x" * 32, ws_base=lambda: "ws://x", connections=lambda: 0, matchmaker=matchmaker,
                      auth=PlayerAuth(secret=b"y" * 32, guests=True), admin_token=admin_token)


def test_the_document_describes_every_route_and_no_other(tmp_path):
    """matchmaker/openapi.json is written by hand: each operation in it is a route of the app, and each
    route of the app (but the document and its viewer) is in it."""
    app = whole_app(tmp_path).app
    routes = {(route.method, route.template) for route in app.routes}
    documented = {(method.upper(), path) for path, operations in json.loads(openapi_text())["paths"].items()
                  for method in operations}
    assert routes - {("GET", "/openapi.json"), ("GET", "/docs")} == documented


async def test_the_body_limit_by_length_and_while_chunked():
    from matchmaker.body_limit import BodyLimit

    limited = BodyLimit(APP, max_bytes=10)
    status, _, body = await call(limited, "POST", "/v1/things", body=b"x" * 10, headers=[("content-length", "10")])
    assert (status, json.loads(body)["body"]) == (200, "x" * 10)
    for length in ("11", "-1", "1e3"):
        status, headers, body = await call(limited, "POST", "/v1/things", headers=[("content-length", length)])
        assert (status, headers["connection"], json.loads(body)["code"]) == (413, "close", "body_too_large")
    chunked = [("transfer-encoding", "chunked")]
    status, _, body = await call(limited, "POST", "/v1/things", chunks=[b"x" * 6], body=b"y" * 4, headers=chunked)
    assert (status, json.loads(body)["body"]) == (200, "x" * 6 + "y" * 4)
    status, _, body = await call(limited, "POST", "/v1/things", chunks=[b"x" * 6, b"y" * 6], headers=chunked)
    assert (status, json.loads(body)["code"]) == (413, "body_too_large")  # and nothing else was sent


async def test_the_operations_that_need_a_token_are_those_the_document_says():
    """With an admin token set, an operation answers a request without credentials with 401 exactly when
    the document requires a scheme for it (admin or player); an optional one ({} among the choices) is
    open. The handlers check credentials before their bodies and path parameters."""
    import tempfile
    from pathlib import Path

    document = json.loads(openapi_text())
    with tempfile.TemporaryDirectory() as tmp:
        app = whole_app(Path(tmp), admin_token="t" * 32)
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                required = bool(operation.get("security")) and {} not in operation["security"]
                concrete = path.replace("{match_id}", "0" * 26).replace("{ticket_id}", "0" * 32)
                status, _, body = await call(app, method.upper(), concrete, body=b"{}",
                                             headers=[("content-type", "application/json")])
                assert (status == 401) == required, (method, path, status, body)
                if required:
                    status, _, _ = await call(app, method.upper(), concrete, body=b"{}", headers=[
                        ("content-type", "application/json"), ("authorization", "Bearer " + "t" * 32)])
                    scheme = next(iter(operation["security"][0]))
                    assert (status == 401) == (scheme == "player"), (method, path, status)  # admin let in
