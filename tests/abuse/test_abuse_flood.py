"""Hostile clients over real loopback sockets, part 2: floods and clients that never read.

Every flood has a bound with a documented answer (docs/protocol.md#limits): inputs and pings past
their rate earn `rate_limited` and spend the error budget (close 1008); a client that does not read
is closed as a slow consumer (4010) when 256 non-state frames wait for it or a frame stays blocked
for the send timeout. Whatever one client does, the match beside it keeps ticking.

Two transport bugs this suite found (gameserver/wsserver.py) are fixed and checked here:
its read loop did not yield while bytes kept arriving, and it queued a pong for every WebSocket
ping of a client that did not read, without a bound.
"""

import os
import socket

import pytest
import trio

from abuse_games import games
from abuse_helpers import PING, PONG, TEXT, Closed, client_frame, metric, start_stack


def frames(ws, bodies) -> bytes:
    return b"".join(ws.encode(body) for body in bodies)


async def test_an_input_flood_is_cut_at_the_burst_then_closed_and_the_rest_is_kept(stack):
    match_id = await stack.match()
    ws, _ = await stack.join(match_id, "mallory")
    started = trio.current_time()
    await ws.send(frames(ws, ({"t": "input", "seq": seq, "data": {"dx": 1, "dy": 0}} for seq in range(1, 301))))
    with trio.fail_after(10):
        seen, closed = await ws.until_close()
    elapsed = trio.current_time() - started
    assert (closed.code, closed.reason) == (1008, "too many errors")
    limited = [m["seq"] for m in seen if m["t"] == "error"]
    assert {m["code"] for m in seen if m["t"] == "error"} == {"rate_limited"}
    assert limited == sorted(limited) and limited[0] > 120
    # the player may come back (1008 is final for a client library, not for the seat): the welcome
    # follows the tick that processed the inputs accepted before the close
    _, welcome = await stack.join(match_id, "mallory")
    [(first, last)] = (await stack.node.logged_inputs(match_id))["mallory"]
    assert welcome["last_seq"] == last
    accepted = set(range(first, last + 1))
    # bursts of 120, then 60 a second: whatever came in on time was applied, the rest refused with its seq
    assert first == 1 and 120 <= last <= 120 + 60 * elapsed + 1 + len(limited)
    assert len(accepted) <= 120 + 60 * elapsed + 1
    assert not accepted & set(limited)


async def test_a_ping_flood_is_answered_up_to_its_burst_then_refused_then_closed(stack):
    match_id = await stack.match()
    for seated in (False, True):
        ws = (await stack.join(match_id, "pinger"))[0] if seated else await stack.connect(match_id)
        started = trio.current_time()
        await ws.send(frames(ws, ({"t": "ping", "id": n} for n in range(500))))
        with trio.fail_after(10):
            seen, closed = await ws.until_close()
        elapsed = trio.current_time() - started
        pongs = [m["id"] for m in seen if m["t"] == "pong"]
        errors = [m["code"] for m in seen if m["t"] == "error"]
        assert 20 <= len(pongs) <= 20 + 10 * elapsed + 1 and pongs == list(range(len(pongs)))
        assert set(errors) == {"rate_limited"} and 20 <= len(errors) <= 20 + 2 * elapsed + 1
        assert (closed.code, closed.reason) == (1008, "too many errors")


async def test_a_client_that_never_reads_events_is_closed_as_a_slow_consumer(nursery, tmp_path):
    """Events are never dropped: 256 waiting for a client that does not read close it (4010)."""
    stack = await start_stack(nursery, tmp_path, games=games())
    match_id = await stack.match("chatter")
    witness_match = await stack.match("arena")
    witness, _ = await stack.join(witness_match, "witness")
    sloth, _ = await stack.join(match_id, "sloth", rcvbuf=4096)
    with trio.fail_after(20):
        while metric(stack.node, "arbiter_slow_consumer_disconnects_total") < 1:
            await witness.until("state")  # the other match ticks on meanwhile
        with pytest.raises(Closed) as closed:
            while True:  # what the kernel had taken reaches the client; then the end
                await sloth.message()
    assert closed.value.code in (4010, 1006)  # 4010 if its close frame got through the full buffers
    again, welcome = await stack.join(match_id, "sloth")  # "reconnect? yes, and resume"
    assert welcome["status"] == "running"
    status = await stack.node.describe(match_id)
    assert status["status"] == "running" and status["connections"] == 1


async def test_a_client_whose_socket_stays_full_is_closed_after_the_send_timeout(nursery, tmp_path):
    """State frames replace each other, so no backlog grows; but a frame the kernel has not taken
    for `send_timeout_s` closes the connection (4010). (The timeout is 0.5 s here, 10 s by default.)"""
    stack = await start_stack(nursery, tmp_path, games=games(), send_timeout_s=0.5)
    match_id = await stack.match("billboard")
    sloth, _ = await stack.join(match_id, "sloth", rcvbuf=4096)
    watcher, _ = await stack.join(match_id, "watcher")
    with trio.fail_after(20):
        while metric(stack.node, "arbiter_slow_consumer_disconnects_total") < 1:
            await watcher.until("state")
        with pytest.raises(Closed) as closed:
            while True:
                await sloth.message()
    assert closed.value.code in (4010, 1006)
    ticks = [(await watcher.until("state"))["tick"] for _ in range(3)]
    assert ticks == sorted(ticks) and len(set(ticks)) == 3  # the reader that keeps up is served on


