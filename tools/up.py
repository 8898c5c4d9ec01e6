"""`arbiter up`: one process with the node, the WebSocket endpoint and the HTTP API; or, with
`--workers N` (N > 1), this process with the HTTP API and the matchmaker, and N worker processes
that each run a node and a WebSocket port of their own (tools/workers.py, tools/worker.py).

Shutdown (SIGINT, SIGTERM, or the `stop` event in tests): every actor finishes its tick (all
ticks are committed before anything is sent, so nothing acknowledged is pending) and closes its
connections with 1001; then the WebSocket listener and the HTTP server stop. With workers, each
worker does that, and then the HTTP server stops.

The data directory is locked (DATA_DIR/server.lock, flock) by the process and its workers: a
second server on the same directory waits for the first to be gone (its workers included, which
outlive a parent killed with SIGKILL by the moment they take to stop), then starts.
"""

from __future__ import annotations

import errno
import functools
import gc
import ipaddress
import json
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

import attrs
import trio

from gameserver.config import NodeConfig
from gameserver.endpoint import Endpoint
from gameserver import memory
from gameserver.game import Game
from gameserver.node import Node
from gameserver.tokens import load_or_create_secret
from matchmaker import http_server
from matchmaker.api import create_app
from matchmaker.auth import PlayerAuth
from matchmaker.hosts import LocalHost, MatchHost, WorkerInfo
from matchmaker.placement import HostPlacement, NodePlacement
from matchmaker.queues import Mode, default_modes
from matchmaker.service import Matchmaker
from tools.openfiles import connection_cap, raise_open_file_limit

log = logging.getLogger("arbiter.up")
HTTP_GRACE_S = 5.0  # requests in flight at shutdown may take this long to finish


@attrs.frozen
class ServerConfig:
    node: NodeConfig
    games: dict[str, type[Game]]
    host: str = "127.0.0.1"
    port: int = 7350
    ws_port: int | None = None  # default: port + 1 (0 when port is 0)
    public_ws_url: str | None = None  # what clients are told, if not ws://host:ws_port
    admin_token: str | None = None
    queues: dict[str, Mode] | None = None  # None: one queue per demo game this node has
    guests: bool = True  # development mode: POST /v1/auth/guest hands out player tokens
    auth_secret: bytes | None = None  # signs player tokens; None: data_dir/auth.key (created once)
    # processes that run matches: 1, everything in this process; N > 1, N worker processes (ws_port,
    # when not 0, is worker 0's and worker k listens on ws_port + k; public_ws_url may name {worker}
    # and {port})
    workers: int = 1
    # HTTP connections open at once (ticket long-polls and replay streams among them); past it a new
    # one is answered 503 server_busy and closed (matchmaker/http_server.py)
    max_http_connections: int = 10_000


