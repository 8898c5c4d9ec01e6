"""A worker's side of the control channel (tools/worker.py), with a stand-in node, over in-memory
streams: requests that come after their deadline are not run, and bytes that are not control
messages stop the worker cleanly."""

import subprocess
import sys
import time

import pytest
import trio
import trio.testing

from gameserver.node import MatchNotFound
from matchmaker.hosts import WorkerUnavailable
from tools.control_link import Channel, Link
from tools.worker import Worker


class Meta:
    match_id, game, status = "0" * 26, "arena", "waiting"


class StandInNode:
    def __init__(self):
        self.created = []

    async def create_match(self, game, params, name, *, roster, lobby_s, labels):
        self.created.append((game, roster))
        return Meta()

    async def change_roster(self, match_id, players, *, release):
        raise MatchNotFound(f"no match {match_id}")


CREATE = {"game": "arena", "params": None, "name": None, "roster": ["ann", "bob"], "lobby_s": None, "labels": None}


@pytest.fixture
def worker():
    """(the Worker, the parent's Channel); the worker's clock is 1000.0."""
    parent_end, worker_end = trio.testing.memory_stream_pair()
    return Worker(StandInNode(), None, Channel(worker_end), clock=lambda: 1000.0), Channel(parent_end)


async def test_a_request_that_arrives_after_its_deadline_is_answered_late_and_not_run(worker):
    worker, parent = worker
    await worker.answer({"id": 1, "op": "create", "args": CREATE, "deadline": 999.5})
    late = await parent.receive()
    assert late["id"] == 1 and late["error"]["kind"] == "late" and "0.5 s after its deadline" in late["error"]["message"]
    assert worker.node.created == [] and worker.creates_done == 1  # answered: not in flight any more
    await worker.answer({"id": 2, "op": "change_roster", "args": {"match_id": "x", "players": ["c"], "release": True},
                         "deadline": 999.0})
    assert (await parent.receive())["error"]["kind"] == "late"
    # in time (or from a parent that sends no deadline): run
    await worker.answer({"id": 3, "op": "create", "args": CREATE, "deadline": 1000.5})
    await worker.answer({"id": 4, "op": "create", "args": CREATE})
    assert [(await parent.receive())["ok"]["match_id"] for _ in range(2)] == ["0" * 26] * 2
    assert worker.node.created == [("arena", ["ann", "bob"])] * 2 and worker.creates_done == 3


async def test_a_late_answer_reaches_a_caller_still_waiting_as_worker_unavailable(worker, nursery):
    worker, parent = worker
    link = Link(parent, "worker 0")
    nursery.start_soon(link.run, [].append)

    async def serve():
        request = await worker.channel.receive()
        await worker.answer({**request, "deadline": 999.0})  # as if it came late

    nursery.start_soon(serve)
    with trio.fail_after(5):
        with pytest.raises(WorkerUnavailable, match="after its deadline"):
            await link.call("create", **CREATE)
    assert worker.node.created == []


@pytest.mark.parametrize("garbage", [b"\x00\x00\x00\x02{]", b"\x00\x00\x00\x02[]", b"\xff\xff\xff\xff"],
                         ids=["not_json", "not_an_object", "too_large"])
async def test_bytes_that_are_not_control_messages_stop_the_worker_cleanly(worker, garbage, caplog):
    """As when the channel closes: serve_requests returns and the worker goes on to shut its node
    down, rather than dying with a traceback."""
    worker, parent = worker
    await parent.stream.send_all(garbage)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await worker.serve_requests(nursery)
    assert worker.stop.is_set()
    assert "the parent sent a malformed control message" in caplog.text


def test_the_deadline_clock_is_one_clock_for_every_process_of_the_machine():
    """time.monotonic() read in another process falls between two reads in this one."""
    before = time.monotonic()
    there = float(subprocess.run([sys.executable, "-c", "import time; print(repr(time.monotonic()))"],
                                 capture_output=True, text=True, check=True, timeout=30).stdout)
    after = time.monotonic()
    assert before <= there <= after
