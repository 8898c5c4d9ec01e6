"""RFC 6455, sans-IO: the opening handshake's checks and the frame codec.

Bytes in, messages out; messages out, bytes. No extensions are negotiated, so every RSV bit must be
zero. What a peer gets wrong raises `WebSocketError` with the close code the connection ends with
(1002 protocol error, 1007 bad UTF-8, 1009 too big). The server side is the default; the client
side (clients/lightws.py) uses `client_frame`, `client_message` and `Parser(..., masked=False)`.

Why not wsproto (which trio-websocket uses): its per-frame cost is most of what a match server
spends per input at 20 Hz (event objects, a frame-decoder class stack, a bytearray copy per
layer). Here one parse loop handles every complete frame in a buffer, unmasks with one big-integer
XOR, and a server frame is a header plus the payload, built once however many clients receive it.
"""

from __future__ import annotations

import base64
import hashlib
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
TOO_BIG = 1009
NO_STATUS = 1005  # received: a close frame without a code (never sent)
ABNORMAL = 1006  # received: the TCP connection ended without a close frame (never sent)

# Close codes a peer may send (RFC 6455 7.4.1 and the IANA registry); 1005, 1006 and 1015 never travel.
_SENDABLE = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014})


class WebSocketError(Exception):
    """The peer broke the protocol; close the connection with `code`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class HandshakeError(Exception):
    """An opening handshake to refuse with an HTTP `status`."""

    def __init__(self, status: int, reason: str, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = headers or []


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def _tokens(value: bytes) -> list[bytes]:
    return [part.strip().lower() for part in value.split(b",") if part.strip()]


def check_handshake(method: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, tuple[str, ...]]:
    """Check an opening handshake (RFC 6455 4.2.1); return the Sec-WebSocket-Accept value and the
    subprotocols the client proposed, in its order. `headers` have lower-case names."""
    if method != b"GET":
        raise HandshakeError(405, "a WebSocket handshake is a GET", [(b"allow", b"GET")])
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        found.setdefault(name, []).append(value)
    if b"websocket" not in _tokens(b",".join(found.get(b"upgrade", []))):
        raise HandshakeError(426, "this endpoint speaks WebSocket only: send Upgrade: websocket",
                             [(b"upgrade", b"websocket")])
    if b"upgrade" not in _tokens(b",".join(found.get(b"connection", []))):
        raise HandshakeError(400, "a WebSocket handshake has Connection: Upgrade")
    if found.get(b"sec-websocket-version") != [b"13"]:
        raise HandshakeError(426, "WebSocket version 13 only", [(b"sec-websocket-version", b"13")])
    keys = found.get(b"sec-websocket-key", [])
    if len(keys) != 1:
        raise HandshakeError(400, "a WebSocket handshake has one Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        valid = False
    if not valid:
        raise HandshakeError(400, "Sec-WebSocket-Key is 16 bytes in base64")
    proposed = tuple(
        token.decode("ascii", "replace") for value in found.get(b"sec-websocket-protocol", [])
        for token in (part.strip() for part in value.split(b",")) if token)
    return accept_key(key), proposed


# -- server frames ------------------------------------------------------------------------------

def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


def message(data: str | bytes) -> bytes:
    """A text (str) or binary (bytes) message as one frame."""
    if isinstance(data, str):
        return frame(TEXT, data.encode())
    return frame(BINARY, data)


def close_frame(code: int, reason: str = "") -> bytes:
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return frame(CLOSE, payload)


# -- client frames ------------------------------------------------------------------------------

def client_frame(opcode: int, payload: bytes, mask: bytes) -> bytes:
    """One final frame as a client sends it: masked with `mask`, 4 bytes that the caller draws at
    random for each frame (RFC 6455 5.3)."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, size)
    return head + mask + unmask(mask, payload)  # masking and unmasking are the same XOR


def client_message(data: str | bytes, mask: bytes) -> bytes:
    """A text (str) or binary (bytes) message as one masked frame."""
    if isinstance(data, str):
        return client_frame(TEXT, data.encode(), mask)
    return client_frame(BINARY, data, mask)


def client_close_frame(code: int, reason: str, mask: bytes) -> bytes:
    return client_frame(CLOSE, struct.pack("!H", code) + reason.encode()[:123], mask)


def unmask(mask: bytes, data: bytes) -> bytes:
    size = len(data)
    if not size:
        return b""
    key = int.from_bytes(mask * ((size >> 2) + 1), "little") & ((1 << (size << 3)) - 1)
    return (int.from_bytes(data, "little") ^ key).to_bytes(size, "little")


