"""A worker that is alive but does not answer (stopped with SIGSTOP, deadlocked), as the pool
(tools/workers.py) reports it: `unresponsive` in its listing, not counted in arbiter_workers_up,
skipped by placement, and `up` again once it answers. No processes: each worker's Link runs over
in-memory streams to a fake worker that answers, or stops answering; with the autojump clock a
deadline passes at once."""

import pytest
import trio
import trio.testing

from gameserver.config import NodeConfig
from gameserver.games import builtin_games
from gameserver import shards
from gameserver.shards import Load
from matchmaker.hosts import WorkerUnavailable
from tools.control_link import CALL_TIMEOUT_S, Channel, Link
from tools.workers import STATUS_TIMEOUT_S, WorkerPool

STATUS = {"live_matches": 1, "hibernated_matches": 0, "unfinished_matches": 1, "unusable_files": 0,
          "connections": 2, "creates_done": 0}


class FakeWorker:
    """The worker's end of a control channel: answers every request, except while stopped (it then
    answers nothing until it goes on, like a process stopped with SIGSTOP)."""

    def __init__(self, channel: Channel, index: int):
        self.channel = channel
        self.index = index
        self.running = trio.Event()
        self.running.set()
        self.created = 0

    def stop(self) -> None:
        self.running = trio.Event()

    def go_on(self) -> None:
        self.running.set()

    def answer(self, op, args):
        if op == "status":
            return {**STATUS, "creates_done": self.created}
        if op == "metrics":
            return ""
        if op == "create":
            self.created += 1
            return {"match_id": f"match-{self.index}-{self.created}", "game": args["game"], "status": "created"}
        return {}

    async def serve(self) -> None:
        while True:
            request = await self.channel.receive()
            if request is None:
                return
            await self.running.wait()
            if "id" in request:
                await self.channel.send({"id": request["id"], "ok": self.answer(request["op"], request["args"])})


@pytest.fixture
async def pool(tmp_path, nursery):
    """(a pool of 3 workers without processes, the fake workers of 0 and 1): workers 0 and 1 up,
    worker 2 being started again (no channel)."""
    pool = WorkerPool(NodeConfig(data_dir=tmp_path), builtin_games(), host="127.0.0.1", ws_port=8200, workers=3,
                      ws_base=lambda worker, port: f"ws://127.0.0.1:{port}")
    fakes = []
    for worker in pool.workers[:2]:
        parent_end, worker_end = trio.testing.memory_stream_pair()
        worker.link = Link(Channel(parent_end), worker.name)
        worker.pid = 1000 + worker.index
        worker.load = Load(0, 0)
        worker.state = "up"
        fake = FakeWorker(Channel(worker_end), worker.index)
        fakes.append(fake)
        nursery.start_soon(worker.link.run, pool._on_message)
        nursery.start_soon(fake.serve)
    return pool, fakes


def workers_up(metrics: bytes) -> float:
    """The value of the arbiter_workers_up gauge in a scrape."""
    (line,) = [line for line in metrics.decode().splitlines() if line.startswith("arbiter_workers_up ")]
    return float(line.split()[1])


async def test_a_worker_that_stops_answering_is_unresponsive_and_not_up_until_it_answers_again(
        pool, autojump_clock):
    pool, fakes = pool
    fakes[1].stop()
    with trio.fail_after(STATUS_TIMEOUT_S + 1):
        infos = await pool.worker_info()
    assert [w.state for w in infos] == ["up", "unresponsive", "starting"]
    assert infos[1].pid == 1001 and infos[1].live_matches is None and infos[1].connections is None
    assert infos[0].live_matches == 1 and infos[0].connections == 2
    with trio.fail_after(STATUS_TIMEOUT_S + 1):
        assert workers_up(await pool.metrics()) == 1
    with trio.fail_after(STATUS_TIMEOUT_S + 1):
        assert (await pool.health())["workers_up"] == 1

    fakes[1].go_on()
    with trio.fail_after(1):  # everyone answers at once
        infos = await pool.worker_info()
        assert [w.state for w in infos] == ["up", "up", "starting"]
        assert infos[1].live_matches == 1
        assert workers_up(await pool.metrics()) == 2


async def test_any_call_that_timed_out_makes_it_skipped_by_placement_until_it_answers_again(
        pool, autojump_clock):
    """Not only the status poll: a call about one of its matches it did not answer in time. Worker 1
    is the least loaded, so placement would choose it if it did not skip it."""
    pool, fakes = pool
    pool.workers[0].load = Load(5, 0)
    fakes[1].stop()
    with trio.fail_after(CALL_TIMEOUT_S + 1):  # a call about one of its matches
        with pytest.raises(WorkerUnavailable, match="did not answer within"):
            await pool.describe(shards.new_match_id_for(1, 3))
    with trio.fail_after(1):  # placed at once on worker 0, which answers
        created = await pool.create_match("arena")
    assert created.match_id == "match-0-1"

    fakes[1].go_on()
    with trio.fail_after(1):
        assert (await pool.health())["workers_up"] == 2  # it answered: up again
    with trio.fail_after(1):
        created = await pool.create_match("arena")
    assert created.match_id == "match-1-1"
