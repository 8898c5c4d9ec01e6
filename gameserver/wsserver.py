"""The WebSocket server's I/O shell on trio: listen, handshake (h11), read messages, write frames.

Sockets are the standard library's, non-blocking, waited on for reading through readiness.py (one
epoll, each socket registered once) and for writing with `trio.lowlevel.wait_writable`. Writing does not go through a task: `write` hands a frame to the kernel at once
when nothing is waiting before it, so a match's tick writes its state to every client without a
task switch per client; only what the kernel does not take is left for `flush` (the connection's
writer task). Reading waits only when the last read's bytes hold no complete message.

Reading can skip the task too (`read_inline`): while the reader waits for bytes, the readiness
task reads them and gives each message to a handler that deals with it on the spot (an input into
its match's inbox); the reader is woken only for what the handler leaves to it, for anything
other than a message (a ping, a close, a protocol error), or after YIELD_EVERY messages.

The frame codec and the handshake's checks are pure (websocket.py).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import trio

from . import readiness, websocket
from .accepting import accept_forever, listen
from .outbox import Outbox
from .websocket import HandshakeError, Parser, WebSocketError

log = logging.getLogger("arbiter.wsserver")

RECEIVE_BYTES = 65536
MAX_HANDSHAKE_BYTES = 16384
YIELD_EVERY = 32  # frames parsed without waiting before a reader lets other tasks run
MAX_UNSENT_FOR_PONG = 65536  # unsent bytes past which WebSocket pings are not answered


class ConnectionClosed(Exception):
    """The connection is closed; `code` and `reason` say how (1006: no close frame)."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class WebSocket(Outbox):
    """One accepted connection. One task reads (`receive`); any task may write, flush or close."""

    def __init__(self, sock: socket.socket, max_message: int, path: str, subprotocol: str | None,
                 leftover: bytes):
        self._init_outbox(sock)
        self.path = path
        self.subprotocol = subprotocol
        self.parser = Parser(max_message)
        if leftover:
            self.parser.feed(leftover)
        self.closed: ConnectionClosed | None = None  # set once no more frames go either way
        self.close_sent = False
        self._reading = False
        self._reader: trio.lowlevel.Task | None = None
        self._unyielded = 0  # frames parsed since the reader last let other tasks run
        self._drained_read = False  # the last read took less than it asked for: the socket was empty
        self._peer_done = trio.Event()  # the reader saw the peer's close frame, or the end
        self._inline: Callable[[str | bytes], Any] | None = None  # see read_inline
        self._stash: list[Any] = []  # what the inline handler read and left to the reader, in order
        self._parked = False  # the reader waits for bytes in _read_more (so it holds no message)

    # -- writing -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Bytes written but not yet taken by the kernel."""
        return len(self.out)

    def write(self, data: str | bytes, *, wire: bytes | None = None) -> None:
        """Send a message now, or as much of it as the kernel takes; the rest waits in `out` for
        `flush`. Never blocks. Nothing is written after a close frame."""
        if self.close_sent or self.closed is not None:
            return
        self._write_raw(wire_bytes(data) if wire is None else wire)

    async def send(self, data: str | bytes) -> None:
        self.write(data)
        await self.flush()

    # -- reading -------------------------------------------------------------------------------

    def read_inline(self, handler: Callable[[str | bytes], Any] | None) -> None:
        """Have messages handled as they arrive while the reader waits: `handler(message)` returns
        None once it has dealt with the message, or anything else for `receive` to return to the
        reader (what it could not finish there). It must not block. None: stop."""
        self._inline = handler
        ready = readiness.current()
        if ready is not None and self.sock.fileno() != -1:
            ready.set_handler(self.sock, None if handler is None else self._on_readable)

    def _on_readable(self) -> bool:
        """The socket is ready and the reader waits: read and handle messages here. True: the socket
        is empty and every message was handled (the reader waits on); False: wake the reader. Never
        raises: this runs in the readiness task, which serves every connection; an error is raised
        in this connection's reader instead."""
        try:
            return self._read_inline()
        except Exception as error:
            self._stash.append(error)
            return False

    def _read_inline(self) -> bool:
        handle = self._inline
        if handle is None or not self._parked or self.closed is not None or self.close_sent:
            return False
        handled = 0
        while True:
            try:
                data = self.sock.recv(RECEIVE_BYTES)
            except (BlockingIOError, InterruptedError):
                self._drained_read = True
                return True
            except OSError as error:
                self._lost(error)
                return False
            if not data:
                self._lost(None)
                return False
            self._drained_read = len(data) < RECEIVE_BYTES
            self.parser.feed(data)
            while True:
                try:
                    item = self.parser.next()
                except WebSocketError as error:
                    self._stash.append(error)
                    return False
                if item is None:
                    break
                if (type(item) is str or type(item) is bytes) and handled < YIELD_EVERY:
                    handled += 1
                    left = handle(item)  # (if it raises, the reader raises it: see _on_readable)
                    if left is None:
                        continue
                    item = left
                self._stash.append(item)
                return False
            if self._drained_read:
                return True

    async def receive(self) -> Any:
        """The next message (or what the inline handler left, see `read_inline`). Pings are
        answered; a close frame is answered and raises ConnectionClosed; a protocol violation
        closes the connection with its code and raises."""
        self._reading, self._reader = True, trio.lowlevel.current_task()
        try:
            while True:
                if self.closed is not None:
                    # A new exception each time: raising the stored one would tie its traceback (and
                    # the frames in it, this connection's among them) to the connection in a cycle
                    # that only a full garbage collection frees (a pause on the event loop).
                    raise ConnectionClosed(self.closed.code, self.closed.reason)
                if self._stash:
                    item = self._stash.pop(0)
                    if isinstance(item, WebSocketError):
                        await self._fail(item.code, item.reason)
                        continue
                    if isinstance(item, Exception):
                        raise item
                else:
                    try:
                        item = self.parser.next()
                    except WebSocketError as error:
                        await self._fail(error.code, error.reason)
                        continue
                if item is None:
                    await self._read_more()
                    continue
                self._unyielded += 1
                if self._unyielded >= YIELD_EVERY:  # a client that never pauses must not hold the loop
                    self._unyielded = 0
                    await trio.lowlevel.checkpoint()
                if type(item) is not tuple:  # a message, or what the inline handler left
                    if self.close_sent:
                        continue  # we are closing: messages are discarded until the peer's close
                    return item
                kind = item[0]
                if kind == "ping":
                    # While earlier bytes wait unsent, further pings get no pong of their own (RFC 6455
                    # 5.5.3 lets a pong answer only the latest ping): a client that pings and never
                    # reads cannot make us hold its pongs without bound.
                    if not self.close_sent and len(self.out) <= MAX_UNSENT_FOR_PONG:
                        self._write_raw(websocket.frame(websocket.PONG, item[1]))
                elif kind == "close":
                    await self._peer_closed(item[1], item[2])
                # pongs are ignored
        finally:
            self._reading = False

    async def _peer_closed(self, code: int, reason: str) -> None:
        if not self.close_sent:  # echo it (RFC 6455 5.5.1), then end the TCP connection
            self.close_sent = True
            self._write_raw(websocket.close_frame(1000 if code == websocket.NO_STATUS else code))
            with trio.move_on_after(1):
                await self.flush()
        if self.closed is None:
            self.closed = ConnectionClosed(code, reason)
        self._shutdown()

    async def _read_more(self) -> None:
        # After a short read (the last read emptied the socket) a read now would almost surely fail
        # with EAGAIN: wait for the next readiness edge first. Bytes that came in after that read
        # raised an edge of their own, so the wait does not miss them.
        if self._drained_read:
            if not await self._wait_readable() or self._stash:  # (the inline handler left something)
                return
        try:
            data = self.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            if not await self._wait_readable() or self._stash:
                return
            try:
                data = self.sock.recv(RECEIVE_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self._lost(error)
                return
        except OSError as error:
            self._lost(error)
            return
        if not data:
            self._lost(None)
            return
        self._drained_read = len(data) < RECEIVE_BYTES
        self.parser.feed(data)

    async def _wait_readable(self) -> bool:
        """Wait until the socket may have bytes; False if another task closed it (then it is lost)."""
        self._parked = self._reading
        try:
            await wait_readable(self.sock)
        except trio.ClosedResourceError:
            self._lost(None)
            return False
        finally:
            self._parked = False
        return True

    def _lost(self, error: OSError | None) -> None:
        if self.closed is None:
            why = "the TCP connection ended" if error is None else f"connection lost: {error}"
            self.closed = ConnectionClosed(websocket.ABNORMAL, why)
        self.out.clear()
        self._drained.set()
        self._peer_done.set()

    async def _fail(self, code: int, reason: str) -> None:
        await self.aclose(code, reason)
        if self.closed is None or self.closed.code == websocket.ABNORMAL:
            self.closed = ConnectionClosed(code, reason)

    # -- closing -------------------------------------------------------------------------------

    async def aclose(self, code: int = 1000, reason: str = "", timeout: float = 5.0) -> None:
        """The closing handshake: send a close frame after what is written, wait (bounded) for the
        peer's, end the TCP connection. Safe to call more than once and from any task."""
        with trio.move_on_after(timeout):
            if not self.close_sent and self.closed is None:
                self.close_sent = True
                self._write_raw(websocket.close_frame(code, reason))
                await self.flush()
            if self.closed is None:
                if self._reading and self._reader is not trio.lowlevel.current_task():
                    await self._peer_done.wait()  # the reader will see the peer's close frame
                else:
                    await self._await_peer_close()
        if self.closed is None or self.closed.code == websocket.ABNORMAL:
            self.closed = ConnectionClosed(code, reason)
        self._shutdown()

    async def _await_peer_close(self) -> None:
        reading, self._reading = self._reading, True
        try:
            while self.closed is None:
                try:
                    item = self.parser.next()
                except WebSocketError:
                    return
                if item is None:
                    await self._read_more()
                elif type(item) is tuple and item[0] == "close":
                    return
        finally:
            self._reading = reading

    def _shutdown(self) -> None:
        self._peer_done.set()
        self._drained.set()
        close_socket(self.sock)


def watch(sock: socket.socket) -> None:
    ready = readiness.current()
    if ready is not None:
        ready.register(sock)


async def wait_readable(sock: socket.socket) -> None:
    ready = readiness.current()
    if ready is None:
        await trio.lowlevel.wait_readable(sock)
    else:
        await ready.wait_readable(sock)


def close_socket(sock: socket.socket) -> None:
    """Close a socket that tasks may be waiting on: they are woken and see it closed."""
    if sock.fileno() == -1:
        return
    ready = readiness.current()
    if ready is not None:
        ready.unregister(sock)
    trio.lowlevel.notify_closing(sock)
    sock.close()


_last_message: list = [None, b""]


def wire_bytes(data: str | bytes) -> bytes:
    """The frame for a message. One message is usually sent to many connections in a row (a tick's
    state): the last one's frame is kept, so it is built once."""
    if data is _last_message[0]:
        return _last_message[1]
    wire = websocket.message(data)
    _last_message[0], _last_message[1] = data, wire
    return wire


# -- the server ---------------------------------------------------------------------------------

class Request:
    """An opening handshake that passed RFC 6455's checks, to accept or reject."""

    def __init__(self, sock: socket.socket, path: str, proposed: tuple[str, ...], accept_value: bytes,
                 leftover: bytes, max_message: int):
        self.sock = sock
        self.path = path
        self.proposed_subprotocols = proposed
        self._accept_value = accept_value
        self._leftover = leftover
        self._max_message = max_message

    async def accept(self, subprotocol: str | None = None) -> WebSocket:
        headers = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket", b"Connection: Upgrade",
                   b"Sec-WebSocket-Accept: " + self._accept_value]
        if subprotocol is not None:
            headers.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode())
        ws = WebSocket(self.sock, self._max_message, self.path, subprotocol, self._leftover)
        ws._write_raw(b"\r\n".join(headers) + b"\r\n\r\n")
        await ws.flush()
        return ws

    async def reject(self, status: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None) -> None:
        await _send_http(self.sock, status, body, headers or [])