class Parser:
    """Client frames in (`feed`), whole messages out (`next`); with `masked=False`, server frames
    (which a client must find unmasked, RFC 6455 5.1).

    `next()` returns, in order: `str` (a text message), `bytes` (a binary message),
    `("ping", payload)`, `("pong", payload)`, `("close", code, reason)`, or None when it needs more
    bytes. It raises `WebSocketError` for a protocol violation; the parser is then unusable.
    """

    __slots__ = ("buffer", "fragment_opcode", "fragment_size", "fragments", "mask_bit", "max_message", "position")

    def __init__(self, max_message: int, *, masked: bool = True):
        self.mask_bit = 0x80 if masked else 0  # the MASK bit every frame must have
        self.buffer = b""
        self.position = 0
        self.max_message = max_message
        self.fragments: list[bytes] = []
        self.fragment_opcode = 0  # 0: not in a fragmented message
        self.fragment_size = 0

    @property
    def buffered(self) -> int:
        return len(self.buffer) - self.position

    def feed(self, data: bytes) -> None:
        if self.position:
            self.buffer = self.buffer[self.position:] + data
            self.position = 0
        elif self.buffer:
            self.buffer += data
        else:
            self.buffer = data

    def next(self):
        while True:
            buffer, at = self.buffer, self.position
            end = len(buffer)
            if end - at < 2:
                return None
            first, second = buffer[at], buffer[at + 1]
            if first & 0x70:
                raise WebSocketError(PROTOCOL_ERROR, "reserved bits set without an extension")
            masked = second & 0x80
            if masked != self.mask_bit:
                raise WebSocketError(PROTOCOL_ERROR, "client frames must be masked" if self.mask_bit
                                     else "server frames must not be masked")
            fin, opcode, size = first & 0x80, first & 0x0F, second & 0x7F
            head = at + 2
            if size == 126:
                if end - head < 2:
                    return None
                size = (buffer[head] << 8) | buffer[head + 1]
                head += 2
            elif size == 127:
                if end - head < 8:
                    return None
                size = int.from_bytes(buffer[head:head + 8], "big")
                if size >> 63:
                    raise WebSocketError(PROTOCOL_ERROR, "frame length has its top bit set")
                head += 8
            if opcode >= 0x8:
                if opcode not in (CLOSE, PING, PONG):
                    raise WebSocketError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if not fin:
                    raise WebSocketError(PROTOCOL_ERROR, "a control frame cannot be fragmented")
                if size > 125:
                    raise WebSocketError(PROTOCOL_ERROR, "a control frame carries at most 125 bytes")
            elif opcode not in (CONTINUATION, TEXT, BINARY):
                raise WebSocketError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif size + self.fragment_size > self.max_message:
                raise WebSocketError(TOO_BIG, f"a message is at most {self.max_message} bytes")
            start = head + 4 if masked else head
            stop = start + size
            if stop > end:
                return None
            payload = unmask(buffer[head:start], buffer[start:stop]) if masked else buffer[start:stop]
            self.position = stop
            if stop == end:
                self.buffer, self.position = b"", 0
            if opcode == TEXT or opcode == BINARY:
                if self.fragment_opcode:
                    raise WebSocketError(PROTOCOL_ERROR, "a new message began inside a fragmented one")
                if fin:
                    return _text(payload) if opcode == TEXT else payload
                self.fragment_opcode, self.fragments, self.fragment_size = opcode, [payload], size
                continue
            if opcode == CONTINUATION:
                if not self.fragment_opcode:
                    raise WebSocketError(PROTOCOL_ERROR, "a continuation frame outside a fragmented message")
                self.fragments.append(payload)
                self.fragment_size += size
                if not fin:
                    continue
                whole, kind = b"".join(self.fragments), self.fragment_opcode
                self.fragments, self.fragment_opcode, self.fragment_size = [], 0, 0
                return _text(whole) if kind == TEXT else whole
            if opcode == PING:
                return ("ping", payload)
            if opcode == PONG:
                return ("pong", payload)
            return ("close",) + _close_payload(payload)


def _text(payload: bytes) -> str:
    try:
        return payload.decode()
    except UnicodeDecodeError:
        raise WebSocketError(INVALID_DATA, "a text message must be UTF-8") from None


def _close_payload(payload: bytes) -> tuple[int, str]:
    if not payload:
        return NO_STATUS, ""
    if len(payload) == 1:
        raise WebSocketError(PROTOCOL_ERROR, "a close frame's code is 2 bytes")
    code = (payload[0] << 8) | payload[1]
    if code not in _SENDABLE and not 3000 <= code <= 4999:
        raise WebSocketError(PROTOCOL_ERROR, f"close code {code} cannot be sent")
    return code, _text(payload[2:])
