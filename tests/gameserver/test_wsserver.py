"""The WebSocket server shell (gameserver/wsserver.py) over real loopback sockets: handshakes,
pings, the closing handshake, protocol violations, and writes the kernel cannot take at once."""

import socket
import struct

import pytest
import trio
import trio.testing

from gameserver import websocket, wsserver

from ws_helpers import RawClient, client_frame


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
            if message == "big":
                ws.write(b"z" * 8_000_000)  # more than any socket buffer: the rest waits for flush
                assert ws.pending > 0
                await ws.flush()
                continue
            await ws.send(message)
    except wsserver.ConnectionClosed:
        return


@pytest.fixture
async def port(nursery):
    server = await nursery.start(lambda task_status: wsserver.serve(
        echo, "127.0.0.1", 0, max_message=1024, handshake_timeout=2, task_status=task_status))
    return server.port


async def test_echo_with_subprotocol_and_a_frame_sent_with_the_handshake(port):
    early = client_frame(websocket.TEXT, b"early")
    client, head, key = await RawClient.connect(port, extra=early, protocols="arbiter.json.v1")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Accept: " + websocket.accept_key(key) in head
    assert b"Sec-WebSocket-Protocol: arbiter.json.v1" in head
    assert await client.frame() == (websocket.TEXT, b"early")
    await client.send(client_frame(websocket.BINARY, b"\x00\x01"))
    assert await client.frame() == (websocket.BINARY, b"\x00\x01")


async def test_pings_are_answered_and_the_peers_close_is_echoed(port):
    client, _, _ = await RawClient.connect(port)
    await client.send(client_frame(websocket.PING, b"are you there"))
    assert await client.frame() == (websocket.PONG, b"are you there")
    await client.send(client_frame(websocket.CLOSE, struct.pack("!H", 1000) + b"done"))
    assert await client.frame() == (websocket.CLOSE, struct.pack("!H", 1000))
    assert await client.stream.receive_some(10) == b""  # then the server ends the TCP connection


async def test_the_server_closes_with_code_and_reason_and_waits_for_the_answer(port):
    client, _, _ = await RawClient.connect(port)
    await client.send(client_frame(websocket.TEXT, b"close me"))
    assert await client.frame() == (websocket.CLOSE, struct.pack("!H", 4000) + b"as you wish")
    await client.send(client_frame(websocket.CLOSE, struct.pack("!H", 4000)))
    assert await client.stream.receive_some(10) == b""


@pytest.mark.parametrize("data, code", [
    (client_frame(websocket.TEXT, b"x", masked=False), websocket.PROTOCOL_ERROR),
    (client_frame(websocket.TEXT, b"x" * 2000), websocket.TOO_BIG),
    (struct.pack("!BBQ", 0x82, 0xFF, 10**12), websocket.TOO_BIG),
    (client_frame(websocket.TEXT, b"\xc3\x28"), websocket.INVALID_DATA),
])
async def test_protocol_violations_close_with_their_code(port, data, code):
    client, _, _ = await RawClient.connect(port)
    await client.send(data)
    opcode, payload = await client.frame()
    assert opcode == websocket.CLOSE and struct.unpack("!H", payload[:2])[0] == code


async def test_a_write_larger_than_the_socket_buffer_completes_in_order(port):
    client, _, _ = await RawClient.connect(port)
    await client.send(client_frame(websocket.TEXT, b"big") + client_frame(websocket.TEXT, b"after"))
    assert await client.frame() == (websocket.BINARY, b"z" * 8_000_000)
    assert await client.frame() == (websocket.TEXT, b"after")


async def test_rejections_and_non_websocket_requests_get_http_answers(port):
    client, head, _ = await RawClient.connect(port, path="/refuse")
    assert head.startswith(b"HTTP/1.1 404") and b"Content-Length: 12" in head
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while chunk := await stream.receive_some(4096):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 426") and b"WebSocket only" in answer and answer.count(b"onnection:") == 1
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"\x16\x03\x01 not http at all\r\n\r\n")
    answer = await stream.receive_some(4096)
    assert answer.startswith(b"HTTP/1.1 400")


async def test_a_handshake_that_never_finishes_is_dropped(port, autojump_clock):
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /echo HTTP/1.1\r\n")  # and nothing more
    with trio.fail_after(5):  # the server's handshake timeout is 2 s (virtual time)
        assert await stream.receive_some(10) == b""


async def test_an_abrupt_disconnect_ends_the_reader(nursery):
    ended = trio.Event()
    seen: list = []

    async def handler(request):
        ws = await request.accept()
        try:
            await ws.receive()
        except wsserver.ConnectionClosed as closed:
            seen.append(closed.code)
        ended.set()

    server = await nursery.start(lambda task_status: wsserver.serve(
        handler, "127.0.0.1", 0, max_message=1024, task_status=task_status))
    client, _, _ = await RawClient.connect(server.port)
    client.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await client.stream.aclose()  # a reset, no close frame
    await ended.wait()
    assert seen == [websocket.ABNORMAL]


# -- messages handled as they arrive (WebSocket.read_inline) ---------------------------------------

