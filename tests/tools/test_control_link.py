"""The parent's side of a worker's control channel (tools/control_link.py), over in-memory streams."""

import socket
import time

import pytest
import trio
import trio.testing

from gameserver.node import MatchNotFound
from matchmaker.hosts import WorkerUnavailable
from tools.control_link import LATE, Channel, Link, WorkerError, error_from_wire, error_to_wire


@pytest.fixture
async def pair(nursery):
    """(the parent's Link, the worker's Channel, the notices the parent received)."""
    parent_end, worker_end = trio.testing.memory_stream_pair()
    link = Link(Channel(parent_end), "worker 0")
    notices = []
    nursery.start_soon(link.run, notices.append)
    return link, Channel(worker_end), notices


async def serve_one(worker, answer):
    request = await worker.receive()
    await worker.send({"id": request["id"], **answer(request)})
    return request


async def test_answers_reach_their_callers_in_any_order_and_notices_go_aside(pair, nursery):
    link, worker, notices = pair
    results = {}

    async def call(name):
        results[name] = await link.call("describe", match_id=name)

    async with trio.open_nursery() as calls:
        calls.start_soon(call, "a")
        calls.start_soon(call, "b")
        first, second = await worker.receive(), await worker.receive()
        await worker.send({"notice": {"kind": "started"}})
        for request in (second, first):  # answered out of order
            await worker.send({"id": request["id"], "ok": {"match_id": request["args"]["match_id"]}})
    assert results == {"a": {"match_id": "a"}, "b": {"match_id": "b"}}
    assert notices == [{"notice": {"kind": "started"}}]


async def test_a_node_error_is_raised_again_as_its_class_and_a_bug_as_a_worker_error(pair, nursery):
    link, worker, _ = pair
    nursery.start_soon(serve_one, worker, lambda r: {"error": error_to_wire(MatchNotFound("no match x"))})
    with pytest.raises(MatchNotFound, match="no match x"):
        await link.call("describe", match_id="x")
    nursery.start_soon(serve_one, worker, lambda r: {"error": error_to_wire(KeyError("oops"))})
    with pytest.raises(WorkerError, match="KeyError"):
        await link.call("describe", match_id="x")


async def test_a_worker_that_goes_away_fails_its_waiting_calls_and_later_ones(pair, nursery):
    link, worker, _ = pair

    async def vanish():
        await worker.receive()
        await worker.aclose()

    nursery.start_soon(vanish)
    with trio.fail_after(5):
        with pytest.raises(WorkerUnavailable):
            await link.call("status")
        with pytest.raises(WorkerUnavailable):
            await link.call("status")


def test_every_node_error_of_the_node_crosses_as_its_own_class():
    """A class missing from the registry would reach the HTTP API as a worker's bug (500)."""
    from gameserver import node

    for name in node.__all__:
        cls = getattr(node, name)
        if isinstance(cls, type) and issubclass(cls, node.NodeError):
            again = error_from_wire(error_to_wire(cls("why")))
            assert type(again) is cls and str(again) == "why"


async def test_a_worker_that_stops_reading_fails_every_call_by_its_deadline_and_gets_eof(autojump_clock, nursery):
    """The worker never reads: the first call's send blocks, the others wait for the channel. Each
    gives up at its own deadline, and the send cut short breaks the channel, which is closed: the
    worker sees EOF (and stops), and calls made after fail at once."""
    parent_end, worker_end = trio.testing.lockstep_stream_pair()  # a send waits for the reader
    link = Link(Channel(parent_end), "worker 0")
    nursery.start_soon(link.run, [].append)
    took = []

    async def call(timeout):
        started = trio.current_time()
        with pytest.raises(WorkerUnavailable):
            await link.call("status", timeout=timeout)
        took.append((timeout, trio.current_time() - started))

    with trio.fail_after(120):
        async with trio.open_nursery() as calls:
            calls.start_soon(call, 5)
            await trio.sleep(1)
            calls.start_soon(call, 2)  # waits for the send lock, under its own deadline
            calls.start_soon(call, 60)  # ends with the channel, well before its deadline
        assert sorted(took)[:2] == [(2, 2), (5, 5)] and sorted(took)[2][1] == 4
        assert link.channel.broken and link.closed
        while await worker_end.receive_some():  # what the cut send had offered, then EOF
            pass
        with pytest.raises(WorkerUnavailable):
            await link.call("status", timeout=5)
    assert trio.current_time() < 10


async def test_a_send_cut_short_in_the_middle_of_a_message_closes_the_socket(autojump_clock, nursery):
    """Over a real socket pair: a request larger than the socket buffers is partly written when its
    deadline passes; the worker's end reads that part and then EOF, never the rest."""
    parent_sock, worker_sock = socket.socketpair()
    link = Link(Channel(trio.SocketStream(trio.socket.from_stdlib_socket(parent_sock))), "worker 0")
    nursery.start_soon(link.run, [].append)
    with trio.fail_after(60):
        with pytest.raises(WorkerUnavailable):
            await link.call("describe", timeout=3, match_id="x" * 4_000_000)
        assert link.channel.broken
        worker_end = trio.SocketStream(trio.socket.from_stdlib_socket(worker_sock))
        received = b""
        while data := await worker_end.receive_some():
            received += data
    assert 0 < len(received) < 4_000_000  # part of the message, then EOF
    await worker_end.aclose()


async def test_a_request_carries_its_callers_deadline_on_the_machines_monotonic_clock(pair, nursery):
    link, worker, _ = pair
    before = time.monotonic()
    nursery.start_soon(serve_one, worker, lambda r: {"ok": r["deadline"]})
    deadline = await link.call("status", timeout=7)
    assert before + 7 <= deadline <= time.monotonic() + 7


def test_an_answer_that_says_the_request_came_too_late_is_worker_unavailable():
    error = error_from_wire({"kind": LATE, "message": "create reached the worker 1.0 s after its deadline"})
    assert type(error) is WorkerUnavailable and "after its deadline" in str(error)


async def test_a_malformed_message_fails_the_waiting_calls_and_closes_the_channel_at_once(pair, nursery):
    """The worker sees EOF and stops cleanly, rather than being killed when it does not exit."""
    link, worker, _ = pair

    async def garble():
        await worker.receive()
        await worker.stream.send_all(b"\x00\x00\x00\x02{]")  # not JSON

    nursery.start_soon(garble)
    with trio.fail_after(5):
        with pytest.raises(WorkerUnavailable):
            await link.call("status")
        assert await worker.receive() is None  # EOF
