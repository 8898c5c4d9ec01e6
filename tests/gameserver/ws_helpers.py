"""Test helpers that speak WebSocket with plain sockets, to say exactly which bytes go on the wire."""

import base64
import os
import struct

import trio

from gameserver import websocket


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bytes | None = None, rsv: int = 0,
                 masked: bool = True, length_form: str | None = None) -> bytes:
    mask = os.urandom(4) if mask is None else mask
    size = len(payload)
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if masked else 0
    form = length_form or ("short" if size < 126 else "medium" if size < 65536 else "long")
    if form == "short":
        head = bytes((first, bit | size))
    elif form == "medium":
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if not masked:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body



class RawClient:
    """A client written with plain sockets, to say exactly which bytes go on the wire."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int, path: str = "/echo", extra: bytes = b"", protocols: str | None = None):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16))
        lines = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Upgrade: websocket",
                 b"Connection: Upgrade", b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Key: " + key]
        if protocols:
            lines.append(b"Sec-WebSocket-Protocol: " + protocols.encode())
        await stream.send_all(b"\r\n".join(lines) + b"\r\n\r\n" + extra)
        client = cls(stream)
        head = await client.read_until(b"\r\n\r\n")
        return client, head, key

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError(self.buffer)
            self.buffer += data
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def frame(self) -> tuple[int, bytes]:
        first, second = await self.read_exactly(2)
        assert not second & 0x80, "server frames are not masked"
        size = second & 0x7F
        if size == 126:
            size = struct.unpack("!H", await self.read_exactly(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", await self.read_exactly(8))[0]
        return first & 0x0F, await self.read_exactly(size)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)
