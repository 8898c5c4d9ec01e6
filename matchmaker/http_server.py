"""The HTTP API's server: ASGI 3 over HTTP/1.1 on trio, with h11 for the protocol.

One task per connection serves its requests one after the other and calls the app in that task
(no task per request). Sockets are the standard library's, non-blocking; a response's head and
body go to the kernel in one `send`. WebSocket upgrades (the replay route) are checked and served
with the match server's codec (gameserver/websocket.py, gameserver/wsserver.py).

Why not hypercorn, which served this API before: with an ASGI app that answers a constant, its trio
worker spent about 0.36 to 0.41 ms of CPU per request on this machine (a task, cancel scopes, locks
and an idle-timer task restarted per request, and head and body written with separate system
calls), against about 0.1 ms here; see docs/performance.md ("Matchmaking").

What it does not do: HTTP/2, TLS (put a proxy in front), the lifespan protocol (the app has no
startup or shutdown handlers), the ASGI extensions. What it bounds: the connections open at once
(`max_connections`; one more is answered 503 and closed), a request head (16 KiB, else 431), the wait
for the first byte of a request on an idle connection (`keep_alive_s`), the whole request from its
first byte, head and body (`read_timeout_s`, else 408), a client that does not take the response
(`write_timeout_s`); request bodies are the app's to limit (matchmaker/body_limit.py). A request that
breaks HTTP, in its head or its body, is answered 400 (501: a Transfer-Encoding other than chunked).
Every answer the server makes itself is problem+json, as the app's are (matchmaker/http_app.problem),
and closes the connection at once: nothing more of the request is read.

Shutdown: when `shutdown` is set the listeners close, idle connections close, requests being
served may finish within `graceful_s` (their connection then closes), and then the rest are
cancelled.
"""

from __future__ import annotations

import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import attrs
import h11
import trio

from gameserver import websocket, wsserver
from gameserver.accepting import accept_forever, listen
from matchmaker.http_app import problem

log = logging.getLogger("arbiter.http")

RECEIVE_BYTES = 65536
MAX_HEAD_BYTES = 16384
MAX_DRAIN_BYTES = 65536  # the unread rest of a request body skipped to keep the connection; more: close
MAX_WEBSOCKET_MESSAGE = 65536
ASGI = {"version": "3.0", "spec_version": "2.4"}  # 2.4: `send` raises OSError once the client is gone

App = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
# The `code` of each answer the server makes itself (h11 hints 400, 431 and 501 for what it cannot parse).
CODES = {400: "bad_request", 405: "method_not_allowed", 408: "request_timeout", 426: "upgrade_required",
         431: "header_too_large", 500: "internal_error", 501: "not_implemented", 503: "server_busy"}


class ClientGone(OSError):
    """The client closed the connection or stopped taking data: what `send` raises then (ASGI 2.4)."""


@attrs.define
class Server:
    """What `serve` reports once it listens."""

    listeners: list[socket.socket]
    connections: int = 0
    requests: int = 0
    turned_away: int = 0  # connections answered 503 because max_connections were open

    @property
    def port(self) -> int:
        return self.listeners[0].getsockname()[1]

    @property
    def urls(self) -> list[str]:
        urls = []
        for listener in self.listeners:
            host, port = listener.getsockname()[:2]
            urls.append(f"http://[{host}]:{port}" if listener.family == socket.AF_INET6 else f"http://{host}:{port}")
        return urls


