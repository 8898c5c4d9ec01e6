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
startup or shutdown handlers), the ASGI extensions. What it bounds: a request head (16 KiB, else
431), the wait for a request on an idle keep-alive connection (`keep_alive_s`), the wait for the
rest of a request that started (`read_timeout_s`), a client that does not take the response
(`write_timeout_s`); request bodies are the app's to limit (matchmaker/body_limit.py).

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

log = logging.getLogger("arbiter.http")

RECEIVE_BYTES = 65536
MAX_HEAD_BYTES = 16384
MAX_DRAIN_BYTES = 65536  # the unread rest of a request body skipped to keep the connection; more: close
MAX_WEBSOCKET_MESSAGE = 65536
ASGI = {"version": "3.0", "spec_version": "2.4"}  # 2.4: `send` raises OSError once the client is gone

App = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


class ClientGone(OSError):
    """The client closed the connection or stopped taking data: what `send` raises then (ASGI 2.4)."""


@attrs.define
class Server:
    """What `serve` reports once it listens."""

    listeners: list[socket.socket]
    connections: int = 0
    requests: int = 0

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
                graceful_s: float = 5.0, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on host:port (every address the name resolves to; port 0: a free port, the same on
    each) until `shutdown` is set (or the task is cancelled)."""
    listeners = listen(host, port, backlog)
    server = Server(listeners)
    settings = _Settings(app, keep_alive_s, read_timeout_s, write_timeout_s)
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
    closing: bool = False
    changed: trio.Event = attrs.field(factory=trio.Event)  # set when a connection ends


def _close(sock: socket.socket) -> None:
    if sock.fileno() != -1:
        trio.lowlevel.notify_closing(sock)
        sock.close()


async def _accept_loop(listener: socket.socket, nursery: trio.Nursery, server: Server, settings: _Settings,
                       live: set[_Connection]) -> None:
    def started(sock: socket.socket, address) -> None:
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
        self.gone = False  # a send failed: the client left or took nothing for write_timeout_s

    def close_when_idle(self) -> None:
        if self.idle_scope is not None:
            self.idle_scope.cancel()

    # -- the socket ------------------------------------------------------------------------------

    async def _receive(self, timeout: float) -> bytes:
        """Some bytes (b"" at the end of the stream)."""
        sock = self.sock
        try:
            return sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            pass
        with trio.fail_after(timeout):
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

    async def _next_event(self, timeout: float) -> Any:
        """h11's next event, reading as needed; raises trio.TooSlowError past `timeout`."""
        conn = self.h11
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            conn.receive_data(await self._receive(timeout))

    # -- serving ---------------------------------------------------------------------------------

    async def run(self, server: Server) -> None:
        conn, settings = self.h11, self.settings
        while True:
            try:
                if conn.their_state is h11.IDLE and not conn.trailing_data[0]:
                    if settings.closing:
                        return
                    event = None
                    with trio.CancelScope(deadline=trio.current_time() + settings.keep_alive_s) as self.idle_scope:
                        event = await self._next_event(math.inf)
                    self.idle_scope = None
                    if event is None:  # cancelled: idle past keep_alive_s, or shutting down
                        return
                else:
                    event = await self._next_event(settings.read_timeout_s)
            except h11.RemoteProtocolError as error:
                await self._refuse(error.error_status_hint, f"bad HTTP request: {error}")
                return
            except trio.TooSlowError:
                return
            if type(event) is not h11.Request:
                return  # ConnectionClosed (or PAUSED after a refused upgrade)
            server.requests += 1
            if _head_bytes(event) > MAX_HEAD_BYTES:  # h11 bounds only a head that arrives in pieces
                await self._refuse(431, f"a request head is at most {MAX_HEAD_BYTES} bytes")
                return
            if _wants_websocket(event):
                await self._websocket(event)
                return
            if not await self._http(event) or settings.closing:
                return
            try:
                await self._finish_request()
            except (h11.RemoteProtocolError, trio.TooSlowError):
                return
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return  # MUST_CLOSE: HTTP/1.0, Connection: close, or a body left unread
            conn.start_next_cycle()

    async def _finish_request(self) -> None:
        """Skip what is left of the request body (bounded) so that the next request can be read."""
        conn, skipped = self.h11, 0
        while conn.their_state is h11.SEND_BODY and skipped <= MAX_DRAIN_BYTES:
            event = await self._next_event(self.settings.read_timeout_s)
            if type(event) is h11.Data:
                skipped += len(event.data)
            elif type(event) is not h11.EndOfMessage:
                return

    async def _refuse(self, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        """A response of our own, then the connection closes."""
        body = detail.encode()
        response = h11.Response(status_code=status, reason=_REASONS.get(status, b""), headers=[
            (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"), (b"date", _date()), *(headers or ())])
        try:
            data = self.h11.send(response) + self.h11.send(h11.Data(data=body)) + self.h11.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return  # a response already started: nothing more can be said
        try:
            await self._send(data)
        except ClientGone:
            pass

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
            if self.gone:  # the app saw the client leave (ClientGone, perhaps wrapped)
                return False
            log.exception("the app failed on %s %s", scope["method"], path)
            if not exchange.started:
                await self._refuse(500, "Internal Server Error")
            return False
        finally:
            exchange.over()
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
            event = await self._next_event(self.settings.read_timeout_s)
            if type(event) is h11.EndOfMessage:
                event = await self._next_event(self.settings.read_timeout_s)
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


def _head_bytes(request: h11.Request) -> int:
    return len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _wants_websocket(request: h11.Request) -> bool:
    for name, value in request.headers:
        if name == b"upgrade" and b"websocket" in value.lower():
            return True
    return False


class _Exchange:
    """One request's ASGI `receive` and `send`."""

    __slots__ = ("connection", "head_only", "started", "complete", "body_done", "head", "finished")

    def __init__(self, connection: _Connection, head_only: bool):
        self.connection = connection
        self.head_only = head_only
        self.started = self.complete = self.body_done = False
        self.head: h11.Response | None = None  # sent with the first body bytes
        self.finished: trio.Event | None = None  # for a receive() waiting after the body

    async def receive(self) -> dict:
        connection = self.connection
        conn = connection.h11
        if not self.body_done and not self.complete:
            if conn.they_are_waiting_for_100_continue:
                await connection._send(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            try:
                event = await connection._next_event(connection.settings.read_timeout_s)
            except (h11.RemoteProtocolError, trio.TooSlowError):
                self.body_done = True
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