class Server:
    def __init__(self, listeners: list[socket.socket]):
        self.listeners = listeners

    @property
    def port(self) -> int:
        return self.listeners[0].getsockname()[1]


async def serve(handler: Callable[[Request], Awaitable[None]], host: str, port: int, *,
                max_message: int, handshake_timeout: float = 10.0, backlog: int = 4096,
                task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED) -> None:
    """Listen on host:port (every address it resolves to); run `handler` for each handshake."""
    listeners = listen(host, port, backlog)
    try:
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(_accept_loop, nursery, listener, handler, max_message, handshake_timeout)
            task_status.started(Server(listeners))
    finally:
        for listener in listeners:
            trio.lowlevel.notify_closing(listener)
            listener.close()


async def _accept_loop(nursery: trio.Nursery, listener: socket.socket, handler, max_message: int,
                       handshake_timeout: float) -> None:
    def started(sock: socket.socket, _address) -> None:
        watch(sock)
        nursery.start_soon(_connection, sock, handler, max_message, handshake_timeout)

    await accept_forever(listener, started, "a WebSocket")


async def _connection(sock: socket.socket, handler, max_message: int, handshake_timeout: float) -> None:
    request = None
    try:
        with trio.move_on_after(handshake_timeout):
            request = await _handshake(sock, max_message)
        if request is None:
            return
        await handler(request)
    except OSError:
        pass  # the peer went away during the handshake
    except Exception:  # a bug costs this connection, never the listener and every other one
        log.exception("a WebSocket connection failed")
    finally:
        close_socket(sock)