async def serve(app: App, host: str, port: int, *, shutdown: trio.Event | None = None, backlog: int = 4096,
                keep_alive_s: float = 5.0, read_timeout_s: float = 30.0, write_timeout_s: float = 30.0,
                graceful_s: float = 5.0, max_connections: int = 1024,
                task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on host:port (every address the name resolves to; port 0: a free port, the same on
    each) until `shutdown` is set (or the task is cancelled)."""
    listeners = listen(host, port, backlog)
    server = Server(listeners)
    settings = _Settings(app, keep_alive_s, read_timeout_s, write_timeout_s, max_connections)
    live: set[_Connection] = set()
    try:
        async with trio.open_nursery() as nursery:
            accepting, not_listening = trio.CancelScope(), trio.Event()

            async def accept_all() -> None:
                try:
                    with accepting:
                        async with trio.open_nursery() as accepters:
                            for listener in listeners:
                                accepters.start_soon(_accept_loop, listener, nursery, server, settings, live)
                finally:
                    for listener in listeners:  # new clients are refused from now on
                        _close(listener)
                    not_listening.set()

            nursery.start_soon(accept_all)
            task_status.started(server)
            if shutdown is None:
                await trio.sleep_forever()
            await shutdown.wait()
            accepting.cancel()
            await not_listening.wait()
            settings.closing = True
            for connection in list(live):
                connection.close_when_idle()
            with trio.move_on_after(graceful_s):
                while live:
                    await settings.changed.wait()
                    settings.changed = trio.Event()
            if live:
                log.info("closing %d HTTP connections still busy after %g s", len(live), graceful_s)
            nursery.cancel_scope.cancel()
    finally:
        for listener in listeners:
            _close(listener)


@attrs.define
class _Settings:
    app: App
    keep_alive_s: float
    read_timeout_s: float
    write_timeout_s: float
    max_connections: int
    closing: bool = False
    changed: trio.Event = attrs.field(factory=trio.Event)  # set when a connection ends


def _close(sock: socket.socket) -> None:
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def _accept_loop(listener: socket.socket, nursery: trio.Nursery, server: Server, settings: _Settings,
                       live: set[_Connection]) -> None:
    def started(sock: socket.socket, address) -> None:
        if len(live) >= settings.max_connections:
            if server.turned_away % 1000 == 0:
                log.warning("%d HTTP connections are open, the most allowed: new ones are answered 503 (%d so far)",
                            len(live), server.turned_away + 1)
            server.turned_away += 1
            try:
                sock.send(_BUSY)  # a new socket's buffer takes it whole, or the client is gone
            except OSError:
                pass
            sock.close()
            return
        connection = _Connection(sock, address, settings)
        live.add(connection)
        server.connections += 1
        nursery.start_soon(_run_connection, connection, server, live)

    await accept_forever(listener, started, "an HTTP")


async def _run_connection(connection: _Connection, server: Server, live: set[_Connection]) -> None:
    try:
        await connection.run(server)
    except (OSError, trio.ClosedResourceError):
        pass  # the client went away
    except Exception:  # a bug costs this connection, never the listener and the others
        log.exception("an HTTP connection failed")
    finally:
        _close(connection.sock)
        live.discard(connection)
        connection.settings.changed.set()


def _date() -> bytes:
    now = int(time.time())
    if now != _date_cache[0]:
        _date_cache[0], _date_cache[1] = now, formatdate(now, usegmt=True).encode()
    return _date_cache[1]


_date_cache: list = [0, b""]


class _Connection:
    """One client connection: h11 reads requests and writes responses; the app runs in this task."""

    def __init__(self, sock: socket.socket, address: Any, settings: _Settings):
        self.sock = sock
        self.settings = settings
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.client = tuple(address[:2]) if isinstance(address, tuple) else None
        local = sock.getsockname()
        self.server_address = tuple(local[:2]) if isinstance(local, tuple) else None
        self.idle_scope: trio.CancelScope | None = None  # while waiting for the next request
        self.deadline = math.inf  # for the whole request being read: read_timeout_s from its first byte
        self.method = b""  # of the request being served
        self.gone = False  # the client left (a read or a send failed) or took nothing for write_timeout_s

    def close_when_idle(self) -> None:
        if self.idle_scope is not None:
            self.idle_scope.cancel()

    # -- the socket ------------------------------------------------------------------------------

    async def _receive(self, deadline: float) -> bytes:
        """Some bytes (b"" at the end of the stream); raises trio.TooSlowError past `deadline`."""
        sock = self.sock
        try:
            return sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            pass
        with trio.fail_at(deadline):
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    return sock.recv(RECEIVE_BYTES)
                except (BlockingIOError, InterruptedError):
                    continue

    async def _send(self, data: bytes) -> None:
        sock = self.sock
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self.gone = True
            raise ClientGone(f"the client is gone: {error}") from None
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        with trio.move_on_after(self.settings.write_timeout_s) as waited:
            while view:
                await trio.lowlevel.wait_writable(sock)
                try:
                    sent = sock.send(view)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError as error:
                    self.gone = True
                    raise ClientGone(f"the client is gone: {error}") from None
                view = view[sent:]
        if waited.cancelled_caught:
            self.gone = True
            raise ClientGone(f"the client took no data for {self.settings.write_timeout_s:g} s")

    async def _next_event(self) -> Any:
        """h11's next event, reading as needed; raises trio.TooSlowError past the request's deadline."""
        conn = self.h11
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await self._receive(self.deadline))

    async def _wait_for_request(self) -> bool:
        """Wait up to keep_alive_s for the first bytes of the next request (or the end of the stream);
        False if none came, or the server is shutting down."""
        data = None
        with trio.CancelScope(deadline=trio.current_time() + self.settings.keep_alive_s) as self.idle_scope:
            data = await self._receive(math.inf)
        self.idle_scope = None
        if data is None:
            return False
        self.h11.receive_data(data)
        return True

    # -- serving ---------------------------------------------------------------------------------

    async def run(self, server: Server) -> None:
        conn, settings = self.h11, self.settings
        while True:
            self.method = b""
            if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                if settings.closing or not await self._wait_for_request():
                    return  # idle past keep_alive_s, or shutting down
            self.deadline = trio.current_time() + settings.read_timeout_s
            try:
                event = await self._next_event()
            except h11.RemoteProtocolError as error:
                await self._refuse(error.error_status_hint, f"bad HTTP request: {error}")
                return
            except trio.TooSlowError:
                await self._refuse_too_slow()
                return
            if type(event) is not h11.Request:
                return  # ConnectionClosed (or PAUSED after a refused upgrade)
            server.requests += 1
            self.method = event.method
            if _head_bytes(event) > MAX_HEAD_BYTES:  # h11 bounds only a head that arrives in pieces
                await self._refuse(431, f"a request head is at most {MAX_HEAD_BYTES} bytes")
                return
            if _wants_websocket(event):
                await self._websocket(event)
                return
            if not await self._http(event) or settings.closing:
                return
            if conn.our_state is not h11.DONE:
                return  # MUST_CLOSE: our answer said Connection: close (or HTTP/1.0); nothing more is read
            try:
                await self._finish_request()
            except (h11.RemoteProtocolError, trio.TooSlowError):
                return
            if conn.their_state is not h11.DONE:
                return  # a body left unread past MAX_DRAIN_BYTES
            conn.start_next_cycle()

    async def _finish_request(self) -> None:
        """Skip what is left of the request body (bounded) so that the next request can be read."""
        conn, skipped = self.h11, 0
        while conn.their_state is h11.SEND_BODY and skipped <= MAX_DRAIN_BYTES:
            event = await self._next_event()
            if type(event) is h11.Data:
                skipped += len(event.data)
            elif type(event) is not h11.EndOfMessage:
                return

    async def _refuse(self, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """An answer of our own, unless a response has started going out; then the connection closes."""
        try:
            data = _problem(self.h11, status, detail, [(b"date", _date()), *(headers or ())],
                            head_only=self.method == b"HEAD")
        except h11.LocalProtocolError:
            return  # a response already started: nothing more can be said
        try:
            await self._send(data)
        except ClientGone:
            pass

    async def _refuse_too_slow(self) -> None:
        """408: a request not whole within read_timeout_s of its first byte (the client's doing: no error)."""
        timeout = self.settings.read_timeout_s
        log.debug("an HTTP request from %s was not whole after %g s", self.client, timeout)
        await self._refuse(408, f"a request is to arrive whole within {timeout:g} s of its first byte")

    async def _http(self, request: h11.Request) -> bool:
        """Serve one request; whether the connection can go on."""
        target = request.target
        raw_path, _, query = target.partition(b"?")
        path = raw_path.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        scope = {"type": "http", "asgi": ASGI, "http_version": request.http_version.decode(),
                 "method": request.method.decode(), "scheme": "http", "path": path, "raw_path": raw_path,
                 "query_string": query, "root_path": "", "headers": list(request.headers), "client": self.client,
                 "server": self.server_address}
        exchange = _Exchange(self, request.method == b"HEAD")
        try:
            await self.settings.app(scope, exchange.receive, exchange.send)
        except Exception:
            if not self.gone and exchange.broken is None:  # else it failed on the client's leaving, or breaking
                log.exception("the app failed on %s %s", scope["method"], path)
                if not exchange.started:
                    await self._refuse(500, "Internal Server Error")
                return False
        finally:
            exchange.over()
        if self.gone:  # the client left (the app may have seen ClientGone, perhaps wrapped): nothing to answer
            return False
        if exchange.broken is not None:  # the body broke HTTP or came too slowly: the app's answer was dropped
            if isinstance(exchange.broken, trio.TooSlowError):
                await self._refuse_too_slow()
            else:
                await self._refuse(400, f"bad HTTP request body: {exchange.broken}")
            return False
        if not exchange.complete:
            if not exchange.started:
                log.error("the app sent no response to %s %s", scope["method"], path)
                await self._refuse(500, "Internal Server Error")
            return False
        return True

    async def _websocket(self, request: h11.Request) -> None:
        """An upgrade to WebSocket: the app accepts or refuses it (ASGI websocket scope)."""
        conn = self.h11
        headers = list(request.headers)
        try:
            accept_value, proposed = websocket.check_handshake(request.method, headers)
        except websocket.HandshakeError as error:
            await self._refuse(error.status, error.reason, error.headers)
            return
        if request.http_version != b"1.1":
            await self._refuse(400, "a WebSocket handshake is HTTP/1.1")
            return
        try:  # the end of the request (no body), then h11 pauses: the rest is the WebSocket's
            event = await self._next_event()
            if type(event) is h11.EndOfMessage:
                event = await self._next_event()
        except (h11.RemoteProtocolError, trio.TooSlowError):
            event = None
        if event is not h11.PAUSED:
            await self._refuse(400, "a WebSocket handshake has no body")
            return
        raw_path, _, query = request.target.partition(b"?")
        scope = {"type": "websocket", "asgi": ASGI, "http_version": "1.1", "scheme": "ws",
                 "path": unquote(raw_path.decode("latin-1")), "raw_path": raw_path, "query_string": query,
                 "root_path": "", "headers": headers, "client": self.client, "server": self.server_address,
                 "subprotocols": list(proposed)}
        handshake = wsserver.Request(self.sock, scope["path"], proposed, accept_value, bytes(conn.trailing_data[0]),
                                     MAX_WEBSOCKET_MESSAGE)
        session = _WebSocketSession(handshake)
        try:
            await self.settings.app(scope, session.receive, session.send)
        except Exception:
            log.exception("the app failed on the WebSocket %s", scope["path"])
            await session.end(1011, "internal error")
            return
        await session.end(1000, "")


def _problem(conn: h11.Connection, status: int, detail: str, headers: list[tuple[bytes, bytes]], *,
             head_only: bool = False) -> bytes:
    """An answer of the server's own, as `conn` writes it: problem+json in the app's shape
    (matchmaker/http_app.problem) with a code from CODES, and Connection: close."""
    answer = problem(status, CODES.get(status, "bad_request" if status < 500 else "internal_error"), detail)
    data = conn.send(h11.Response(status_code=status, reason=_REASONS.get(status, b""), headers=[
        (b"content-type", answer.content_type.encode()), (b"content-length", b"%d" % len(answer.body)),
        (b"connection", b"close"), *headers]))
    if not head_only:
        data += conn.send(h11.Data(data=answer.body))
    return data + conn.send(h11.EndOfMessage())


# What a connection over max_connections gets, written once: it is refused in the accept loop.
_BUSY = _problem(h11.Connection(h11.SERVER), 503, "the server has all the connections it takes: try again soon",
                 [(b"retry-after", b"1")])


def _head_bytes(request: h11.Request) -> int:
    return len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _wants_websocket(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


class _Exchange:
    """One request's ASGI `receive` and `send`."""

    __slots__ = ("connection", "head_only", "started", "complete", "body_done", "head", "finished", "broken")

    def __init__(self, connection: _Connection, head_only: bool):
        self.connection = connection
        self.head_only = head_only
        self.started = self.complete = self.body_done = False
        self.head: h11.Response | None = None  # sent with the first body bytes
        self.finished: trio.Event | None = None  # for a receive() waiting after the body
        # Why the body could not be read: the server answers 400 or 408 itself, whatever the app sends.
        self.broken: h11.RemoteProtocolError | trio.TooSlowError | None = None

    async def receive(self) -> dict:
        connection = self.connection
        conn = connection.h11
        if not self.body_done and not self.complete:
            if conn.they_are_waiting_for_100_continue:
                await connection._send(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            try:
                event = await connection._next_event()
            except (h11.RemoteProtocolError, trio.TooSlowError) as error:
                self.body_done = True
                self.broken = error
                return {"type": "http.disconnect"}
            except OSError:  # the client reset the connection
                self.body_done = connection.gone = True
                return {"type": "http.disconnect"}
            if type(event) is h11.Data:
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            self.body_done = True
            if type(event) is h11.EndOfMessage:
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}
        # The body is read: the next message is the end of the exchange (the response sent).
        if not self.complete:
            if self.finished is None:
                self.finished = trio.Event()
            await self.finished.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if self.broken is not None:
            return  # the client was told it left; the server answers
        kind = message["type"]
        conn = self.connection.h11
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("http.response.start sent twice")
            self.started = True
            status = message["status"]
            headers = list(message.get("headers") or ())
            headers.append((b"date", _date()))
            if self.connection.settings.closing:
                headers.append((b"connection", b"close"))
            self.head = h11.Response(status_code=status, headers=headers, reason=_REASONS.get(status, b""))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if not self.started or self.complete:
            raise RuntimeError("http.response.body before http.response.start, or after the last one")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        data = b""
        if self.head is not None:
            data = conn.send(self.head)
            self.head = None
        if body and not self.head_only:
            data += conn.send(h11.Data(data=body))
        if not more:
            data += conn.send(h11.EndOfMessage())
            self.complete = True
        if data:
            await self.connection._send(data)
        if self.complete and self.finished is not None:
            self.finished.set()

    def over(self) -> None:
        if self.finished is not None:
            self.finished.set()


class _WebSocketSession:
    """One WebSocket's ASGI `receive` and `send`, on the match server's WebSocket (wsserver)."""

    def __init__(self, handshake: wsserver.Request):
        self.handshake = handshake
        self.socket: wsserver.WebSocket | None = None
        self.connected = False  # websocket.connect handed to the app
        self.refused = False

    async def receive(self) -> dict:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        if self.socket is None:
            raise RuntimeError("websocket.receive before websocket.accept")
        try:
            data = await self.socket.receive()
        except wsserver.ConnectionClosed as closed:
            return {"type": "websocket.disconnect", "code": closed.code, "reason": closed.reason}
        if type(data) is str:
            return {"type": "websocket.receive", "text": data}
        return {"type": "websocket.receive", "bytes": data}

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if kind == "websocket.accept":
            if self.socket is not None or self.refused:
                raise RuntimeError("websocket.accept after the handshake was answered")
            self.socket = await self.handshake.accept(message.get("subprotocol"))
            return
        if kind == "websocket.close":
            if self.socket is None:
                if not self.refused:
                    self.refused = True
                    await self.handshake.reject(403, b"the WebSocket was refused")
                return
            await self.socket.aclose(message.get("code", 1000), message.get("reason") or "")
            return
        if kind == "websocket.send":
            if self.socket is None:
                raise RuntimeError("websocket.send before websocket.accept")
            if self.socket.closed is not None:
                raise ClientGone("the WebSocket is closed")
            text = message.get("text")
            await self.socket.send(text if text is not None else message.get("bytes") or b"")
            return
        raise RuntimeError(f"unexpected ASGI message {kind!r}")

    async def end(self, code: int, reason: str) -> None:
        if self.socket is not None:
            await self.socket.aclose(code, reason)
        elif not self.refused:
            self.refused = True
            await self.handshake.reject(403 if code == 1000 else 500, b"the WebSocket was not accepted")
