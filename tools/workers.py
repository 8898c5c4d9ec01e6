"""The worker processes of `arbiter up --workers N`, seen from the parent: a MatchHost.

The parent runs the HTTP API and the matchmaker; each worker (tools/worker.py) runs a node and
its own WebSocket port, and owns the matches whose id hashes to it (gameserver/shards.py). Every
call about a match goes to its owner over that worker's control channel; a new match without a
name goes to the least loaded worker; listings, failed alarms, health and metrics gather every
worker's answer. Match notices come back on the channels and go to `listeners` (the matchmaker).

Supervision: a worker that exits while the server runs is logged at ERROR and started again (on
the same WebSocket port, so the URLs clients hold stay valid), after 0.5 s, then 1, 2 ... up to
30 s while it keeps failing (a worker that ran for a minute starts again from 0.5 s), and so is
one that could not be started again (no file descriptor left, say). Until it is back, calls about
its matches answer 503 `worker_unavailable` and placement skips it.

A worker that stops answering (stopped with SIGSTOP, deadlocked) holds nobody for long: every call
has a deadline (tools/control_link.py), the calls that ask every worker (health, metrics, listings)
a short one, STATUS_TIMEOUT_S, and leave it out; each worker is polled in a task of its own, and
a worker whose last call (its status poll, or any other) went unanswered past its deadline is
`unresponsive` until it answers again: placement skips it, its listing says so and
arbiter_workers_up leaves it out. One that has not answered for UNRESPONSIVE_S while its process
runs is killed (logged at ERROR) and started again like any worker that exited; its matches recover
from their files.

A worker's state (its listing, arbiter_workers_up): `up` (running and answering), `unresponsive`
(running, but its last call timed out), `starting` (being started, or started again after it
exited) or `down` (stopped with the server).
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
STATUS_TIMEOUT_S = 5.0  # a worker that has not answered a status, metrics or listing call by then is left out
UNRESPONSIVE_S = 30.0  # a running worker that answered no call this long is killed (and started again)
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
STABLE_S = 60.0  # a worker that ran this long before it exited is restarted after RESTART_FIRST_S again


class WorkerStartFailed(OSError):
    """A worker could not start (its reason is in the message). When the server starts, this stops
    it; later, the worker is tried again."""


@attrs.define
class _Worker:
    index: int
    ws_port: int  # 0 until the first start bound one; then the same on every restart
    state: str = "starting"
    link: Link | None = None
    process: trio.Process | None = None  # while it runs
    pid: int | None = None
    restarts: int = 0
    creates_sent: int = 0  # since this process started
    load: shards.Load | None = None  # None: not known (not up)
    status: dict[str, int] | None = None  # the last status it reported
    answered_at: float = 0.0  # trio time of its last answer to a call (or of its hello)
    answering: bool = True  # False from a call it did not answer within its deadline to its next answer

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
            for worker in self.workers:
                nursery.start_soon(self._watch, worker)
            task_status.started(self)

    async def shutdown(self) -> bool:
        """Stop every worker cleanly (each finishes its matches' ticks and closes their connections
        with 1001), all at once; False if one had to be killed after STOP_TIMEOUT_S (one that does
        not read its channel holds neither the others nor the parent longer than that)."""
        self.closing = True
        self._closed.set()
        clean = True
        with trio.move_on_after(STOP_TIMEOUT_S) as waited:
            async with trio.open_nursery() as stopping:
                for worker in self.workers:
                    stopping.start_soon(self._stop, worker)
        if waited.cancelled_caught:
            clean = False
            log.error("workers %s did not stop within %g s: killing them",
                      [w.index for w in self.workers if w.state != "down"], STOP_TIMEOUT_S)
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()  # kills what is left (see _run_once)
        return clean

    async def _stop(self, worker: _Worker) -> None:
        """Ask `worker` to stop, and wait until it is down."""
        if worker.link is not None:
            await worker.link.stop()
        while worker.state != "down":
            await self._state_changed.setdefault(worker.index, trio.Event()).wait()

    def _set_state(self, worker: _Worker, state: str) -> None:
        worker.state = state
        event = self._state_changed.pop(worker.index, None)
        if event is not None:
            event.set()

    async def _keep(self, worker: _Worker, task_status: trio.TaskStatus[None]) -> None:
        """Run `worker`, and again each time it exits, until the pool closes. Raises
        WorkerStartFailed if it cannot start the first time; later failures to start are retried."""
        delay = RESTART_FIRST_S
        served = False

        def up() -> None:
            nonlocal served
            if not served:
                served = True
                task_status.started()

        while True:
            started = trio.current_time()
            try:
                code = await self._run_once(worker, up)
            except OSError as error:  # WorkerStartFailed, or another the system raised (EMFILE, ENOMEM)
                if not served:
                    raise
                code = None
                log.error("%s could not start again: %s", worker.name, error)
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

    async def _run_once(self, worker: _Worker, up: Callable[[], None]) -> int:
        """Start the worker's process, call `up` once it serves, serve its channel until it closes;
        its exit status. Raises WorkerStartFailed if it could not start."""
        try:
            parent_end, child_end = socket.socketpair()
        except OSError as error:  # no file descriptor left (EMFILE, ENFILE), no memory
            raise WorkerStartFailed(f"{worker.name}: cannot make its control channel: {error}") from None
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
        worker.process = process
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
            worker.answered_at = trio.current_time()
            worker.answering = True
            link = Link(channel, worker.name)
            worker.link = link
            self._set_state(worker, "up")
            if self.closing:  # the server began to stop while this worker started
                await link.stop()
            log.info("%s up: pid %d, WebSocket port %d", worker.name, process.pid, worker.ws_port)
            up()
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
            worker.process = None
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

    async def _watch(self, worker: _Worker) -> None:
        """Every POLL_S, the worker's load (placement) and counts (health); one that has not
        answered for UNRESPONSIVE_S while its process runs is killed (`_keep` starts it again)."""
        while True:
            link = worker.link
            if link is not None and not self.closing:
                try:
                    await self._status_of(worker)
                except Exception:  # its answer made no sense (a bug): it answered, though (see _ask)
                    log.exception("the status of %s", worker.name)
                silent = trio.current_time() - worker.answered_at
                process = worker.process
                if (worker.link is link and not self.closing and silent >= UNRESPONSIVE_S
                        and process is not None and process.returncode is None):
                    log.error("%s (pid %d) has not answered for %.0f s: killing it", worker.name, process.pid,
                              silent)
                    process.kill()
            await trio.sleep(POLL_S)

    async def _status_of(self, worker: _Worker) -> dict[str, int] | None:
        link = worker.link
        if link is None:
            return None
        try:
            status = await self._ask(worker, link, "status", timeout=STATUS_TIMEOUT_S)
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

    async def _call(self, worker: _Worker, op: str, *, timeout: float | None = None, **args: Any) -> Any:
        link = worker.link
        if link is None:
            raise WorkerUnavailable(f"{worker.name} is " + ("stopping" if self.closing else "being restarted")
                                    + ": try again in a moment")
        return await self._ask(worker, link, op, timeout=timeout, **args)

    async def _ask(self, worker: _Worker, link: Link, op: str, *, timeout: float | None, **args: Any) -> Any:
        """`link.call`, noting whether `worker` answers: any answer (an error too) makes it
        answering; a call whose deadline passed while its channel stayed open makes it not answering
        (placement skips it, its state is `unresponsive`) until its next answer. Nothing is noted once
        `link` is no longer the worker's (it was started again meanwhile)."""
        try:
            answer = await link.call(op, timeout=timeout, **args)
        except WorkerUnavailable:
            if worker.link is link and not link.closed:  # not answered in time (a closed link: it is gone)
                worker.answering = False
            raise
        except Exception:  # a NodeError or WorkerError: its answer
            self._answered(worker, link)
            raise
        self._answered(worker, link)
        return answer

    def _answered(self, worker: _Worker, link: Link) -> None:
        if worker.link is link:
            worker.answered_at = trio.current_time()
            worker.answering = True

    @staticmethod
    def _running(worker: _Worker) -> bool:
        """Whether its process serves its channel (answering or not)."""
        link = worker.link
        return link is not None and not link.closed and not link.channel.broken

    def _state(self, worker: _Worker) -> str:
        """up, unresponsive, starting or down (see the module's description)."""
        if self._running(worker) and worker.answering:
            return "up"
        if self.closing:
            return "down"
        return "unresponsive" if self._running(worker) else "starting"

    async def _gather(self, op: str) -> list[tuple[int, Any]]:
        """(worker index, answer) for every running worker's answer to `op`, by index (workers that
        are not up, or do not answer within STATUS_TIMEOUT_S, are left out)."""
        answers: list[tuple[int, Any]] = []

        async def ask(worker: _Worker) -> None:
            try:
                answers.append((worker.index, await self._call(worker, op, timeout=STATUS_TIMEOUT_S)))
            except WorkerUnavailable as error:
                log.warning("%s left out of %s: %s", worker.name, op, error)

        async with trio.open_nursery() as nursery:
            for worker in self.workers:
                nursery.start_soon(ask, worker)
        return sorted(answers, key=lambda pair: pair[0])

    async def _answers(self, op: str) -> list[Any]:
        return [answer for _index, answer in await self._gather(op)]

    def _placeable(self) -> list[shards.Load | None]:
        """Each worker's load, None for those placement skips: the ones not running, and the
        unresponsive ones, that did not answer their last call in time (unless no running worker
        answers)."""
        running = [w for w in self.workers if self._running(w)]
        chosen = {w.index for w in running if w.answering} or {w.index for w in running}
        return [w.load if w.index in chosen else None for w in self.workers]

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
            chosen = shards.least_loaded(self._placeable())
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
        return [MatchSummary(**summary) for answer in await self._answers("listing") for summary in answer]

    async def failed_alarms(self) -> list[tuple[str, Alarm]]:
        found = [(match_id, Alarm(**alarm)) for answer in await self._answers("failed_alarms")
                 for match_id, alarm in answer]
        return sorted(found, key=lambda pair: (pair[1].due, pair[0], pair[1].name))

    async def unusable(self) -> list[BrokenFile]:
        return sorted((BrokenFile(**b) for answer in await self._answers("unusable") for b in answer),
                      key=lambda b: b.path)

    async def health(self) -> dict[str, int]:
        answers = await self._answers("status")
        totals = {key: sum(a[key] for a in answers) for key in ("live_matches", "hibernated_matches",
                                                                "unfinished_matches", "unusable_files", "connections")}
        return {**totals, "workers": len(self.workers), "workers_up": len(answers)}

    async def metrics(self) -> bytes:
        texts = await self._gather("metrics")  # first: what it asks updates who answers
        return merge_metrics(texts, up=[self._state(w) == "up" for w in self.workers],
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
            state = self._state(worker)
            if state == "up" and status is None:  # started again while it was asked: no counts yet
                state = "down" if self.closing else "starting"
            up = state == "up"
            infos.append(WorkerInfo(
                worker=worker.index, pid=worker.pid, state=state,
                ws_url=self.ws_base(worker), restarts=worker.restarts,
                live_matches=status["live_matches"] if up else None,
                unfinished_matches=status["unfinished_matches"] if up else None,
                connections=status["connections"] if up else None))
        return infos


def merge_metrics(texts: list[tuple[int, str]], *, up: list[bool], restarts: list[int]) -> bytes:
    """Every worker's series with a `worker` label added (sum them for the server's totals), and
    the parent's own: arbiter_workers_up (how many `up` says are: running and answering),
    arbiter_worker_restarts_total{worker}."""
    families: dict[str, Metric] = {}
    for index, text in texts:
        for family in text_string_to_metric_families(text):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, "worker": str(index)}, sample.value,
                                  sample.timestamp, sample.exemplar)
    running = Metric("arbiter_workers_up", "Worker processes running and answering (arbiter up --workers N)",
                     "gauge")
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