async def inline_echo(request: wsserver.Request) -> None:
    """Echoes "inline:<m>" from the readiness task for what the handler takes, "reader:<m>" from the
    reader for the rest; "leave" is left to the reader as a list, "boom" raises in the handler."""
    ws = await request.accept()

    def handle(message):
        if message == "leave":
            return ["left", message]
        if message == "boom":
            raise ValueError("boom")
        ws.write(f"inline:{message}")
        return None

    ws.read_inline(handle)
    try:
        while True:
            try:
                item = await ws.receive()
            except ValueError as error:
                await ws.aclose(4001, str(error))
                return
            except RuntimeError as error:
                await ws.aclose(4002, str(error))
                return
            ws.write(f"reader:{item}")
    except wsserver.ConnectionClosed:
        return
    finally:
        ws.read_inline(None)


@pytest.fixture
async def inline_port(nursery):
    server = await nursery.start(lambda task_status: wsserver.serve(
        inline_echo, "127.0.0.1", 0, max_message=1024, handshake_timeout=2, task_status=task_status))
    return server.port


async def texts(client, count):
    frames = [await client.frame() for _ in range(count)]
    return [payload.decode() if opcode == websocket.TEXT else (opcode, payload) for opcode, payload in frames]


async def test_messages_are_handled_as_they_arrive_and_anything_else_wakes_the_reader_in_order(inline_port):
    client, _, _ = await RawClient.connect(inline_port)
    await trio.testing.wait_all_tasks_blocked()  # the reader waits for bytes
    await client.send(client_frame(websocket.TEXT, b"a") + client_frame(websocket.TEXT, b"b"))
    assert await texts(client, 2) == ["inline:a", "inline:b"]
    await trio.testing.wait_all_tasks_blocked()
    # a ping is the reader's: it answers, then reads on itself, in order
    await client.send(client_frame(websocket.TEXT, b"c") + client_frame(websocket.PING, b"p")
                      + client_frame(websocket.TEXT, b"d"))
    assert await texts(client, 3) == ["inline:c", (websocket.PONG, b"p"), "reader:d"]
    await trio.testing.wait_all_tasks_blocked()
    # what the handler leaves goes to the reader, before what came after it
    await client.send(client_frame(websocket.TEXT, b"leave") + client_frame(websocket.TEXT, b"e"))
    assert await texts(client, 2) == ["reader:['left', 'leave']", "reader:e"]
    await trio.testing.wait_all_tasks_blocked()
    await client.send(client_frame(websocket.TEXT, b"f"))
    assert await texts(client, 1) == ["inline:f"]


async def test_a_burst_is_handled_inline_only_up_to_yield_every_messages(inline_port):
    client, _, _ = await RawClient.connect(inline_port)
    await trio.testing.wait_all_tasks_blocked()
    count = wsserver.YIELD_EVERY + 8
    await client.send(b"".join(client_frame(websocket.TEXT, str(i).encode()) for i in range(count)))
    got = await texts(client, count)
    assert [text.split(":")[1] for text in got] == [str(i) for i in range(count)]  # every one, in order
    first_by_reader = next(i for i, text in enumerate(got) if text.startswith("reader:"))
    assert 1 <= first_by_reader <= wsserver.YIELD_EVERY
    assert all(text.startswith("reader:") for text in got[first_by_reader:])


async def test_a_handler_that_raises_raises_in_the_reader(inline_port):
    client, _, _ = await RawClient.connect(inline_port)
    await trio.testing.wait_all_tasks_blocked()
    await client.send(client_frame(websocket.TEXT, b"a") + client_frame(websocket.TEXT, b"boom"))
    assert await texts(client, 2) == ["inline:a", (websocket.CLOSE, struct.pack("!H", 4001) + b"boom")]


async def test_a_protocol_violation_read_inline_closes_with_its_code(inline_port):
    client, _, _ = await RawClient.connect(inline_port)
    await trio.testing.wait_all_tasks_blocked()
    await client.send(client_frame(websocket.TEXT, b"a") + client_frame(websocket.TEXT, b"x", masked=False))
    got = await texts(client, 2)
    assert got[0] == "inline:a"
    opcode, payload = got[1]
    assert opcode == websocket.CLOSE and struct.unpack("!H", payload[:2])[0] == websocket.PROTOCOL_ERROR


async def test_a_bug_while_reading_inline_costs_that_connection_only(inline_port, monkeypatch):
    client, _, _ = await RawClient.connect(inline_port)
    other, _, _ = await RawClient.connect(inline_port)
    await trio.testing.wait_all_tasks_blocked()
    real_feed = websocket.Parser.feed

    def feed(self, data):
        if b"\x00bug" in data:
            raise RuntimeError("a bug")
        real_feed(self, data)

    monkeypatch.setattr(websocket.Parser, "feed", feed)
    await client.send(client_frame(websocket.TEXT, b"a", mask=b"\x00\x00\x00\x00")
                      + client_frame(websocket.TEXT, b"\x00bug", mask=b"\x00\x00\x00\x00"))
    got = await texts(client, 1)
    if got == ["inline:a"]:  # the two frames came in two reads
        got = await texts(client, 1)
    assert got == [(websocket.CLOSE, struct.pack("!H", 4002) + b"a bug")]
    await trio.testing.wait_all_tasks_blocked()
    await other.send(client_frame(websocket.TEXT, b"still here"))  # the readiness task lives on
    assert await texts(other, 1) == ["inline:still here"]
