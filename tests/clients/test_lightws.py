"""The light WebSocket client (clients/lightws.py) and the codec's client side (gameserver/websocket.py):
round trips against the real server shell (gameserver/wsserver.py) over loopback, and a raw server
written with plain sockets to say exactly which bytes the client gets and must answer."""

import base64
import struct

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from clients import lightws
from clients.lightws import ConnectionClosed, HandshakeFailed, ProtocolViolation
from gameserver import websocket, wsserver
from gameserver.websocket import Parser, WebSocketError

LIMIT = 1 << 20
TIMEOUT_S = 10  # every test's guard: none of them waits on time otherwise


# -- the codec's client side, pure --------------------------------------------------------------

def parse_all(parser: Parser, data: bytes, cuts: list[int]) -> list:
    out, at = [], 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}) + [len(data)]:
        parser.feed(data[at:cut])
        at = cut
        while (item := parser.next()) is not None:
            out.append(item)
    return out


messages = st.one_of(st.text(max_size=300), st.binary(max_size=70_000))


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, max_size=5), st.lists(st.integers(0, 200_000), max_size=10),
       st.lists(st.binary(min_size=4, max_size=4), min_size=5, max_size=5))
def test_client_messages_are_masked_and_the_server_parser_reads_them(items, cuts, masks):
    wire = b"".join(websocket.client_message(m, mask) for m, mask in zip(items, masks))
    assert parse_all(Parser(LIMIT), wire, cuts) == items
    for m, mask in zip(items, masks):
        payload = m.encode() if isinstance(m, str) else m
        frame = websocket.client_message(m, mask)
        assert frame[1] & 0x80  # the MASK bit
        body = frame[-len(payload):] if payload else b""
        assert frame[-len(payload) - 4:][:4] == mask
        assert body == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, max_size=5), st.lists(st.integers(0, 200_000), max_size=10))
def test_server_frames_parse_in_client_mode_from_any_split(items, cuts):
    wire = b"".join(websocket.message(m) for m in items)
    assert parse_all(Parser(LIMIT, masked=False), wire, cuts) == items


def test_client_mode_refuses_masked_frames_and_server_mode_unmasked_ones():
    with pytest.raises(WebSocketError, match="server frames must not be masked") as caught:
        parse_all(Parser(LIMIT, masked=False), websocket.client_message("hi", b"abcd"), [])
    assert caught.value.code == websocket.PROTOCOL_ERROR
    with pytest.raises(WebSocketError, match="client frames must be masked"):
        parse_all(Parser(LIMIT), websocket.message("hi"), [])


# -- a raw server ---------------------------------------------------------------------------------

class RawPeer:
    """The server end of one connection, in plain bytes; frames from the client are read with the
    server's parser, which refuses unmasked ones."""

    def __init__(self, stream: trio.SocketStream, request: bytes, rest: bytes):
        self.stream = stream
        self.request = request
        self.parser = Parser(LIMIT)
        self.parser.feed(rest)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def item(self):
        """The client's next message or control frame, as the server parser returns it."""
        while (item := self.parser.next()) is None:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.parser.feed(data)
        return item

    async def eof(self) -> bool:
        return await self.stream.receive_some(10) == b""


def header(request: bytes, name: bytes) -> bytes:
    for line in request.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    raise KeyError(name)


def accept(request: bytes, extra: bytes = b"") -> bytes:
    key = header(request, b"sec-websocket-key")
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + websocket.accept_key(key) + b"\r\n" + extra + b"\r\n")


