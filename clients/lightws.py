"""A light WebSocket client for trio: stdlib sockets, the pure codec of gameserver/websocket.py.

    ws = await connect("ws://127.0.0.1:7352/v1/matches/ID")
    await ws.send('{"t":"auth","token":"..."}')
    message = await ws.receive()          # str (text) or bytes (binary)
    await ws.aclose()

Why not trio-websocket (which clients/client.py uses): its per-frame cost (wsproto's event objects
and frame-decoder stack, a task and a memory channel per connection, a stream lock per send) is
about 100 us, and a bot process sends and receives thousands of frames a second. Here a socket is
non-blocking and waited on with `trio.lowlevel.wait_readable` / `wait_writable`; `write` hands a
frame to the kernel at once; one `recv` is parsed into every complete message it holds.

Many connections read by one task: `Poller.wait()` waits (one epoll set, itself waited on by trio)
until some of its connections have bytes, and `read_messages()` reads each of them without
blocking. A bot process then costs one task wake-up per batch of ready sockets, not one per frame.

Client frames are masked with 4 bytes from a `random.Random` seeded from os.urandom, drawn anew for
every frame (RFC 6455 5.3), and masked with one big-integer XOR. Server frames must be unmasked.
What the server gets wrong (a masked frame, reserved bits, bad UTF-8, a bad close code...) fails
the connection (RFC 6455 7.1.7): we send a close frame with the code and end the TCP connection;
the caller sees `ProtocolViolation`, a `ConnectionClosed` whose reason says what was wrong.
Only ws:// URLs (no TLS), no extensions.
"""

from __future__ import annotations

import base64
import errno
import os
import random
import selectors
import socket
from collections import deque
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import h11
import trio

from gameserver import websocket
from gameserver.outbox import Outbox
from gameserver.websocket import Parser, WebSocketError

RECEIVE_BYTES = 65536
MAX_HANDSHAKE_BYTES = 16384  # the server's answer to the opening handshake, headers and body
MAX_MESSAGE = 16 * 1024 * 1024  # default limit on a received message
CLOSE_TIMEOUT_S = 5.0

_masks = random.Random()  # seeded from os.urandom: masks unpredictable to anyone on the path


def _mask() -> bytes:
    return _masks.getrandbits(32).to_bytes(4, "little")


