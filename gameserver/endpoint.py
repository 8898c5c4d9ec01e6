"""The WebSocket endpoint: moves frames between sockets, sessions and match actors.

Each connection is a handler task with two halves: a reader that feeds frames through the
connection's `Session` and submits what it accepts to the match's actor, and a writer that
drains what the socket could not take at once (see connection.py). Pings are answered here,
without the actor. The WebSocket protocol itself is wsserver.py's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from urllib.parse import urlsplit

import trio
from . import protocol, tokens, wsserver
from .actor import InputMessage, JoinRequest, LeaveRequest
from .connection import Connection
from .node import (MatchFailed, MatchNotFound, MatchOver, MatchStorageUnavailable, MatchUnavailable, Node, NodeClosing,
                   NodeError)
from .session import Authenticate, Close, LeaveMatch, Send, Session, Submit
from .wsserver import ConnectionClosed, Request, WebSocket

log = logging.getLogger("arbiter.endpoint")

PATH = re.compile(r"/v1/matches/([0-9a-z]{26})")
CLOSE_REASON_BYTES = 120  # RFC 6455 allows 123 bytes of close reason


def close_reason(text: str) -> str:
    data = text.encode()[:CLOSE_REASON_BYTES]
    return data.decode(errors="ignore")


def choose_format(proposed: tuple[str, ...]) -> tuple[str | None, str] | None:
    """(subprotocol to answer, format); JSON without a subprotocol; None if nothing fits."""
    if not proposed:
        return None, protocol.JSON
    for name in proposed:
        if name in protocol.SUBPROTOCOLS:
            return name, protocol.SUBPROTOCOLS[name]
    return None


class Endpoint:
    def __init__(self, node: Node, secret: bytes, wall_clock: Callable[[], float] | None = None):
        self.node = node
        self.secret = secret
        self.config = node.config
        self.wall_clock = wall_clock or node.wall_clock
        self.open = 0
        self._idle = trio.Event()
        self._idle.set()
        self._unadmitted: set[trio.CancelScope] = set()

    async def serve(self, host: str, port: int, task_status=trio.TASK_STATUS_IGNORED) -> None:
        await wsserver.serve(self.handle, host, port, max_message=protocol.MAX_FRAME_BYTES,
                             handshake_timeout=10, task_status=task_status)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Close connections that are not in a match yet; wait (bounded) for every handler to end."""
        for scope in list(self._unadmitted):
            scope.cancel()
        with trio.move_on_after(timeout):
            await self._idle.wait()

    async def handle(self, request: Request) -> None:
        match = PATH.fullmatch(urlsplit(request.path).path)
        if match is None:
            await request.reject(404, body=b"no such endpoint: connect to /v1/matches/{match_id}")
            return
        chosen = choose_format(tuple(request.proposed_subprotocols))
        if chosen is None:
            await request.reject(400, body=b"supported subprotocols: " + ", ".join(protocol.SUBPROTOCOLS).encode())
            return
        subprotocol, fmt = chosen
        ws = await request.accept(subprotocol=subprotocol)
        self.open += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle
        self.node.metrics.connections.inc()
        try:
            await self._serve(ws, match.group(1), fmt)
        except Exception:
            # A bug must cost this connection, never the listener and every other connection.
            log.exception("connection to match %s failed", match.group(1))
            await close(ws, protocol.CLOSE_INTERNAL, "internal error", timeout=1)
        finally:
            self.open -= 1
            self.node.metrics.connections.dec()
            if self.open == 0:
                self._idle.set()

    async def _serve(self, ws: WebSocket, match_id: str, fmt: str) -> None:
        session = Session(fmt, trio.current_time(), self.config.limits)
        with trio.CancelScope() as scope:
            self._unadmitted.add(scope)
            try:
                joined = await self._join(ws, session, match_id, fmt)
            finally:
                self._unadmitted.discard(scope)
        if scope.cancelled_caught:
            await close(ws, protocol.CLOSE_GOING_AWAY, "server shutting down", timeout=1)
            return
        if joined is None:
            return
        session.admitted(joined.role)
        joined.ws = ws
        ws.on_pending = joined.poke
        ws.read_inline(self._inline_handler(session, joined))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, ws, joined)
            try:
                await self._read(ws, session, joined)
            finally:
                # The connection refers to its socket (`joined.ws`) and the socket back to it through
                # this bound method: unlinked, a closed connection is freed by reference counting, not
                # left for a full garbage collection (a pause of tens of ms on the event loop).
                ws.on_pending = None
                ws.read_inline(None)
                self.node.disconnected(match_id, joined)
                nursery.cancel_scope.cancel()

    async def _join(self, ws: WebSocket, session: Session, match_id: str, fmt: str) -> Connection | None:
        """Wait for auth (bounded), check the token, join the match. None: already closed."""
        with trio.move_on_after(self.config.limits.auth_timeout_s) as timer:
            auth = None
            while auth is None:
                try:
                    frame = await ws.receive()
                except ConnectionClosed:
                    return None
                for action in session.receive(frame, trio.current_time()):
                    if isinstance(action, Send):
                        await _send_quietly(ws, protocol.encode_server(action.frame, fmt))
                    elif isinstance(action, Close):
                        await close(ws, action.code, action.reason)
                        return None
                    elif isinstance(action, Authenticate):
                        auth = action.auth
        if timer.cancelled_caught:
            await close(ws, protocol.CLOSE_AUTH_TIMEOUT, "no auth message in time")
            return None
        try:
            grant = tokens.verify(self.secret, auth.token, self.wall_clock())
        except tokens.TokenError as error:
            await close(ws, protocol.CLOSE_AUTH_FAILED, str(error))
            return None
        if grant.match_id != match_id:
            await close(ws, protocol.CLOSE_AUTH_FAILED, "the token is for another match")
            return None
        conn = Connection(match_id=match_id, player=grant.player, role=grant.role, fmt=fmt,
                          resume_tick=auth.resume_tick, max_frames=self.config.outbox_frames,
                          attachment=auth.attachment, connected_at=self.wall_clock())
        conn.on_slow = self.node.metrics.slow_consumers.inc
        try:
            accepted = await self.node.submit(match_id, JoinRequest(conn))
        except NodeError as error:
            await close(ws, refusal_code(error), str(error))
            return None
        if not accepted:
            await close(ws, protocol.CLOSE_TRY_AGAIN, "the match is busy or over; try again")
            return None
        with trio.move_on_after(self.config.inbox_wait_s + 30) as waited:
            await conn.admitted.wait()  # the actor answers every join request; this bound is a safety net
        if waited.cancelled_caught:
            self.node.disconnected(match_id, conn)
            await close(ws, protocol.CLOSE_TRY_AGAIN, "the match did not answer; try again")
            return None
        if conn.admission_error is not None:
            code, reason = conn.admission_error
            await close(ws, code, reason)
            return None
        return conn

    def _inline_handler(self, session: Session, conn: Connection) -> Callable[[str | bytes], list | None]:
        """What a connection in a match does with a message as it arrives, without waking its reader
        (WebSocket.read_inline): the session's actions that need no waiting, at once (`_act_now`);
        the rest is left to the reader (`_read`)."""
        def handle(frame: str | bytes) -> list | None:
            return self._act_now(conn, session.receive(frame, trio.current_time()))

        return handle

    def _act_now(self, conn: Connection, actions: list) -> list | None:
        """Do the session's actions up to the first that would have to wait (an input into a match
        that is not live here or whose inbox is full, a leave); return that one and the rest, or
        None when all are done."""
        for i, action in enumerate(actions):
            kind = type(action)
            if kind is Submit:
                if not self.node.submit_nowait(conn.match_id, InputMessage(conn, action.input)):
                    return actions[i:]
            elif kind is Send:
                conn.send(protocol.encode_server(action.frame, conn.fmt))
            elif kind is Close:
                conn.close(action.code, action.reason)
            else:
                return actions[i:]
        return None

    async def _read(self, ws: WebSocket, session: Session, conn: Connection) -> None:
        while True:
            try:
                frame = await ws.receive()
            except ConnectionClosed:
                return
            # A list: actions the inline handler left (see `_inline_handler`).
            actions = frame if type(frame) is list else session.receive(frame, trio.current_time())
            while actions:
                actions = self._act_now(conn, actions)
                if not actions:
                    break
                action, actions = actions[0], actions[1:]
                if isinstance(action, Submit):
                    if not await self._deliver(conn, InputMessage(conn, action.input)):
                        conn.close(protocol.CLOSE_TRY_AGAIN, "the match's inbox stayed full; resend after reconnecting")
                elif isinstance(action, LeaveMatch):
                    if not await self._deliver(conn, LeaveRequest(conn)):
                        conn.close(protocol.CLOSE_TRY_AGAIN, "the match's inbox stayed full; leave again")

    async def _deliver(self, conn: Connection, item: InputMessage | LeaveRequest) -> bool:
        try:
            return await self.node.submit(conn.match_id, item)
        except NodeError as error:
            code = refusal_code(error)
            conn.close(code, _REASONS_IN_A_MATCH.get(code, str(error)))
        return True  # answered by the close

    async def _write(self, ws: WebSocket, conn: Connection) -> None:
        timeout = self.config.send_timeout_s
        try:
            while True:
                await conn.wakeup.wait()
                for frame in conn.take():
                    ws.write(frame)
                with trio.move_on_after(timeout) as timer:
                    await ws.flush()
                if timer.cancelled_caught:
                    conn.close(protocol.CLOSE_SLOW_CONSUMER, "slow consumer: a frame waited too long")
                    await close(ws, protocol.CLOSE_SLOW_CONSUMER, "slow consumer", timeout=1)
                    return
                if ws.closed is not None:
                    return
                if conn.close_request is not None and not conn.queue and conn.pending_state is None:
                    code, reason = conn.close_request
                    await close(ws, code, reason)
                    return
        except ConnectionClosed:
            return


