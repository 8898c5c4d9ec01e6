"""The parent's side of a worker's control channel (tools/control_link.py), over in-memory streams."""

import pytest
import trio
import trio.testing

from gameserver.node import MatchNotFound
from matchmaker.hosts import WorkerUnavailable
from tools.control_link import Channel, Link, WorkerError, error_to_wire


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
    from tools.control_link import error_from_wire

    for name in node.__all__:
        cls = getattr(node, name)
        if isinstance(cls, type) and issubclass(cls, node.NodeError):
            again = error_from_wire(error_to_wire(cls("why")))
            assert type(again) is cls and str(again) == "why"