class ConnectionClosed(Exception):
    """The connection is closed; `code` and `reason` say how (1006: no close frame, the TCP
    connection ended). Raised by `receive` and `send` after the close."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class ProtocolViolation(ConnectionClosed):
    """The server broke RFC 6455; we closed the connection with `code` (1002, 1007 or 1009)."""


class HandshakeFailed(Exception):
    """The server did not accept the opening handshake: `status` is its HTTP status (0 when its
    answer was not valid HTTP or not a valid WebSocket acceptance), `body` its explanation."""

    def __init__(self, status: int, reason: str, body: bytes = b""):
        super().__init__(f"WebSocket handshake refused: {status} {reason}" if status
                         else f"WebSocket handshake failed: {reason}")
        self.status = status
        self.reason = reason
        self.body = body


class WebSocket(Outbox):
    """One client connection. One task reads (`receive` or, through a Poller, `read_messages`);
    any task may write, send or close."""

    def __init__(self, sock: socket.socket, subprotocol: str | None, max_message: int, leftover: bytes = b""):
        self._init_outbox(sock)
        self.subprotocol = subprotocol
        self.parser = Parser(max_message, masked=False)
        if leftover:
            self.parser.feed(leftover)
        self.closed: ConnectionClosed | None = None  # set once no more frames go either way
        self.close_sent = False
        self.on_shutdown: Callable[[WebSocket], None] | None = None  # told just before the socket closes
        self._messages: deque[str | bytes] = deque()  # parsed, not yet returned
        self._close_received = False

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: str | bytes) -> None:
        """Send a message now, or as much of it as the kernel takes; the rest waits in `out` for
        `flush` (and `on_pending` is told). Never blocks. Raises ConnectionClosed once closed."""
        if self.closed is not None:
            raise self.closed
        if self.close_sent:
            raise ConnectionClosed(1000, "closing: no message is sent after the close frame")
        self._write_raw(websocket.client_message(data, _mask()))

    async def send(self, data: str | bytes) -> None:
        self.write(data)
        if self.out:
            await self.flush()
        else:
            await trio.lowlevel.checkpoint()  # the kernel took it all: still a checkpoint, as in trio
        if self.closed is not None and self.closed.code == websocket.ABNORMAL:
            raise self.closed

    # -- reading -------------------------------------------------------------------------------

    def read_messages(self) -> list[str | bytes]:
        """The messages already parsed plus those in what one `recv` returns now (without
        waiting): possibly none. Pings are answered; the server's close frame is echoed. Once the
        connection has ended, `closed` says how (after the messages that came before the end)."""
        if self.closed is None:
            try:
                data = self.sock.recv(RECEIVE_BYTES)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError as error:
                data = None
                self._lost(error)
            if data:
                self.parser.feed(data)
                self._parse()
            elif data is not None:  # b"": the server ended the TCP connection
                self._lost(None)
        messages = list(self._messages)
        self._messages.clear()
        return messages

    @property
    def has_buffered(self) -> bool:
        """Messages parsed or bytes received that `read_messages` returns without reading the socket."""
        return bool(self._messages) or self.parser.buffered > 0

    def _parse(self) -> None:
        parser, messages = self.parser, self._messages
        while self.closed is None:
            try:
                item = parser.next()
            except WebSocketError as error:
                self._fail(error.code, error.reason)
                return
            if item is None:
                return
            if type(item) is str or type(item) is bytes:
                if not self.close_sent:  # once closing, messages are discarded until the server's close
                    messages.append(item)
                continue
            kind = item[0]
            if kind == "ping":
                if not self.close_sent:
                    self._write_raw(websocket.client_frame(websocket.PONG, item[1], _mask()))
            elif kind == "close":
                self._close_received = True
                code, reason = item[1], item[2]
                if not self.close_sent:  # echo its code (RFC 6455 5.5.1), then end the TCP connection
                    self.close_sent = True
                    self._write_raw(websocket.client_frame(websocket.CLOSE, b"", _mask()) if code == websocket.NO_STATUS
                                    else websocket.client_close_frame(code, "", _mask()))
                self.closed = ConnectionClosed(code, reason)
                self._shutdown()
            # pongs are ignored

    async def receive(self) -> str | bytes:
        """The next message. Raises ConnectionClosed (ProtocolViolation if the server broke the
        protocol) once the connection has ended and every message before the end was returned."""
        while True:
            if self._messages:
                await trio.lowlevel.checkpoint()  # a flood of buffered messages does not hold the loop
                return self._messages.popleft()
            if self.closed is not None:
                raise self.closed
            self._messages.extend(self.read_messages())
            if not self._messages and self.closed is None:
                try:
                    await trio.lowlevel.wait_readable(self.sock)
                except trio.ClosedResourceError:  # another task closed it
                    self._lost(None)

    # -- closing -------------------------------------------------------------------------------

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): a close frame with the code, then the TCP end."""
        if not self.close_sent:
            self.close_sent = True
            self._write_raw(websocket.client_close_frame(code, reason, _mask()))
        if self.closed is None:
            self.closed = ProtocolViolation(code, f"the server broke the WebSocket protocol: {reason}")
        self._shutdown()

    def _lost(self, error: OSError | None) -> None:
        if self.closed is None:
            why = "the TCP connection ended" if error is None else f"connection lost: {error}"
            self.closed = ConnectionClosed(websocket.ABNORMAL, why)
        self._shutdown()

    async def aclose(self, code: int = 1000, reason: str = "", timeout: float = CLOSE_TIMEOUT_S) -> None:
        """The closing handshake: a close frame after what is written, then (bounded by `timeout`)
        the server's close frame and the end of the TCP connection. Safe to call more than once,
        but not while another task reads."""
        with trio.move_on_after(timeout):
            if self.closed is None and not self.close_sent:
                self.close_sent = True
                self._write_raw(websocket.client_close_frame(code, reason, _mask()))
                await self.flush()
            while self.closed is None:  # messages are discarded now; the server's close ends this
                self.read_messages()
                if self.closed is None:
                    try:
                        await trio.lowlevel.wait_readable(self.sock)
                    except trio.ClosedResourceError:
                        break
        if self.closed is None:
            self.closed = ConnectionClosed(code, reason)
        self._shutdown()

    def _shutdown(self) -> None:
        self.out.clear()
        self._drained.set()
        if self.sock.fileno() == -1:
            return
        if self.on_shutdown is not None:
            self.on_shutdown(self)
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()


# -- connecting ---------------------------------------------------------------------------------


