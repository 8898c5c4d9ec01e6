"""`arbiter up`: one process with the node, the WebSocket endpoint and the HTTP API.

Shutdown (SIGINT, SIGTERM, or the `stop` event in tests): every actor finishes its tick (all
ticks are committed before anything is sent, so nothing acknowledged is pending) and closes its
connections with 1001; then the WebSocket listener and the HTTP server stop.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
from pathlib import Path

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from gameserver.config import NodeConfig
from gameserver.endpoint import Endpoint
from gameserver.game import Game
from gameserver.node import Node
from gameserver.tokens import load_or_create_secret
from matchmaker.api import create_app
from matchmaker.auth import PlayerAuth
from matchmaker.placement import NodePlacement
from matchmaker.queues import Mode, default_modes
from matchmaker.service import Matchmaker

log = logging.getLogger("arbiter.up")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


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


@attrs.frozen
class Running:
    http_url: str
    ws_url: str
    node: Node
    endpoint: Endpoint
    matchmaker: Matchmaker


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run_server(config: ServerConfig, stop: trio.Event,
                     task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until `stop` is set, then shut down cleanly."""
    data_dir = config.node.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = load_or_create_secret(data_dir / "secret.key")
    auth = PlayerAuth(secret=config.auth_secret or load_or_create_secret(data_dir / "auth.key"),
                      guests=config.guests)
    node = Node(config.node, config.games)
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
        hc = HypercornConfig()
        hc.bind = [f"{_url_host(config.host)}:{config.port}"]
        hc.accesslog = None
        hc.errorlog = logging.getLogger("arbiter.http")
        hc.graceful_timeout = 5
        hc.backlog = 4096  # hypercorn's 100 resets connections under a burst of clients
        hc.keep_alive_max_requests = 1_000_000  # hypercorn's 1000 makes busy clients reconnect for nothing
        http_stop, http_done = trio.Event(), trio.Event()

        async def serve_http(task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                await hypercorn_serve(app, hc, shutdown_trigger=http_stop.wait, task_status=task_status)
            finally:
                http_done.set()

        binds = await nursery.start(serve_http)
        http_url = binds[0] if binds else f"http://{_url_host(config.host)}:{config.port}"
        task_status.started(Running(http_url=http_url, ws_url=ws_url, node=node, endpoint=endpoint,
                                    matchmaker=matchmaker))
        await stop.wait()
        log.info("shutting down: stopping %d live matches", len(node.actors))
        await node.shutdown()
        await endpoint.shutdown()
        http_stop.set()
        with trio.move_on_after(hc.graceful_timeout + 1):
            await http_done.wait()
        nursery.cancel_scope.cancel()  # the WebSocket listener and the node


def raise_open_file_limit() -> int:
    """A node holds a socket per connection: allow as many open files as the system lets us."""
    try:
        import resource
    except ImportError:  # not on this platform
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft


async def main(config: ServerConfig, ready_file: Path | None = None) -> None:
    raise_open_file_limit()
    stop = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            running = await nursery.start(run_server, config, stop)
            _announce(config, running)
            if ready_file is not None:  # written whole, then renamed: a reader never sees half of it
                staging = ready_file.with_name(f".{ready_file.name}.tmp")
                staging.write_text(json.dumps({"http_url": running.http_url, "ws_url": running.ws_url,
                                               "pid": os.getpid()}))
                staging.replace(ready_file)
            # Everything loaded so far (code, the app) lives as long as the process: keep it out of
            # the collector's full passes, which otherwise pause every match's tick.
            gc.collect()
            gc.freeze()
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                stop.set()
                break
    log.info("stopped")


def _announce(config: ServerConfig, running: Running) -> None:
    lines = [
        "Arbiter is up.",
        f"  HTTP API    {running.http_url}   (OpenAPI: {running.http_url}/openapi.json, docs: {running.http_url}/docs)",
        f"  WebSocket   {running.ws_url}/v1/matches/{{match_id}}",
        f"  Metrics     {running.http_url}/metrics",
        f"  Health      {running.http_url}/healthz",
        f"  Data        {config.node.data_dir.resolve()}",
        f"  Games       {', '.join(sorted(config.games))}",
        f"  Queues      {', '.join(sorted(running.matchmaker.modes)) or 'none'}   (tickets: {running.http_url}/v1/tickets)",
        "  Players     " + ("guest tokens on (development mode): POST /v1/auth/guest" if config.guests
                             else "tokens signed with the auth secret; guest tokens off"),
        f"  Unfinished  {len(running.node.unfinished)} matches in the data directory"
        + (f", {len(running.node.broken)} unusable files (see the log)" if running.node.broken else ""),
    ]
    if config.host not in LOOPBACK:
        lines.append(f"  WARNING     listening on {config.host}, not loopback: other machines can reach this "
                     "server" + ("" if config.admin_token else " and, with no --admin-token, create matches "
                                 "and join tokens"))
    print("\n".join(lines), flush=True)