async def raw_server(nursery, answer=accept):
    """A listener on port 0; returns (url, a channel of RawPeer). `answer(request)` is the bytes the
    server answers the opening handshake with."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    send, receive = trio.open_memory_channel(10)

    async def handle(stream):
        data = b""
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        request, _, rest = data.partition(b"\r\n\r\n")
        await stream.send_all(answer(request))
        await send.send(RawPeer(stream, request, rest))
        await trio.sleep_forever()  # the test owns the stream now

    nursery.start_soon(trio.serve_listeners, handle, listeners)
    port = listeners[0].socket.getsockname()[1]
    return f"ws://127.0.0.1:{port}/raw?x=1", receive


async def test_the_opening_handshake_and_masked_frames_both_ways():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, peers = await raw_server(nursery)
            ws = await lightws.connect(url)
            peer = await peers.receive()
            first = peer.request.split(b"\r\n")[0]
            assert first == b"GET /raw?x=1 HTTP/1.1"
            assert header(peer.request, b"sec-websocket-version") == b"13"
            assert len(base64.b64decode(header(peer.request, b"sec-websocket-key"))) == 16
            assert ws.subprotocol is None
            await ws.send("hello")
            await ws.send(b"\x00\x01")
            assert await peer.item() == "hello"  # the server parser accepts only masked frames
            assert await peer.item() == b"\x00\x01"
            await peer.send(websocket.message("back") + websocket.message(b"\xff"))
            assert await ws.receive() == "back"
            assert await ws.receive() == b"\xff"
            nursery.cancel_scope.cancel()


async def test_every_frame_has_a_new_mask():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, peers = await raw_server(nursery)
            ws = await lightws.connect(url)
            peer = await peers.receive()
            for _ in range(20):
                await ws.send("same")
            wire = b""
            while len(wire) < 20 * 10:
                wire += await peer.stream.receive_some(65536)
            masks = {wire[i + 2:i + 6] for i in range(0, 200, 10)}
            assert len(masks) > 15  # 20 draws of 32 random bits: a repeat is all but impossible
            nursery.cancel_scope.cancel()


async def test_pings_are_answered_and_fragments_joined_with_a_ping_between():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, peers = await raw_server(nursery)
            ws = await lightws.connect(url)
            peer = await peers.receive()
            await peer.send(websocket.frame(websocket.PING, b"you there?"))
            await peer.send(bytes((websocket.TEXT, 3)) + b"fra")  # FIN clear: the first of three
            await peer.send(websocket.frame(websocket.PING, b"again"))
            await peer.send(bytes((websocket.CONTINUATION, 4)) + "gmen".encode())
            await peer.send(bytes((websocket.CONTINUATION, 4)) + "ts ü".encode()[:4])  # ü split in two
            await peer.send(bytes((0x80 | websocket.CONTINUATION, 1)) + "ts ü".encode()[4:])
            assert await ws.receive() == "fragments ü"
            assert await peer.item() == ("pong", b"you there?")
            assert await peer.item() == ("pong", b"again")
            nursery.cancel_scope.cancel()


async def test_the_client_closes_and_waits_for_the_servers_close_and_end():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, peers = await raw_server(nursery)
            ws = await lightws.connect(url)
            peer = await peers.receive()
            done = trio.Event()

            async def close():
                await ws.aclose(4001, "bye")
                done.set()

            nursery.start_soon(close)
            assert await peer.item() == ("close", 4001, "bye")
            assert not done.is_set()
            await peer.send(websocket.message("late") + websocket.close_frame(4001))
            await done.wait()
            assert (ws.closed.code, ws.closed.reason) == (4001, "")
            assert await peer.eof()  # the client ended the TCP connection after the handshake
            with pytest.raises(ConnectionClosed):
                await ws.send("after the close")
            await ws.aclose()  # again: nothing happens
            nursery.cancel_scope.cancel()


async def test_the_servers_close_is_echoed_and_raised_after_the_messages_before_it():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, peers = await raw_server(nursery)
            ws = await lightws.connect(url)
            peer = await peers.receive()
            await peer.send(websocket.message("last words") + websocket.close_frame(4002, "match over"))
            assert await ws.receive() == "last words"
            with pytest.raises(ConnectionClosed) as caught:
                await ws.receive()
            assert (caught.value.code, caught.value.reason) == (4002, "match over")
            assert not isinstance(caught.value, ProtocolViolation)
            assert await peer.item() == ("close", 4002, "")
            assert await peer.eof()
            nursery.cancel_scope.cancel()


async def test_a_close_without_a_code_is_echoed_without_one():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, peers = await raw_server(nursery)
            ws = await lightws.connect(url)
            peer = await peers.receive()
            await peer.send(websocket.frame(websocket.CLOSE, b""))
            with pytest.raises(ConnectionClosed) as caught:
                await ws.receive()
            assert caught.value.code == websocket.NO_STATUS
            assert await peer.item() == ("close", websocket.NO_STATUS, "")
            nursery.cancel_scope.cancel()


async def test_the_end_of_the_tcp_connection_without_a_close_is_1006():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, peers = await raw_server(nursery)
            ws = await lightws.connect(url)
            peer = await peers.receive()
            await peer.send(websocket.message("one"))
            await peer.stream.aclose()
            assert await ws.receive() == "one"
            with pytest.raises(ConnectionClosed) as caught:
                await ws.receive()
            assert caught.value.code == websocket.ABNORMAL
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("data, code, says", [
    (websocket.client_message("hi", b"abcd"), websocket.PROTOCOL_ERROR, "must not be masked"),
    (bytes((0x80 | 0x40 | websocket.TEXT, 2)) + b"hi", websocket.PROTOCOL_ERROR, "reserved bits"),
    (bytes((0x83, 0)), websocket.PROTOCOL_ERROR, "unknown opcode 3"),
    (bytes((websocket.PING, 1)) + b"x", websocket.PROTOCOL_ERROR, "cannot be fragmented"),
    (bytes((websocket.CONTINUATION | 0x80, 1)) + b"x", websocket.PROTOCOL_ERROR, "outside a fragmented"),
    (websocket.frame(websocket.TEXT, b"\xc3\x28"), websocket.INVALID_DATA, "UTF-8"),
    (struct.pack("!BBQ", 0x82, 127, LIMIT + 1), websocket.TOO_BIG, "at most"),
    (websocket.frame(websocket.CLOSE, struct.pack("!H", 1005)), websocket.PROTOCOL_ERROR, "close code 1005"),
])
async def test_bad_server_frames_fail_the_connection_with_their_code(data, code, says):
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, peers = await raw_server(nursery)
            ws = await lightws.connect(url, max_message=LIMIT)
            peer = await peers.receive()
            await peer.send(websocket.message("fine") + data)
            assert await ws.receive() == "fine"
            with pytest.raises(ProtocolViolation, match=says) as caught:
                await ws.receive()
            assert caught.value.code == code
            assert "the server broke the WebSocket protocol" in caught.value.reason
            item = await peer.item()
            assert item[:2] == ("close", code)  # the client told the server why
            assert await peer.eof()
            with pytest.raises(ProtocolViolation):
                await ws.receive()  # and it stays closed
            nursery.cancel_scope.cancel()


def refuse(request: bytes) -> bytes:
    return b"HTTP/1.1 403 Forbidden\r\nContent-Length: 13\r\nConnection: close\r\n\r\nno token here"


def wrong_key(request: bytes) -> bytes:
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + websocket.accept_key(b"not the key") + b"\r\n\r\n")


def not_offered(request: bytes) -> bytes:
    return accept(request, b"Sec-WebSocket-Protocol: something.else\r\n")


def no_upgrade(request: bytes) -> bytes:
    return accept(request).replace(b"Upgrade: websocket\r\n", b"")


def not_http(request: bytes) -> bytes:
    return b"SSH-2.0-OpenSSH\r\n\r\n"


@pytest.mark.parametrize("answer, status, says", [
    (refuse, 403, "Forbidden"),
    (wrong_key, 0, "Sec-WebSocket-Accept does not match"),
    (not_offered, 0, "did not offer: 'something.else'"),
    (no_upgrade, 0, "lacks Upgrade: websocket"),
    (not_http, 0, "not valid HTTP"),
])
async def test_a_refused_or_wrong_handshake_is_a_clear_error(answer, status, says):
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, _ = await raw_server(nursery, answer)
            with pytest.raises(HandshakeFailed, match=says) as caught:
                await lightws.connect(url, subprotocols=["arbiter.json.v1"])
            assert caught.value.status == status
            if status:
                assert caught.value.body == b"no token here"
            nursery.cancel_scope.cancel()


async def test_urls_this_client_cannot_open_and_a_closed_port():
    for url, says in (("wss://127.0.0.1:1/x", "only ws://"), ("http://127.0.0.1/x", "only ws://"),
                      ("ws:///x", "no host"), ("ws://127.0.0.1:99999/x", "bad port")):
        with pytest.raises(ValueError, match=says):
            await lightws.connect(url)
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with trio.fail_after(TIMEOUT_S), pytest.raises(OSError):
        await lightws.connect(f"ws://127.0.0.1:{port}/")


# -- against the real server shell --------------------------------------------------------------

async def echo(request: wsserver.Request) -> None:
    if request.path == "/refuse":
        await request.reject(404, b"nothing here")
        return
    ws = await request.accept(subprotocol=request.proposed_subprotocols[0] if request.proposed_subprotocols else None)
    try:
        while True:
            message = await ws.receive()
            if message == "close me":
                await ws.aclose(4000, "as you wish")
                return
            await ws.send(message)
    except wsserver.ConnectionClosed as closed:
        if request.path == "/report":
            ws.closed_with = closed  # for the test that reads it


@pytest.fixture
async def port(nursery):
    server = await nursery.start(lambda task_status: wsserver.serve(
        echo, "127.0.0.1", 0, max_message=8 << 20, handshake_timeout=2, task_status=task_status))
    return server.port


async def test_round_trips_with_the_server_codec_small_and_large(port):
    with trio.fail_after(TIMEOUT_S):
        ws = await lightws.connect(f"ws://127.0.0.1:{port}/echo", subprotocols=["arbiter.json.v1"],
                                   max_message=8 << 20)
        assert ws.subprotocol == "arbiter.json.v1"
        for message in ("", "x" * 125, "é" * 100, b"y" * 126, b"\x00" * 65535, "z" * 65536, b"w" * 3_000_000):
            await ws.send(message)
            assert await ws.receive() == message
        await ws.aclose()
        assert ws.closed.code == 1000


async def test_a_write_the_kernel_cannot_take_at_once_waits_for_flush(port):
    with trio.fail_after(TIMEOUT_S):
        ws = await lightws.connect(f"ws://127.0.0.1:{port}/echo", max_message=8 << 20)
        told = []
        ws.on_pending = lambda: told.append(len(ws.out))
        big = b"b" * 6_000_000  # more than the socket buffers on both sides
        ws.write(big)
        ws.write("after")  # queued behind the rest, in order
        assert told and told[0] > 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.flush)
            assert await ws.receive() == big
            assert await ws.receive() == "after"
        assert not ws.out
        await ws.aclose()


async def test_the_servers_closing_handshake(port):
    with trio.fail_after(TIMEOUT_S):
        ws = await lightws.connect(f"ws://127.0.0.1:{port}/echo")
        await ws.send("close me")
        with pytest.raises(ConnectionClosed) as caught:
            await ws.receive()
        assert (caught.value.code, caught.value.reason) == (4000, "as you wish")


async def test_the_server_refusing_the_handshake(port):
    with trio.fail_after(TIMEOUT_S), pytest.raises(HandshakeFailed) as caught:
        await lightws.connect(f"ws://127.0.0.1:{port}/refuse")
    assert (caught.value.status, caught.value.body) == (404, b"nothing here")


async def test_one_poller_reads_many_connections(port):
    with trio.fail_after(TIMEOUT_S):
        poller = lightws.Poller()
        sockets = [await lightws.connect(f"ws://127.0.0.1:{port}/echo") for _ in range(5)]
        for n, ws in enumerate(sockets):
            poller.add(ws, owner=n)
        assert len(poller) == 5
        for n, ws in enumerate(sockets):
            ws.write(f"to {n}")
        got: dict[int, list] = {}
        while sum(map(len, got.values())) < 5:
            for n in await poller.wait():
                got.setdefault(n, []).extend(sockets[n].read_messages())
        assert got == {n: [f"to {n}"] for n in range(5)}
        await sockets[2].send("close me")  # the server closes this one
        while sockets[2].closed is None:
            for n in await poller.wait():
                assert sockets[n].read_messages() == []
        assert sockets[2].closed.code == 4000
        assert len(poller) == 4  # it left the poller when its socket closed
        for ws in sockets:
            await ws.aclose()
        assert len(poller) == 0
        poller.close()
        poller.close()


async def test_a_connection_added_with_messages_already_read_is_ready_at_once():
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            url, peers = await raw_server(nursery)
            ws = await lightws.connect(url)
            peer = await peers.receive()
            await peer.send(websocket.message("welcome") + websocket.message("state 1"))
            assert await ws.receive() == "welcome"  # "state 1" came in the same read
            poller = lightws.Poller()
            poller.add(ws, owner="bot")
            assert await poller.wait() == ["bot"]
            assert ws.read_messages() == ["state 1"]
            poller.close()
            nursery.cancel_scope.cancel()