async def connect(url: str, *, subprotocols: Sequence[str] = (), max_message: int = MAX_MESSAGE,
                  headers: Sequence[tuple[str, str]] = ()) -> WebSocket:
    """Open a WebSocket to a ws:// URL. Raises OSError (no TCP connection), HandshakeFailed (the
    server refused or answered wrongly) or ValueError (a URL this client cannot open). Bound the
    time it may take with a trio scope (`trio.fail_after`)."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError(f"{url!r}: only ws:// URLs (this client has no TLS)")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sock = await _open_tcp(parts.hostname, port)
    try:
        host = parts.netloc.rpartition("@")[2]
        subprotocol, leftover = await _handshake(sock, host, target, subprotocols, headers)
    except BaseException:
        sock.close()
        raise
    return WebSocket(sock, subprotocol, max_message, leftover)


async def _open_tcp(host: str, port: int) -> socket.socket:
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host}: no address")
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                await trio.lowlevel.wait_writable(sock)
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, f"connecting to {address}: {os.strerror(code)}")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as failed:
            sock.close()
            error = failed
        except BaseException:
            sock.close()
            raise
    raise error


async def _send_all(sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError):
            await trio.lowlevel.wait_writable(sock)
            continue
        view = view[sent:]


async def _recv(sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            await trio.lowlevel.wait_readable(sock)


async def _handshake(sock: socket.socket, host: str, target: str, subprotocols: Sequence[str],
                     extra: Sequence[tuple[str, str]]) -> tuple[str | None, bytes]:
    """The opening handshake (RFC 6455 4.1) with h11; returns the chosen subprotocol and the bytes
    that came after the server's answer (frames already on their way)."""
    key = base64.b64encode(os.urandom(16))
    headers = [("Host", host), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
               ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]
    if subprotocols:
        headers.append(("Sec-WebSocket-Protocol", ", ".join(subprotocols)))
    headers += list(extra)
    http = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_HANDSHAKE_BYTES)
    await _send_all(sock, http.send(h11.Request(method="GET", target=target, headers=headers))
                    + http.send(h11.EndOfMessage()))
    while True:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as error:
            raise HandshakeFailed(0, f"the server's answer is not valid HTTP: {error}") from None
        if event is h11.NEED_DATA:
            http.receive_data(await _recv(sock))
            continue
        if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
            break
        if isinstance(event, h11.Response):
            raise HandshakeFailed(event.status_code, event.reason.decode("latin-1"), await _body(http, sock))
        if isinstance(event, h11.ConnectionClosed):
            raise HandshakeFailed(0, "the server closed the connection during the handshake")
        raise HandshakeFailed(0, f"unexpected answer to the handshake: {event!r}")
    found: dict[bytes, list[bytes]] = {}
    for name, value in event.headers:
        found.setdefault(name, []).append(value)
    if b"websocket" not in _tokens(found.get(b"upgrade", [])):
        raise HandshakeFailed(0, "the server's 101 answer lacks Upgrade: websocket")
    if b"upgrade" not in _tokens(found.get(b"connection", [])):
        raise HandshakeFailed(0, "the server's 101 answer lacks Connection: Upgrade")
    if found.get(b"sec-websocket-accept") != [websocket.accept_key(key)]:
        raise HandshakeFailed(0, "the server's Sec-WebSocket-Accept does not match our key")
    if b"sec-websocket-extensions" in found:
        raise HandshakeFailed(0, "the server chose an extension this client did not offer")
    chosen = found.get(b"sec-websocket-protocol", [])
    subprotocol = chosen[0].decode("ascii", "replace").strip() if chosen else None
    if len(chosen) > 1 or (subprotocol is not None and subprotocol not in subprotocols):
        raise HandshakeFailed(0, f"the server chose a subprotocol this client did not offer: {subprotocol!r}")
    leftover, _ = http.trailing_data
    return subprotocol, bytes(leftover)


def _tokens(values: list[bytes]) -> list[bytes]:
    return [part.strip().lower() for value in values for part in value.split(b",") if part.strip()]


async def _body(http: h11.Connection, sock: socket.socket) -> bytes:
    """A refusal's body, at most MAX_HANDSHAKE_BYTES (what is left is not read)."""
    body = b""
    while len(body) < MAX_HANDSHAKE_BYTES:
        try:
            event = http.next_event()
        except h11.RemoteProtocolError:
            break
        if event is h11.NEED_DATA:
            data = await _recv(sock)
            http.receive_data(data)
            continue
        if isinstance(event, h11.Data):
            body += event.data
            continue
        break  # EndOfMessage, ConnectionClosed
    return body[:MAX_HANDSHAKE_BYTES]


# -- many connections, one reader ---------------------------------------------------------------


class Poller:
    """Which of many connections have something to read, for one task that reads them all.

    `add` a connection once it is open, with an `owner` (default: the connection itself); `wait()`
    returns the owners of the connections that have bytes (or buffered messages): call
    `read_messages()` on each. A connection leaves by itself when its socket closes. Linux epoll
    (or the platform's best selector), itself waited on by trio: one wait for all of them.
    """

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._backlog: list = []  # owners of connections added with messages already buffered

    def __len__(self) -> int:
        return len(self._selector.get_map())

    def add(self, ws: WebSocket, owner=None) -> None:
        owner = ws if owner is None else owner
        if ws.closed is not None or ws.sock.fileno() == -1:
            self._backlog.append(owner)  # its last messages and its end are still to be read
            return
        self._selector.register(ws.sock, selectors.EVENT_READ, (ws, owner))
        ws.on_shutdown = self._forget
        if ws.has_buffered:
            self._backlog.append(owner)

    def _forget(self, ws: WebSocket) -> None:
        ws.on_shutdown = None
        try:
            self._selector.unregister(ws.sock)
        except (KeyError, ValueError):
            pass

    async def wait(self) -> list:
        """The owners of connections with something to read, at least one (a checkpoint)."""
        while True:
            if self._backlog:
                await trio.lowlevel.checkpoint()
                ready, self._backlog = self._backlog, []
                return ready
            await trio.lowlevel.wait_readable(self._selector)
            events = self._selector.select(0)
            if events:
                return [key.data[1] for key, _ in events]

    def close(self) -> None:
        """Stop watching (the connections stay open). Safe to call more than once."""
        watched = self._selector.get_map()
        if watched is None:  # closed already
            return
        for key in list(watched.values()):
            self._forget(key.data[0])
        trio.lowlevel.notify_closing(self._selector)
        self._selector.close()
