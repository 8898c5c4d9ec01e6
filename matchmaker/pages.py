"""What the HTTP server serves besides the API: the browser pages (clients/web/), the OpenAPI document
(matchmaker/openapi.json) at /openapi.json, and a Swagger UI page for it at /docs.

A page is a file directly in clients/web/ (no subdirectories, no dot files), read when asked for, so
no path can reach outside it; "/" is index.html. Any other path is 404 `not_found`, whatever the
method. GET and HEAD only; an ETag from the file's size and modification time answers a matching
If-None-Match with 304.
"""

from __future__ import annotations

import importlib.resources
import json
import mimetypes
import re
from functools import cache
from pathlib import Path
from typing import Any

from matchmaker.http_app import Request, Response, Route, header, problem, text_response

WEB = Path(str(importlib.resources.files("clients") / "web"))
PAGE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
DOCUMENT = Path(__file__).with_name("openapi.json")
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".json": "application/json"}

SWAGGER_UI = """<!DOCTYPE html>
<html>
<head>
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link type="text/css" rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
<title>Arbiter - HTTP API</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
                 presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
                 layout: "BaseLayout"});
</script>
</body>
</html>
"""


@cache
def openapi_text() -> str:
    """The OpenAPI document, as the file has it."""
    return DOCUMENT.read_text(encoding="utf-8")


@cache
def _openapi_body() -> bytes:
    return json.dumps(json.loads(openapi_text()), separators=(",", ":")).encode()


async def _openapi(_request: Request) -> Response:
    return Response(200, _openapi_body(), "application/json")


async def _swagger_ui(_request: Request) -> Response:
    return text_response(SWAGGER_UI, "text/html; charset=utf-8")


def document_routes() -> list[Route]:
    return [Route("GET", "/openapi.json", _openapi), Route("GET", "/docs", _swagger_ui)]


def _content_type(name: str) -> str:
    suffix = Path(name).suffix
    return TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


async def serve_page(scope: dict, receive: Any, send: Any) -> None:
    """ASGI, for a path no API route has: a file of clients/web/, or 404 `not_found`."""
    name = scope["path"].removeprefix("/") or "index.html"
    path = WEB / name
    if not PAGE_NAME.fullmatch(name) or not path.is_file():
        await problem(404, "not_found", "Not Found")(scope, receive, send)
        return
    if scope["method"] not in ("GET", "HEAD"):
        await problem(405, "method_not_allowed", "Method Not Allowed", headers={"allow": "GET, HEAD"})(
            scope, receive, send)
        return
    try:
        stat = path.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        if etag in [tag.strip() for tag in (header(scope, b"if-none-match") or "").split(",")]:
            await Response(304, b"", _content_type(name), ((b"etag", etag.encode()),))(scope, receive, send)
            return
        body = path.read_bytes()
    except OSError:
        await problem(404, "not_found", "Not Found")(scope, receive, send)
        return
    await Response(200, body, _content_type(name), ((b"etag", etag.encode()),))(scope, receive, send)