# The close code for each way the node can refuse a match's connection, most specific first (a
# MatchFailed or MatchStorageUnavailable is also a MatchUnavailable).
_REFUSALS: tuple[tuple[type[NodeError] | tuple[type[NodeError], ...], int], ...] = (
    (NodeClosing, protocol.CLOSE_GOING_AWAY),
    ((MatchOver, MatchFailed), protocol.CLOSE_MATCH_OVER),
    (MatchStorageUnavailable, protocol.CLOSE_TRY_AGAIN),  # the file is fine, the storage refuses it now
    ((MatchNotFound, MatchUnavailable), protocol.CLOSE_MATCH_NOT_FOUND),
)
# What a connection already in its match is told instead of the error's own message.
_REASONS_IN_A_MATCH = {protocol.CLOSE_GOING_AWAY: "server shutting down", protocol.CLOSE_MATCH_OVER: "the match is over"}


def refusal_code(error: NodeError) -> int:
    """The close code for a node's refusal; any other NodeError (not one `Node.submit` raises) is a bug."""
    for kinds, code in _REFUSALS:
        if isinstance(error, kinds):
            return code
    raise error


async def close(ws: WebSocket, code: int, reason: str, timeout: float = 5.0) -> None:
    """Close with a code and a reason; give up on the closing handshake after `timeout`."""
    with trio.move_on_after(timeout):
        await ws.aclose(code, close_reason(reason))


async def _send_quietly(ws: WebSocket, frame: str | bytes) -> None:
    try:
        await ws.send(frame)
    except ConnectionClosed:
        pass