@attrs.frozen
class Running:
    http_url: str
    ws_url: str  # with workers: worker 0's WebSocket base URL (each match's ws_url names its own)
    node: Node | None  # None with workers: the nodes are in the worker processes
    endpoint: Endpoint | None
    matchmaker: Matchmaker
    host: MatchHost | None = None
    workers: tuple[WorkerInfo, ...] = ()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_server(config: ServerConfig, stop: trio.Event,
                     task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until `stop` is set, then shut down cleanly."""
    if config.workers > 1:
        await run_workers(config, stop, task_status=task_status)
        return
    data_dir = config.node.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = load_or_create_secret(data_dir / "secret.key")
    auth = PlayerAuth(secret=config.auth_secret or load_or_create_secret(data_dir / "auth.key"),
                      guests=config.guests)
    node = Node(config.node, config.games, freeze_gc=True, watch_stalls=True)  # see gc.freeze() below
    endpoint = Endpoint(node, secret)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        ws_port = config.ws_port if config.ws_port is not None else (config.port + 1 if config.port else 0)
        ws_server = await nursery.start(endpoint.serve, config.host, ws_port)
        ws_url = config.public_ws_url or f"ws://{_url_host(config.host)}:{ws_server.port}"
        modes = config.queues if config.queues is not None else {
            name: mode for name, mode in default_modes().items() if mode.game in config.games}
        matchmaker = Matchmaker(modes, NodePlacement(node, secret, lambda: ws_url), clock=node.wall_clock)
        node.listeners.append(matchmaker.on_notice)
        await nursery.start(matchmaker.run)
        app = create_app(node, secret=secret, ws_base=lambda: ws_url, connections=lambda: endpoint.open,
                         admin_token=config.admin_token, matchmaker=matchmaker, auth=auth)
        http = await nursery.start(_serve_http, app, config)
        task_status.started(Running(http_url=http.url, ws_url=ws_url, node=node, endpoint=endpoint,
                                    matchmaker=matchmaker, host=LocalHost(node, lambda: ws_url, lambda: endpoint.open)))
        await stop.wait()
        log.info("shutting down: stopping %d live matches", len(node.actors))
        await node.shutdown()
        await endpoint.shutdown()
        await http.stop()
        nursery.cancel_scope.cancel()  # the WebSocket listener and the node


@attrs.define
class _Http:
    url: str
    _stop: trio.Event
    _done: trio.Event
    _grace_s: float

    async def stop(self) -> None:
        """Stop accepting, let requests in flight finish (bounded)."""
        self._stop.set()
        with trio.move_on_after(self._grace_s + 1):
            await self._done.wait()


async def _serve_http(app: object, config: ServerConfig, task_status: trio.TaskStatus[_Http]) -> None:
    """The HTTP API on matchmaker/http_server.py (hypercorn's trio worker cost about 3 times as much CPU
    per request: docs/performance.md)."""
    http_stop, http_done = trio.Event(), trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                http_server.serve, app, config.host, config.port, shutdown=http_stop, graceful_s=HTTP_GRACE_S,
                max_connections=config.max_http_connections))
            task_status.started(_Http(server.urls[0], http_stop, http_done, HTTP_GRACE_S))
    finally:
        http_done.set()


async def run_workers(config: ServerConfig, stop: trio.Event,
                      task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
    """`run_server` with config.workers > 1: the HTTP API and the matchmaker here, the matches in
    worker processes. Raises OSError (WorkerStartFailed, DataDirBusy) if they cannot start."""
    from tools.workers import WorkerPool

    data_dir = config.node.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = load_or_create_secret(data_dir / "secret.key")  # before the workers, which read it
    auth = PlayerAuth(secret=config.auth_secret or load_or_create_secret(data_dir / "auth.key"),
                      guests=config.guests)
    lock_fd = await lock_data_dir(data_dir)
    try:
        ws_port = config.ws_port if config.ws_port is not None else (config.port + 1 if config.port else 0)
        pool = WorkerPool(config.node, config.games, host=config.host, ws_port=ws_port, workers=config.workers,
                          ws_base=worker_ws_base(config), lock_fd=lock_fd)
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            modes = config.queues if config.queues is not None else {
                name: mode for name, mode in default_modes().items() if mode.game in config.games}
            matchmaker = Matchmaker(modes, HostPlacement(pool, secret), clock=pool.wall_clock)
            pool.listeners.append(matchmaker.on_notice)
            await nursery.start(matchmaker.run)
            app = create_app(pool, secret=secret, admin_token=config.admin_token, matchmaker=matchmaker, auth=auth)
            http = await nursery.start(_serve_http, app, config)
            workers = tuple(await pool.worker_info())
            task_status.started(Running(http_url=http.url, ws_url=workers[0].ws_url, node=None, endpoint=None,
                                        matchmaker=matchmaker, host=pool, workers=workers))
            await stop.wait()
            log.info("shutting down: stopping %d workers", config.workers)
            if not await pool.shutdown():
                log.error("a worker had to be killed: see above")
            await http.stop()
            nursery.cancel_scope.cancel()
    finally:
        os.close(lock_fd)


def worker_ws_base(config: ServerConfig) -> Callable[[int, int], str]:
    """The WebSocket base URL clients are given for worker k's matches, from its port."""
    def ws_base(worker: int, port: int) -> str:
        if config.public_ws_url is not None:
            return config.public_ws_url.replace("{worker}", str(worker)).replace("{port}", str(port))
        return f"ws://{_url_host(config.host)}:{port}"

    return ws_base


LOCK_FILE = "server.lock"
LOCK_WAIT_S = 30.0


class DataDirBusy(OSError):
    """Another server (or the workers of one) still uses the data directory."""


async def lock_data_dir(data_dir: Path, wait_s: float = LOCK_WAIT_S) -> int:
    """An open descriptor of DATA_DIR/server.lock holding an exclusive flock, waiting up to `wait_s`
    for another holder to let go. The lock lasts until every process that holds the descriptor
    (this one and the workers it is passed to) has closed it or exited."""
    import fcntl

    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    waited = False
    with trio.move_on_after(wait_s):
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not waited:
                    holder = path.read_text().strip() or "unknown"
                    log.warning("the data directory %s is in use (server pid %s, or its workers, which are still "
                                "stopping): waiting up to %g s", data_dir, holder, wait_s)
                    waited = True
                await trio.sleep(0.1)
                continue
            except OSError as error:
                if error.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    log.warning("cannot lock %s (%s): make sure no other server uses this data directory", path, error)
                    return fd
                os.close(fd)
                raise
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
    os.close(fd)
    raise DataDirBusy(f"the data directory {data_dir} is still in use by another server after {wait_s:g} s "
                      f"(see {path} for its pid)")


async def main(config: ServerConfig, ready_file: Path | None = None) -> None:
    open_files = raise_open_file_limit()
    cap = connection_cap(config.max_http_connections, open_files)
    if cap < config.max_http_connections:
        log.warning("at most %d HTTP connections at once, half the open-file limit (%d), not %d",
                    cap, open_files, config.max_http_connections)
        config = attrs.evolve(config, max_http_connections=cap)
    memory.configure_process()  # before any worker thread starts or file opens (gameserver/memory.py)
    stop = trio.Event()
    lock_fd = None
    if config.workers == 1:  # (with workers, run_workers locks, to hand the lock to them)
        config.node.data_dir.mkdir(parents=True, exist_ok=True)
        lock_fd = await lock_data_dir(config.node.data_dir)
    try:
        await _serve_until_signal(config, stop, ready_file)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)
    log.info("stopped")


