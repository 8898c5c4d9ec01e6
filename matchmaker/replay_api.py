"""The replay WebSocket route on the HTTP server: `/v1/matches/{match_id}/replay`.

Served by the HTTP API's server (matchmaker/http_server.py), on the same origin as the browser pages, not by the
match WebSocket server: a replay is a read of a file, not a connection to a live actor. This module
only adapts Starlette's WebSocket to `gameserver.replay_server`'s transport. WebSocket routes are
not part of the OpenAPI document; docs/replay.md describes the protocol.
"""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from gameserver.protocol import JSON, SUBPROTOCOL_OF
from gameserver.replay_server import ReplayStreams, TransportClosed

CLOSE_REASON_BYTES = 120  # RFC 6455 allows 123 bytes of close reason
PATH = "/v1/matches/{match_id}/replay"


class StarletteTransport:
    def __init__(self, websocket: WebSocket):
        self.websocket = websocket

    async def receive(self) -> str | bytes:
        try:
            message = await self.websocket.receive()
        except Exception as error:  # the connection broke under us (Starlette raises RuntimeError, OSError...)
            raise TransportClosed(str(error)) from error
        if message["type"] == "websocket.disconnect":
            raise TransportClosed("the client closed the connection")
        if message.get("text") is not None:
            return message["text"]
        return message.get("bytes") or b""

    async def send(self, text: str) -> None:
        try:
            await self.websocket.send_text(text)
        except Exception as error:
            raise TransportClosed(str(error)) from error

    async def close(self, code: int, reason: str) -> None:
        try:
            await self.websocket.close(code, reason.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore"))
        except Exception:
            pass  # gone already


def replay_routes(streams: ReplayStreams) -> APIRouter:
    router = APIRouter()
    json_subprotocol = SUBPROTOCOL_OF[JSON]

    @router.websocket(PATH)
    async def watch_replay(websocket: WebSocket, match_id: str) -> None:
        """Stream a recorded match as if it were live (docs/replay.md, "Watching a replay")."""
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=json_subprotocol if json_subprotocol in offered else None)
        await streams.serve(match_id, StarletteTransport(websocket))

    return router
