"""Hostile clients over real loopback sockets, part 3: slow and broken opening handshakes, and
connections that open and then say nothing. Each is bounded: 10 s for the handshake (however it
dribbles in), 10 s from the handshake to `auth` (close 4002), 16 KiB of request head (431).

The timed ones run on trio's MockClock: the server's timeouts pass in virtual time.
"""

import pytest
import trio

from abuse_helpers import PING, PONG, TEXT, Closed, RawWS, client_frame, handshake_bytes, open_socket, start_stack


@pytest.fixture
async def quiet_stack(nursery, tmp_path, autojump_clock):
    """A node and endpoint on MockClock (no file work in threads: the mock clock would run ahead)."""
    return await start_stack(nursery, tmp_path, offload=False)


async def http_answer(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it ends the connection (a reset ends it too: the server
    closed with bytes of ours unread)."""
    answer = b""
    with trio.fail_after(30):
        try:
            while chunk := await stream.receive_some(65536):
                answer += chunk
        except trio.BrokenResourceError:
            pass
    return answer


async def test_a_handshake_sent_a_byte_at_a_time_is_served(stack):
    match_id = await stack.match()
    stream = await open_socket(stack.port)
    for byte in handshake_bytes(stack.path(match_id)):
        await stream.send_all(bytes([byte]))
        await trio.sleep(0)  # give the server a chance to read each byte on its own
    ws = RawWS(stream)
    assert (await ws.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    frame = client_frame(TEXT, ('{"t":"auth","token":"%s"}' % stack.token(match_id, "tortoise")).encode())
    for byte in frame:  # and the auth frame too
        await ws.send(bytes([byte]))
        await trio.sleep(0)
    assert (await ws.until("welcome"))["player"] == "tortoise"


async def test_a_handshake_that_never_ends_is_dropped_after_10_s_however_it_dribbles(quiet_stack, autojump_clock):
    match_id = await quiet_stack.match()
    dribble = handshake_bytes(quiet_stack.path(match_id))[:-2]  # never the final CRLF
    stream = await open_socket(quiet_stack.port)
    started = trio.current_time()
    with trio.fail_after(30):
        for byte in dribble:  # a byte a second: each would reset an idle timer, not the total
            try:
                await stream.send_all(bytes([byte]))
            except trio.BrokenResourceError:
                break
            with trio.move_on_after(1):
                try:
                    if await stream.receive_some(100) == b"":
                        break
                except trio.BrokenResourceError:
                    break
    assert 10 <= trio.current_time() - started <= 12


async def test_many_slow_handshakes_are_all_dropped_and_a_good_client_gets_in_meanwhile(quiet_stack, autojump_clock):
    match_id = await quiet_stack.match()
    half = handshake_bytes(quiet_stack.path(match_id))[:40]
    started = trio.current_time()
    slow = []
    for _ in range(200):
        stream = await open_socket(quiet_stack.port)
        await stream.send_all(half)
        slow.append(stream)
    ws, welcome = await quiet_stack.join(match_id, "punctual")
    assert welcome["player"] == "punctual"
    for stream in slow:
        assert await http_answer(stream) == b""  # dropped without an answer at the handshake timeout
    assert trio.current_time() - started <= 12


@pytest.mark.parametrize("head, status", [
    (b"GET /v1/matches/x HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 100_000 + b"\r\n\r\n", b"431"),
    (b"GET /v1/matches/x HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(10_000)) + b"\r\n", b"431"),
    (b"POST /v1/matches/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", b"405"),
    (b"GET /v1/matches/x HTTP/1.0\r\nHost: x\r\n\r\n", b"400"),
    (b"GET /v1/matches/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", b"426"),
    (b"GET /v1/matches/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: short\r\n\r\n", b"400"),
    (b"GET /v1/matches/x HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 5\r\n\r\nhello",
     b"400"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 100 + b"\r\n\r\n", b"400"),  # TLS to a plain port
    (b"GET /../../secret.key HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
     b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", b"404"),
])
async def test_broken_handshakes_get_an_http_error_and_the_end(stack, head, status):
    stream = await open_socket(stack.port)
    try:
        await stream.send_all(head)
    except trio.BrokenResourceError:  # answered and closed before we were done sending
        pass
    answer = await http_answer(stream)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]


async def test_no_auth_within_10_s_closes_with_4002_whatever_the_client_does_meanwhile(quiet_stack, autojump_clock):
    match_id = await quiet_stack.match()
    silent = await quiet_stack.connect(match_id)
    pinging = await quiet_stack.connect(match_id)
    dribbling = await quiet_stack.connect(match_id)
    auth = client_frame(TEXT, ('{"t":"auth","token":"%s"}' % quiet_stack.token(match_id, "d")).encode())
    started = trio.current_time()
    with trio.fail_after(30):
        for second in range(9):  # pings are answered (both kinds), but do not extend the time
            await pinging.send_frame(PING, b"%d" % second)
            assert await pinging.frame() == (PONG, b"%d" % second)
            await pinging.send_json({"t": "ping", "id": second})
            assert await pinging.message() == {"t": "pong", "id": second}
            await dribbling.send(auth[second:second + 1])  # an auth frame that never completes
            await trio.sleep(1)
        for ws in (silent, pinging, dribbling):
            with pytest.raises(Closed) as closed:
                await ws.message()
            assert (closed.value.code, closed.value.reason) == (4002, "no auth message in time")
    assert 10 <= trio.current_time() - started <= 12


async def test_hundreds_of_idle_connections_are_all_closed_at_the_auth_timeout(quiet_stack, autojump_clock):
    match_id = await quiet_stack.match()
    idle = [await quiet_stack.connect(match_id) for _ in range(500)]
    assert quiet_stack.endpoint.open == 500
    player, _ = await quiet_stack.join(match_id, "busy")  # the server serves on beside them
    codes = []
    with trio.fail_after(60):
        for ws in idle:
            try:
                await ws.message()
            except Closed as closed:
                codes.append(closed.code)
            await ws.aclose()
    assert codes == [4002] * 500
    await player.send_json({"t": "ping", "id": "still here"})
    assert (await player.until("pong"))["id"] == "still here"
