"""The replay WebSocket route on the HTTP server: `/v1/matches/{match_id}/replay`.

Served by the HTTP API's server (matchmaker/http_server.py), on the same origin as the browser pages, not by the
match WebSocket server: a replay is a read of a file, not a connection to a live actor. This module
only adapts an ASGI WebSocket to `gameserver.replay_server`'s transport. WebSocket routes are
not part of the OpenAPI document; docs/replay.md describes the protocol.
"""

from __future__ import annotations

from typing import Any

from gameserver.protocol import JSON, SUBPROTOCOL_OF
from gameserver.replay_server import ReplayStreams, TransportClosed
from matchmaker.http_app import WebSocketHandler

CLOSE_REASON_BYTES = 120  # RFC 6455 allows 123 bytes of close reason
PATH = "/v1/matches/{match_id}/replay"


class AsgiTransport:
    """An accepted ASGI WebSocket as a replay transport."""

    def __init__(self, receive: Any, send: Any):
        self._receive = receive
        self._send = send

    async def receive(self) -> str | bytes:
        try:
            message = await self._receive()
        except Exception as error:  # the connection broke under us
            raise TransportClosed(str(error)) from error
        if message["type"] == "websocket.disconnect":
            raise TransportClosed("the client closed the connection")
        if message.get("text") is not None:
            return message["text"]
        return message.get("bytes") or b""

    async def send(self, text: str) -> None:
        try:
            await self._send({"type": "websocket.send", "text": text})
        except Exception as error:
            raise TransportClosed(str(error)) from error

    async def close(self, code: int, reason: str) -> None:
        try:
            await self._send({"type": "websocket.close", "code": code,
                              "reason": reason.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore")})
        except Exception:
            pass  # gone already


def replay_route(streams: ReplayStreams) -> tuple[str, WebSocketHandler]:
    json_subprotocol = SUBPROTOCOL_OF[JSON]

    async def watch_replay(scope: dict, receive: Any, send: Any, params: dict[str, str]) -> None:
        """Stream a recorded match as if it were live (docs/replay.md, "Watching a replay")."""
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        offered = scope.get("subprotocols") or []
        await send({"type": "websocket.accept",
                    "subprotocol": json_subprotocol if json_subprotocol in offered else None})
        await streams.serve(params["match_id"], AsgiTransport(receive, send))

    return PATH, watch_replay