async def _handshake(sock: socket.socket, max_message: int) -> Request | None:
    """Read the opening handshake with h11; None if it failed (and was answered)."""
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HANDSHAKE_BYTES)
    while True:
        try:
            event = parser.next_event()
        except h11.RemoteProtocolError as error:
            await _send_http(sock, error.error_status_hint, f"bad HTTP request: {error}".encode())
            return None
        if event is h11.NEED_DATA:
            await wait_readable(sock)
            try:
                data = sock.recv(RECEIVE_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            parser.receive_data(data)
            if not data:
                return None
            continue
        if isinstance(event, h11.Request):
            break
        return None  # a closed connection
    if event.http_version != b"1.1":
        await _send_http(sock, 400, b"a WebSocket handshake is HTTP/1.1")
        return None
    headers = [(name, value) for name, value in event.headers]
    try:
        accept_value, proposed = websocket.check_handshake(event.method, headers)
    except HandshakeError as error:
        await _send_http(sock, error.status, error.reason.encode(), error.headers)
        return None
    if any(name in (b"content-length", b"transfer-encoding") for name, _ in headers):
        await _send_http(sock, 400, b"a WebSocket handshake has no body")
        return None
    leftover, _ = parser.trailing_data
    return Request(sock, event.target.decode("ascii", "replace"), proposed, accept_value, bytes(leftover), max_message)


async def _send_http(sock: socket.socket, status: int, body: bytes, headers: list[tuple[bytes, bytes]] = ()) -> None:
    reason = _REASONS.get(status, "Error").encode()
    lines = [b"HTTP/1.1 %d %s" % (status, reason), b"Content-Type: text/plain; charset=utf-8",
             b"Content-Length: %d" % len(body), b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    data = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with trio.move_on_after(5):
        while data:
            try:
                sent = sock.send(data)
            except (BlockingIOError, InterruptedError):
                await trio.lowlevel.wait_writable(sock)
                continue
            except OSError:
                return
            data = data[sent:]


_REASONS = {400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 426: "Upgrade Required",
            431: "Request Header Fields Too Large", 503: "Service Unavailable"}
