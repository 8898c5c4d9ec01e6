"""The HTTP API's request routing: a small ASGI app of routes, answered by plain async functions.

Why not FastAPI, which served this API until 2026-11-24: FastAPI, pydantic, Starlette and the asyncio
they import took about 18 MB of a match server's memory (over a fifth of the 80 MB the server may use
at 100 matches) and about 0.1 ms of CPU per request for routing, dependency solving and pydantic's
round trips. What it did for us is small: match a path, check a bearer token, validate a JSON body
or a few query parameters, and write JSON. Here a route is a method, a path template and a handler;
bodies are attrs classes structured by a strict cattrs converter (matchmaker/bodies.py); the OpenAPI
document is a file (matchmaker/openapi.json), and tests/matchmaker/test_schema.py checks the server
against it with schemathesis.

A GET route also answers HEAD (RFC 9110): its handler runs and the server sends the head only.

Every answer the app makes itself is `application/problem+json` (RFC 9457): 404 `not_found` for a
path no route has, 405 `method_not_allowed` with `Allow` for a known path and another method, and
whatever a handler raises as ApiError, or as an exception `errors` maps to a response. The server
answers in the same shape (`problem`) for what never reaches the app (matchmaker/http_server.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import attrs

PROBLEM = "application/problem+json"
JSON = "application/json"


class ApiError(Exception):
    """An answer other than success: `status`, a stable `code` and a sentence for people."""

    def __init__(self, status: int, code: str, detail: str, headers: Mapping[str, str] | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.headers = status, code, detail, headers


@attrs.frozen
class Response:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[bytes, bytes], ...] = ()

    async def __call__(self, _scope: dict, _receive: Any, send: Any) -> None:
        """As an ASGI app: send itself."""
        await send({"type": "http.response.start", "status": self.status, "headers": [
            (b"content-type", self.content_type.encode("latin-1")),
            (b"content-length", b"%d" % len(self.body)), *self.headers]})
        await send({"type": "http.response.body", "body": self.body})


def _headers(headers: Mapping[str, str] | None) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items())


def json_response(value: Any, status: int = 200, content_type: str = JSON,
                  headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return Response(status, body, content_type, _headers(headers))


def text_response(text: str, content_type: str = "text/plain; charset=utf-8", status: int = 200) -> Response:
    return Response(status, text.encode(), content_type)


def problem(status: int, code: str, detail: str, title: str | None = None,
            headers: Mapping[str, str] | None = None) -> Response:
    return json_response({"type": "about:blank", "title": title or code.replace("_", " "), "status": status,
                          "detail": detail, "code": code}, status, PROBLEM, headers)


@attrs.define
class Request:
    scope: dict
    path_params: dict[str, str]
    body: bytes

    @property
    def method(self) -> str:
        return self.scope["method"]

    def header(self, name: bytes) -> str | None:
        return header(self.scope, name)

    def query(self) -> dict[str, list[str]]:
        """The query parameters, each name with its values in order."""
        found: dict[str, list[str]] = {}
        for name, value in parse_qsl(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
            found.setdefault(name, []).append(value)
        return found


def header(scope: dict, name: bytes) -> str | None:
    """The first value of header `name` (lower case) of an ASGI scope, as Latin-1 text."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


Handler = Callable[[Request], Awaitable[Response]]
WebSocketHandler = Callable[[dict, Any, Any, dict[str, str]], Awaitable[None]]
_PARAMETER = re.compile(r"\{([a-z_]+)\}")


def _compile(template: str) -> re.Pattern[str]:
    """`/v1/matches/{match_id}` -> a pattern whose groups are the parameters (one path segment each)."""
    pattern, last = [], 0
    for found in _PARAMETER.finditer(template):
        pattern.append(re.escape(template[last:found.start()]))
        pattern.append(f"(?P<{found.group(1)}>[^/]+)")
        last = found.end()
    pattern.append(re.escape(template[last:]))
    return re.compile("".join(pattern))


@attrs.frozen
class Route:
    method: str
    template: str
    handler: Handler


class App:
    """ASGI: `routes` first; a path none of them has goes to `fallback` (the browser pages); a WebSocket
    to the first of `websockets` (template, handler(scope, receive, send, path_params)) that matches."""

    def __init__(self, routes: Sequence[Route], *, fallback: Callable[[dict, Any, Any], Awaitable[None]] | None = None,
                 websockets: Sequence[tuple[str, WebSocketHandler]] = (),
                 errors: Callable[[Exception], Response | None] = lambda _error: None):
        self.routes = list(routes)
        by_template: dict[str, dict[str, Route]] = {}
        for route in self.routes:
            by_template.setdefault(route.template, {})[route.method] = route
        self.exact = {template: by_method for template, by_method in by_template.items()
                      if not _PARAMETER.search(template)}
        self.templated = [(_compile(template), by_method) for template, by_method in by_template.items()
                          if _PARAMETER.search(template)]
        self.fallback = fallback
        self.websockets = [(_compile(template), handler) for template, handler in websockets]
        self.errors = errors

    def match(self, path: str) -> tuple[dict[str, Route], dict[str, str]]:
        """The routes of `path` by method, and its parameters (of the first template that matches)."""
        exact = self.exact.get(path)
        if exact is not None:
            return exact, {}
        for pattern, by_method in self.templated:
            found = pattern.fullmatch(path)
            if found is not None:
                return by_method, found.groupdict()
        return {}, {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # lifespan: nothing to set up
        by_method, params = self.match(scope["path"])
        if not by_method:
            if self.fallback is not None:
                await self.fallback(scope, receive, send)
            else:
                await problem(404, "not_found", "Not Found")(scope, receive, send)
            return
        method = scope["method"]
        route = by_method.get("GET" if method == "HEAD" else method)
        if route is None:
            allow = ", ".join([*by_method, "HEAD"] if "GET" in by_method else by_method)
            await problem(405, "method_not_allowed", "Method Not Allowed", headers={"allow": allow})(
                scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            return  # the client left
        try:
            response = await route.handler(Request(scope, params, body))
        except ApiError as error:
            response = problem(error.status, error.code, error.detail, headers=error.headers)
        except Exception as error:
            mapped = self.errors(error)
            if mapped is None:
                raise
            response = mapped
        await response(scope, receive, send)

    async def _websocket(self, scope: dict, receive: Any, send: Any) -> None:
        for pattern, handler in self.websockets:
            found = pattern.fullmatch(scope["path"])
            if found is not None:
                await handler(scope, receive, send, found.groupdict())
                return
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1000})  # refused before the handshake: 403


async def _read_body(receive: Any) -> bytes | None:
    """The whole request body (matchmaker/body_limit.BodyLimit bounds it), or None if the client left."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