async def test_a_string_the_game_would_store_cannot_crash_the_node(nursery, tmp_path):
    """Regression: a lone surrogate in a game's str input field used to get through the codec, and
    the commit's JSON encoding raised outside the storage-error path: the node went down."""
    stack = await start_stack(nursery, tmp_path, games=games())
    match_id = await stack.match("chat")
    witness_match = await stack.match("arena")
    witness, _ = await stack.join(witness_match, "witness")
    ws, _ = await stack.join(match_id, "mallory")
    await ws.send(client_frame(TEXT, b'{"t":"input","seq":1,"data":{"text":"\\ud800"}}'))
    assert (await ws.until("error"))["code"] == "bad_frame"
    await ws.send_json({"t": "input", "seq": 2, "data": {"text": "caf\u00e9 \U0001F600"}})
    while (state := await ws.until("state"))["acks"]["mallory"] < 2:
        pass
    assert state["state"]["lines"] == ["caf\u00e9 \U0001F600"]
    await witness.until("state")
    assert (await stack.node.describe(match_id))["status"] == "running"


def twin(ws, timeout: float = 0.0) -> socket.socket:
    """A duplicate of a test client's socket, to write from outside the trio loop (timeout 0:
    non-blocking). Never blocking without a timeout: O_NONBLOCK belongs to the shared file
    description, so a blocking twin would make the trio side block the whole loop too."""
    dup = socket.socket(fileno=os.dup(ws.stream.socket.fileno()))
    dup.settimeout(timeout)
    return dup


def enlarge_server_buffer(client: socket.socket, size: int = 4 << 20) -> None:
    """Give the server's end of this connection (it lives in this process) a large kernel receive
    buffer, so that a backlog can wait in it whole. Only the kernel's buffer changes."""
    me = client.getsockname()
    for name in os.listdir("/proc/self/fd"):
        try:
            candidate = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        with candidate:
            try:
                if candidate.type == socket.SOCK_STREAM and candidate.getpeername() == me:
                    candidate.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                    return
            except OSError:
                pass
    raise AssertionError("the server's end of the connection was not found")


async def test_a_backlog_of_frames_does_not_hold_the_event_loop(stack):
    """A backlog of about 3 MB is put in the kernel's buffers while the loop is held here
    (synchronous sends), then the loop is released: the first time this task sees an answer, the
    server must not have worked through the whole backlog in one go. Observed through WebSocket
    pings spread through it (between ignored pongs): each is answered as soon as it is read."""
    match_id = await stack.match()
    ws, _ = await stack.join(match_id, "mallory")
    raw = twin(ws)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    enlarge_server_buffer(raw)
    await ws.send_json({"t": "ping", "id": "window"})  # one exchange, so the larger window is announced
    await ws.until("pong", id="window")
    marks = 80
    backlog = b"".join(client_frame(PONG, b"") * 6000 + client_frame(PING, b"%d" % i) for i in range(marks))
    sent = 0
    while sent < len(backlog):  # the loop is held: nothing is read meanwhile; the kernel buffers it
        try:
            sent += raw.send(backlog[sent:])
        except BlockingIOError:
            pytest.fail(f"the kernel buffered only {sent} of {len(backlog)} bytes")  # a set-up problem, not the bug
    answered: list[int] = []
    with trio.fail_after(20):
        while not answered:
            await trio.sleep(0)
            try:
                chunk = raw.recv(1 << 20)  # what has arrived so far, without waiting
            except BlockingIOError:
                continue
            ws.buffer += chunk
            while ws.buffer:
                opcode, payload = await ws.frame()
                if opcode == PONG:
                    answered.append(int(payload))
    raw.close()
    assert len(answered) < marks // 2, f"{len(answered)} of {marks} pings answered before any other task ran"


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def test_pings_from_a_client_that_never_reads_do_not_grow_the_server(stack):
    match_id = await stack.match()
    ws = await stack.connect(match_id, rcvbuf=4096)  # before auth: nobody flushes for 10 s
    sender = twin(ws, timeout=2)  # a server that stops reading makes the sender wait: then it gives up
    chunk = client_frame(PING, b"p" * 125) * 500
    total = 64 * 1024 * 1024

    def blast() -> int:
        sent = 0
        try:
            while sent < total:
                sender.sendall(chunk)
                sent += len(chunk)
        except OSError:  # timed out, or the server closed the connection: both bound the growth
            pass
        return sent

    before = rss_bytes()
    await trio.to_thread.run_sync(blast)
    grown = rss_bytes() - before
    sender.close()
    assert grown < 16 * 1024 * 1024, f"the server holds {grown / 1e6:.0f} MB of answers to one client"
