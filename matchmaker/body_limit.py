"""The request body limit every HTTP request passes through (plain ASGI middleware)."""

from __future__ import annotations

from typing import Any

from matchmaker.http_app import problem

MAX_BODY_BYTES = 64 * 1024


class BodyLimit:
    """A request body over `max_bytes` is answered 413 `body_too_large`, by its Content-Length before
    anything is read, or while it is read when it comes chunked. The app is then told the client left,
    and whatever it sends after is dropped."""

    def __init__(self, app: Any, max_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(scope, receive, send)
                return
            chunked = chunked or name == b"transfer-encoding"
        if not chunked:  # HTTP/1.1 framing: the body is the Content-Length checked above, or empty
            await self.app(scope, receive, send)
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
