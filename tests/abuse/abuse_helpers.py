"""Hostile-client helpers: a WebSocket client on plain sockets that can say anything on the wire,
and a node with its WebSocket endpoint on loopback (port 0) to say it to.

Nothing here knows how the server is built inside: tests talk to it over real sockets and check
what docs/protocol.md promises (error codes, close codes, limits).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import msgpack
import trio

from gameserver import protocol, tokens
from gameserver.config import NodeConfig
from gameserver.endpoint import Endpoint
from gameserver.games import builtin_games
from gameserver.node import Node

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
SECRET = b"abuse-tests-secret-".ljust(32, b"x")
EPOCH = 1_800_000_000.0


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True, rsv: int = 0,
                 mask: bytes | None = None, length: int | None = None) -> bytes:
    """One client frame, as wrong as asked: `length` overrides the length header (payload unchanged)."""
    mask = os.urandom(4) if mask is None else mask
    size = len(payload) if length is None else length
    first = (0x80 if fin else 0) | rsv | opcode
    bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, bit | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, bit | 127, size)
    if not masked:
        return head + payload
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def handshake_bytes(path: str, protocols: str | None = None, key: bytes | None = None) -> bytes:
    key = key or base64.b64encode(os.urandom(16))
    lines = [f"GET {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Upgrade: websocket", b"Connection: Upgrade",
             b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Key: " + key]
    if protocols:
        lines.append(b"Sec-WebSocket-Protocol: " + protocols.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Closed(Exception):
    """The server closed: its close code and reason (1006: the TCP connection ended without one)."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


async def open_socket(port: int, rcvbuf: int | None = None) -> trio.SocketStream:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # set before connecting, so that the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return trio.SocketStream(sock)


class RawWS:
    """A WebSocket client written with plain sockets, to say exactly which bytes go on the wire."""

    def __init__(self, stream: trio.SocketStream, fmt: str = protocol.JSON):
        self.stream = stream
        self.fmt = fmt
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int, path: str, *, fmt: str = protocol.JSON, rcvbuf: int | None = None,
                      extra: bytes = b"") -> RawWS:
        """Open and complete the handshake (101 expected)."""
        stream = await open_socket(port, rcvbuf)
        protocols = "arbiter.msgpack.v1" if fmt == protocol.MSGPACK else None
        await stream.send_all(handshake_bytes(path, protocols) + extra)
        ws = cls(stream, fmt)
        head = await ws.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return ws

    async def _more(self) -> None:
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            raise Closed(1006, "the TCP connection ended")
        self.buffer += data

    async def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            await self._more()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    async def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            await self._more()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame, whatever it is."""
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

    async def send_frame(self, opcode: int, payload: bytes, **options) -> None:
        await self.send(client_frame(opcode, payload, **options))

    def encode(self, body: Any) -> bytes:
        if self.fmt == protocol.MSGPACK:
            return client_frame(BINARY, msgpack.packb(body, use_bin_type=True))
        return client_frame(TEXT, json.dumps(body).encode())

    async def send_json(self, body: Any) -> None:
        """A message in this connection's format (JSON text, or msgpack binary)."""
        await self.send(self.encode(body))

    async def message(self) -> dict:
        """The next application message; pongs to our pings are skipped; a close raises Closed."""
        while True:
            opcode, payload = await self.frame()
            if opcode == CLOSE:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise Closed(code, payload[2:].decode(errors="replace"))
            if opcode == TEXT:
                return json.loads(payload)
            if opcode == BINARY:
                return msgpack.unpackb(payload, raw=False)

    async def until(self, t: str, **fields) -> dict:
        """Skip messages until one of type `t` (with these field values) arrives."""
        while True:
            message = await self.message()
            if message.get("t") == t and all(message.get(k) == v for k, v in fields.items()):
                return message

    async def until_close(self, limit: int = 100_000) -> tuple[list[dict], Closed]:
        """Every message up to the close, and the close."""
        seen: list[dict] = []
        for _ in range(limit):
            try:
                seen.append(await self.message())
            except Closed as closed:
                return seen, closed
        raise AssertionError(f"no close after {limit} messages")

    async def auth(self, token: str, **fields) -> dict:
        await self.send_json({"t": "auth", "token": token, **fields})
        return await self.until("welcome")

    async def aclose(self) -> None:
        await self.stream.aclose()


