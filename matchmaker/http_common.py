"""What every HTTP route shares: problem+json errors (RFC 9457) with stable codes, strict bodies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

PROBLEM = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024
PLAYER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,64}$"
MATCH_ID_PATTERN = r"^[0-7][0-9a-z]{25}$"


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    code: str


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # no coercion: `true` is not a number of seconds


def problem(status: int, code: str, detail: str, title: str | None = None,
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = Problem(title=title or code.replace("_", " "), status=status, detail=detail, code=code)
    return JSONResponse(body.model_dump(), status_code=status, media_type=PROBLEM, headers=headers)


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        self.status, self.code, self.detail = status, code, detail


class BodyLimit:
    """Plain ASGI middleware: a request body over `max_bytes` is answered 413 `body_too_large`,
    by its Content-Length before anything is read, or while it is read when it comes chunked.
    (Starlette's BaseHTTPMiddleware would double the cost of a small request.)"""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(scope, receive, send)
                return
        received = 0
        started = refused = False

        async def limited_receive() -> dict:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and not started:
                    # Answer now and tell the app the client is gone (FastAPI turns an exception
                    # raised while it reads the body into a 400); whatever it sends after is dropped.
                    refused = True
                    await self._refuse(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: dict) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        response = problem(413, "body_too_large", f"a request body is at most {self.max_bytes} bytes",
                           headers={"connection": "close"})
        await response(scope, receive, send)