async def _serve_until_signal(config: ServerConfig, stop: trio.Event, ready_file: Path | None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_server, config, stop)
            unfinished = (len(running.node.unfinished) if running.node is not None
                          else (await running.host.health())["unfinished_matches"])
            if ready_file is not None:  # written whole, then renamed: a reader never sees half of it
                staging = ready_file.with_name(f".{ready_file.name}.tmp")
                ready = {"http_url": running.http_url, "ws_url": running.ws_url, "pid": os.getpid()}
                if config.workers > 1:
                    ready["workers"] = [{"worker": w.worker, "pid": w.pid, "ws_url": w.ws_url} for w in running.workers]
                staging.write_text(json.dumps(ready))
                staging.replace(ready_file)
            _announce(config, running, unfinished)  # after the ready file: a reader of the banner finds it
            # Everything loaded so far (code, the app) lives as long as the process: keep it out of
            # the collector's full passes, which otherwise pause every match's tick.
            gc.collect()
            gc.freeze()
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                stop.set()
                break


def _announce(config: ServerConfig, running: Running, unfinished: int) -> None:
    if running.workers:
        websocket = [f"  WebSocket   {w.ws_url}/v1/matches/{{match_id}}   (worker {w.worker}, pid {w.pid})"
                     for w in running.workers]
        websocket.append(f"              {len(running.workers)} worker processes; each match's ws_url names "
                         f"the worker that owns it")
    else:
        websocket = [f"  WebSocket   {running.ws_url}/v1/matches/{{match_id}}"]
    broken = len(running.node.broken) if running.node is not None else 0
    lines = [
        "Arbiter is up.",
        f"  HTTP API    {running.http_url}   (OpenAPI: {running.http_url}/openapi.json, docs: {running.http_url}/docs)",
        *websocket,
        f"  Metrics     {running.http_url}/metrics",
        f"  Health      {running.http_url}/healthz",
        f"  Data        {config.node.data_dir.resolve()}",
        f"  Games       {', '.join(sorted(config.games))}",
        f"  Queues      {', '.join(sorted(running.matchmaker.modes)) or 'none'}   (tickets: {running.http_url}/v1/tickets)",
        "  Players     " + ("guest tokens on (development mode): POST /v1/auth/guest" if config.guests
                             else "tokens signed with the auth secret; guest tokens off"),
        f"  Unfinished  {unfinished} matches in the data directory"
        + (f", {broken} unusable files (see the log)" if broken else ""),
    ]
    warning = exposure_warning(config.host, config.admin_token)
    if warning is not None:
        lines.append(f"  WARNING     {warning}")
        log.warning("%s", warning)
    print("\n".join(lines), flush=True)


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the server to this machine: "localhost" or a loopback
    address (127.0.0.0/8, ::1). "" and 0.0.0.0 mean every address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def exposure_warning(host: str, admin_token: str | None) -> str | None:
    """What `arbiter up` says when it listens beyond loopback (None: it does not)."""
    if is_loopback(host):
        return None
    return (f"listening on {host or 'every address'}, not loopback: other machines can reach this server"
            + ("" if admin_token else " and, with no --admin-token, create matches and join tokens"))