@attrs.define
class WallClock:
    """A wall clock the test can move: real time plus `offset` (tokens expire by it)."""

    offset: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@attrs.define
class Stack:
    """A node and its WebSocket endpoint, serving on loopback."""

    node: Node
    endpoint: Endpoint
    port: int
    clock: WallClock
    secret: bytes = SECRET

    def token(self, match_id: str, player: str, role: str = tokens.PLAYER, ttl: float = 3600.0) -> str:
        now = self.clock()
        return tokens.sign(self.secret, tokens.Grant(match_id, player, role, now + ttl), now)

    @staticmethod
    def path(match_id: str) -> str:
        return f"/v1/matches/{match_id}"

    async def match(self, game: str = "arena", params: Any = None, name: str | None = None) -> str:
        meta = await self.node.create_match(game, params or {}, name)
        return meta.match_id

    async def connect(self, match_id: str, **options) -> RawWS:
        return await RawWS.connect(self.port, self.path(match_id), **options)

    async def join(self, match_id: str, player: str, role: str = tokens.PLAYER, **options) -> tuple[RawWS, dict]:
        ws = await self.connect(match_id, **options)
        welcome = await ws.auth(self.token(match_id, player, role))
        return ws, welcome


async def start_stack(nursery: trio.Nursery, data_dir, games=None, *, offload: bool = True, **config) -> Stack:
    """A node (with `config` over NodeConfig's defaults) and its endpoint on 127.0.0.1:0.
    `offload=False` under MockClock (file work in threads would let the mock clock run ahead)."""
    clock = WallClock()
    node = Node(NodeConfig(data_dir=data_dir, **config), games or builtin_games(), wall_clock=clock,
                offload=offload)
    endpoint = Endpoint(node, SECRET)
    await nursery.start(node.run)
    server = await nursery.start(endpoint.serve, "127.0.0.1", 0)
    return Stack(node, endpoint, server.port, clock)


def metric(node: Node, name: str, **labels) -> float:
    """A sample's value from the node's Prometheus registry (0 if absent)."""
    value = node.metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


# -- a real `arbiter up` process -------------------------------------------------------------------

@contextlib.contextmanager
def arbiter_up(root: Path, *args: str):
    """A real `arbiter up --port 0` in a subprocess (never the caller's ARBITER_ADMIN_TOKEN): yields
    the ready file's contents ({"http_url", "ws_url", "pid"}). Stopped by its PID (SIGTERM, then
    SIGKILL after 15 s)."""
    ready = root / "ready.json"
    env = {key: value for key, value in os.environ.items() if key != "ARBITER_ADMIN_TOKEN"}
    with open(root / "server.log", "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "up", "--port", "0", "--data-dir", str(root / "data"),
             "--ready-file", str(ready), *args], stdout=log, stderr=subprocess.STDOUT, env=env,
            cwd=Path(__file__).resolve().parents[2])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"arbiter up did not start: {(root / 'server.log').read_text()}")
            time.sleep(0.05)  # waiting for another process to start: nothing to wait on but the file
        yield json.loads(ready.read_text())
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()


def rss_of(pid: int) -> int:
    """A process's resident set size in bytes (Linux /proc)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def listening_addresses(pid: int) -> list[str]:
    """The local addresses (ip:port, hex as in /proc/net/tcp*) of the TCP sockets `pid` listens on."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                    found.append(fields[1])
    return found


LOOPBACK_HEX = ("0100007F", "00000000000000000000000001000000")  # 127.0.0.1 and ::1 as /proc/net shows them
