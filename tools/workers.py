"""The worker processes of `arbiter up --workers N`, seen from the parent: a MatchHost.

The parent runs the HTTP API and the matchmaker; each worker (tools/worker.py) runs a node and
its own WebSocket port, and owns the matches whose id hashes to it (gameserver/shards.py). Every
call about a match goes to its owner over that worker's control channel; a new match without a
name goes to the least loaded worker; listings, failed alarms, health and metrics gather every
worker's answer. Match notices come back on the channels and go to `listeners` (the matchmaker).

Supervision: a worker that exits while the server runs is logged at ERROR and started again (on
the same WebSocket port, so the URLs clients hold stay valid), after 0.5 s, then 1, 2 ... up to
30 s while it keeps failing (a worker that ran for a minute starts again from 0.5 s). Until it is
back, calls about its matches answer 503 `worker_unavailable` and placement skips it.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from gameserver import shards
from gameserver.actor import MatchNotice
from gameserver.alarms import Alarm
from gameserver.config import NodeConfig
from gameserver.game import Game
from gameserver.node import BrokenFile, MatchSummary
from matchmaker.hosts import Created, WorkerInfo, WorkerUnavailable
from tools.control_link import Channel, Link
from tools.worker import WorkerSetup, encode_setup

log = logging.getLogger("arbiter.workers")

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0  # from spawning a worker to its hello (it scans its share of the data directory)
STOP_TIMEOUT_S = 15.0  # from asking a worker to stop to its exit; then it is killed
EXIT_AFTER_EOF_S = 10.0  # a worker whose channel closed but that did not exit is killed after this
POLL_S = 1.0  # how often each worker's load is asked for
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
STABLE_S = 60.0  # a worker that ran this long before it exited is restarted after RESTART_FIRST_S again


class WorkerStartFailed(OSError):
    """A worker could not start when the server started (its reason is in the message)."""


@attrs.define
class _Worker:
    index: int
    ws_port: int  # 0 until the first start bound one; then the same on every restart
    state: str = "starting"
    link: Link | None = None
    pid: int | None = None
    restarts: int = 0
    creates_sent: int = 0  # since this process started
    load: shards.Load | None = None  # None: not known (not up)
    status: dict[str, int] | None = None  # the last status it reported

    @property
    def name(self) -> str:
        return f"worker {self.index}"


class WorkerPool:
    """A MatchHost over N worker processes (see the module's description)."""

    def __init__(self, node: NodeConfig, games: dict[str, type[Game]], *, host: str, ws_port: int, workers: int,
                 ws_base: Callable[[int, int], str], lock_fd: int | None = None,
                 wall_clock: Callable[[], float] = time.time):
        """`ws_base(worker, port)`: the WebSocket base URL clients are given for a worker's matches.
        `lock_fd`: a file descriptor every worker inherits (the data directory's lock)."""
        if not 2 <= workers <= shards.MAX_WORKERS:
            raise ValueError(f"a pool has 2 to {shards.MAX_WORKERS} workers")
        self.node_config = node
        self.game_classes = games
        self.games: dict[str, Game] = {name: cls() for name, cls in games.items()}
        self.token_ttl_s = node.token_ttl_s
        self.wall_clock = wall_clock
        self.data_dir = node.data_dir
        self.host = host
        self._ws_base = ws_base
        self.lock_fd = lock_fd
        self.workers = [_Worker(k, ws_port + k if ws_port else 0) for k in range(workers)]
        self.listeners: list[Callable[[MatchNotice], None]] = []
        self.closing = False
        self._closed = trio.Event()  # set with closing: ends restart waits
        self._state_changed: dict[int, trio.Event] = {}  # worker index -> set at its next state change
        self._nursery: trio.Nursery | None = None

    # -- running ------------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[WorkerPool] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker (all at once); started once each serves; then keep them running.
        Raises WorkerStartFailed if one cannot start."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            async with trio.open_nursery() as starting:
                for worker in self.workers:
                    starting.start_soon(nursery.start, self._keep, worker)
            nursery.start_soon(self._poll)
            task_status.started(self)

    async def shutdown(self) -> bool:
        """Stop every worker cleanly (each finishes its matches' ticks and closes their connections
        with 1001); False if one had to be killed after STOP_TIMEOUT_S."""
        self.closing = True
        self._closed.set()
        for worker in self.workers:
            if worker.link is not None:
                await worker.link.stop()
        clean = True
        with trio.move_on_after(STOP_TIMEOUT_S) as waited:
            for worker in self.workers:
                while worker.state != "down":
                    await self._state_changed.setdefault(worker.index, trio.Event()).wait()
        if waited.cancelled_caught:
            clean = False
            log.error("workers %s did not stop within %g s: killing them",
                      [w.index for w in self.workers if w.state != "down"], STOP_TIMEOUT_S)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()  # kills what is left (see _run_once)
        return clean

    def _set_state(self, worker: _Worker, state: str) -> None:
        worker.state = state
        event = self._state_changed.pop(worker.index, None)
        if event is not None:
            event.set()

    async def _keep(self, worker: _Worker, task_status: trio.TaskStatus[None]) -> None:
        """Run `worker`, and again each time it exits, until the pool closes."""
        delay = RESTART_FIRST_S
        first = True
        while True:
            started = trio.current_time()
            try:
                code = await self._run_once(worker, task_status if first else None)
            except WorkerStartFailed as error:
                if first:
                    raise
                code = None
                log.error("%s could not start again: %s", worker.name, error)
            first = False
            if self.closing:
                self._set_state(worker, "down")
                return
            if trio.current_time() - started >= STABLE_S:
                delay = RESTART_FIRST_S
            if code is not None:
                log.error("%s (pid %s) exited with status %s; starting it again in %g s", worker.name, worker.pid,
                          code, delay)
            worker.pid = None
            self._set_state(worker, "starting")
            with trio.move_on_after(delay):
                await self._closed.wait()
            delay = min(RESTART_MAX_S, delay * 2)
            if self.closing:
                self._set_state(worker, "down")
                return
            worker.restarts += 1

    async def _run_once(self, worker: _Worker, task_status: trio.TaskStatus[None] | None) -> int:
        """Start the worker's process, serve its channel until it closes; its exit status."""
        parent_end, child_end = socket.socketpair()
        keep = [child_end.fileno()] + ([self.lock_fd] if self.lock_fd is not None else [])
        try:
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "tools.worker", str(child_end.fileno())], cwd=ROOT, pass_fds=keep,
                stdin=subprocess.DEVNULL, process_group=0)  # its own group: a Ctrl-C reaches the parent only
        except OSError as error:
            parent_end.close()
            raise WorkerStartFailed(f"{worker.name}: {error}") from None
        finally:
            child_end.close()
        channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(parent_end)))
        try:
            setup = WorkerSetup(node=attrs.evolve(self.node_config, worker=worker.index, workers=len(self.workers)),
                                games=self.game_classes, host=self.host, ws_port=worker.ws_port,
                                log_level=logging.getLogger().getEffectiveLevel())
            try:
                await channel.send({"setup": encode_setup(setup)})
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # it died at once: its exit status says more
            hello = None
            with trio.move_on_after(START_TIMEOUT_S):
                hello = await channel.receive()
            if hello is None or "hello" not in hello:
                reason = hello.get("failed") if isinstance(hello, dict) else None
                with trio.move_on_after(EXIT_AFTER_EOF_S):
                    await process.wait()
                raise WorkerStartFailed(f"{worker.name} did not start: "
                                        + (reason or f"exit status {process.returncode} (see its log above)"))
            worker.ws_port = int(hello["hello"]["ws_port"])
            worker.pid = process.pid
            worker.creates_sent = 0
            worker.status = None
            worker.load = shards.Load(int(hello["hello"]["unfinished_matches"]), 0)
            link = Link(channel, worker.name)
            worker.link = link
            self._set_state(worker, "up")
            if self.closing:  # the server began to stop while this worker started
                await link.stop()
            log.info("%s up: pid %d, WebSocket port %d", worker.name, process.pid, worker.ws_port)
            if task_status is not None:
                task_status.started()
            await link.run(self._on_message)
            worker.link = None
            worker.load = None
            if not self.closing:
                self._set_state(worker, "starting")
            with trio.move_on_after(EXIT_AFTER_EOF_S):
                return await process.wait()
            log.error("%s (pid %d) closed its channel but did not exit: killing it", worker.name, process.pid)
            process.kill()
            return await process.wait()
        finally:
            worker.link = None
            worker.load = None
            with trio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                    await process.wait()
                await channel.aclose()

    def _on_message(self, message: dict[str, Any]) -> None:
        notice = message.get("notice")
        if not isinstance(notice, dict):
            log.warning("an unexpected control message: %r", message)
            return
        seated, roster = notice.get("seated", ()), notice.get("roster")
        parsed = MatchNotice(**{**notice, "seated": tuple(seated), "roster": None if roster is None else tuple(roster)})
        for listener in self.listeners:
            try:
                listener(parsed)
            except Exception:
                log.exception("a match listener failed on %s", parsed)

    async def _poll(self) -> None:
        """Every POLL_S, each worker's load (placement) and counts (health)."""
        while True:
            async with trio.open_nursery() as nursery:
                for worker in self.workers:
                    nursery.start_soon(self._status_of, worker)
            await trio.sleep(POLL_S)

    async def _status_of(self, worker: _Worker) -> dict[str, int] | None:
        link = worker.link
        if link is None:
            return None
        try:
            status = await link.call("status")
        except WorkerUnavailable:
            return None
        if worker.link is link:
            worker.status = status
            # what it had when it answered, plus the creates sent to it that it had not answered yet
            in_flight = max(0, worker.creates_sent - status["creates_done"])
            worker.load = shards.Load(status["unfinished_matches"] + in_flight, status["connections"])
        return status

    # -- routing ------------------------------------------------------------------------------

    def owner_of(self, match_id: str) -> _Worker:
        return self.workers[shards.owner(match_id, len(self.workers))]

    async def _call(self, worker: _Worker, op: str, **args: Any) -> Any:
        link = worker.link
        if link is None:
            raise WorkerUnavailable(f"{worker.name} is " + ("stopping" if self.closing else "being restarted")
                                    + ": try again in a moment")
        return await link.call(op, **args)

    async def _gather(self, op: str) -> list[Any]:
        """Every running worker's answer to `op` (workers that are not up are left out)."""
        answers: list[Any] = []

        async def ask(worker: _Worker) -> None:
            try:
                answers.append(await self._call(worker, op))
            except WorkerUnavailable as error:
                log.warning("%s left out of %s: %s", worker.name, op, error)

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(ask, worker)
        return answers

    def ws_base(self, worker: _Worker) -> str:
        return self._ws_base(worker.index, worker.ws_port)

    # -- MatchHost ----------------------------------------------------------------------------

    def ws_url(self, match_id: str) -> str:
        return f"{self.ws_base(self.owner_of(match_id))}/v1/matches/{match_id}"

    async def create_match(self, game: str, params: Any = None, name: str | None = None, *,
                           roster: list[str] | None = None, lobby_s: float | None = None,
                           labels: dict[str, str] | None = None) -> Created:
        if name is not None:
            from gameserver.ids import InvalidId, match_id_from_name
            from gameserver.node import InvalidParams

            try:
                worker = self.owner_of(match_id_from_name(name))
            except InvalidId as error:
                raise InvalidParams(str(error)) from None
        else:
            chosen = shards.least_loaded([w.load if w.link is not None else None for w in self.workers])
            if chosen is None:
                raise WorkerUnavailable("no worker is running: try again in a moment")
            worker = self.workers[chosen]
        if worker.link is not None:
            worker.creates_sent += 1  # counted before the call: creates placed at once spread out
            if worker.load is not None:
                worker.load = attrs.evolve(worker.load, matches=worker.load.matches + 1)
        created = await self._call(worker, "create", game=game, params=params, name=name, roster=roster,
                                   lobby_s=lobby_s, labels=labels)
        return Created(created["match_id"], created["game"], created["status"])

    async def change_roster(self, match_id: str, players: list[str], *, release: bool = False) -> list[str]:
        return await self._call(self.owner_of(match_id), "change_roster", match_id=match_id, players=players,
                                release=release)

    async def describe(self, match_id: str) -> dict[str, Any]:
        return await self._call(self.owner_of(match_id), "describe", match_id=match_id)

    async def logged_inputs(self, match_id: str) -> dict[str, list[list[int]]]:
        return await self._call(self.owner_of(match_id), "logged_inputs", match_id=match_id)

    async def listing(self) -> list[MatchSummary]:
        return [MatchSummary(**summary) for answer in await self._gather("listing") for summary in answer]

    async def failed_alarms(self) -> list[tuple[str, Alarm]]:
        found = [(match_id, Alarm(**alarm)) for answer in await self._gather("failed_alarms")
                 for match_id, alarm in answer]
        return sorted(found, key=lambda pair: (pair[1].due, pair[0], pair[1].name))

    async def unusable(self) -> list[BrokenFile]:
        return sorted((BrokenFile(**b) for answer in await self._gather("unusable") for b in answer),
                      key=lambda b: b.path)

    async def health(self) -> dict[str, int]:
        answers = [a for a in await self._gather("status")]
        totals = {key: sum(a[key] for a in answers) for key in ("live_matches", "hibernated_matches",
                                                                "unfinished_matches", "unusable_files", "connections")}
        return {**totals, "workers": len(self.workers), "workers_up": len(answers)}

    async def metrics(self) -> bytes:
        texts: list[tuple[int, str]] = []

        async def ask(worker: _Worker) -> None:
            try:
                texts.append((worker.index, await self._call(worker, "metrics")))
            except WorkerUnavailable:
                pass

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(ask, worker)
        return merge_metrics(sorted(texts), up=[w.link is not None for w in self.workers],
                             restarts=[w.restarts for w in self.workers])

    async def worker_info(self) -> list[WorkerInfo]:
        statuses: dict[int, dict[str, int] | None] = {}

        async def ask(worker: _Worker) -> None:
            statuses[worker.index] = await self._status_of(worker)

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(ask, worker)
        infos = []
        for worker in self.workers:
            status = statuses.get(worker.index)
            up = worker.link is not None and status is not None
            infos.append(WorkerInfo(
                worker=worker.index, pid=worker.pid, state="up" if up else ("down" if self.closing else "starting"),
                ws_url=self.ws_base(worker), restarts=worker.restarts,
                live_matches=status["live_matches"] if up else None,
                unfinished_matches=status["unfinished_matches"] if up else None,
                connections=status["connections"] if up else None))
        return infos


def merge_metrics(texts: list[tuple[int, str]], *, up: list[bool], restarts: list[int]) -> bytes:
    """Every worker's series with a `worker` label added (sum them for the server's totals), and
    the parent's own: arbiter_workers_up, arbiter_worker_restarts_total{worker}."""
    families: dict[str, Metric] = {}
    for index, text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "worker": str(index)}, sample.value,
                                  sample.timestamp, sample.exemplar)
    running = Metric("arbiter_workers_up", "Worker processes running (arbiter up --workers N)", "gauge")
    running.add_sample("arbiter_workers_up", {}, float(sum(up)))
    restarted = Metric("arbiter_worker_restarts", "Times a worker process was started again after it exited",
                       "counter")
    for index, count in enumerate(restarts):
        restarted.add_sample("arbiter_worker_restarts_total", {"worker": str(index)}, float(count))

    class Collected:
        def collect(self) -> list[Metric]:
            return [*families.values(), running, restarted]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected())  # type: ignore[arg-type]
    return generate_latest(registry)
