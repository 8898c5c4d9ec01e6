"""One worker process of `arbiter up --workers N`: a node and its WebSocket endpoint.

Started by the parent (tools/workers.py) as `python -m tools.worker FD`, where FD is its end of a
socket pair: the control channel (gameserver/control.py). The first message on it is the setup
(pickled: the node's settings and the game classes; the channel is private to the two processes).
The worker owns the matches whose id hashes to it (gameserver/shards.py): it scans the shared data
directory for its own files, serves their WebSocket connections on its own port, answers the
parent's requests about them, and streams their notices (started, finished, a player left) to the
parent's matchmaker.

It stops cleanly (every match finishes its tick, connections are closed with 1001) when the parent
asks, when the parent's end of the channel closes (the parent died, even by SIGKILL, or gave up on
the channel), when the parent's bytes are not control messages, or on SIGINT or SIGTERM; it then
exits 0. A request that reaches it after its deadline (the parent gave up on it) is answered with
an error and not run. Exit 1: it could not start (the reason went to the parent and stderr).
"""

from __future__ import annotations

import base64
import gc
import logging
import math
import os
import pickle
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from gameserver import control, memory
from gameserver.actor import MatchNotice
from gameserver.config import NodeConfig
from gameserver.endpoint import Endpoint
from gameserver.game import Game
from gameserver.node import Node, NodeError
from gameserver.tokens import load_or_create_secret
from tools.control_link import LATE, Channel, error_to_wire
from tools.openfiles import raise_open_file_limit

log = logging.getLogger("arbiter.worker")


@attrs.frozen
class WorkerSetup:
    node: NodeConfig  # with worker and workers set
    games: dict[str, type[Game]]
    host: str
    ws_port: int
    log_level: int


def encode_setup(setup: WorkerSetup) -> str:
    return base64.b64encode(pickle.dumps(setup)).decode()


def decode_setup(text: str) -> WorkerSetup:
    setup = pickle.loads(base64.b64decode(text))
    if not isinstance(setup, WorkerSetup):
        raise TypeError(f"a worker's setup is a WorkerSetup, not {type(setup).__name__}")
    return setup


class Worker:
    def __init__(self, node: Node, endpoint: Endpoint, channel: Channel,
                 clock: Callable[[], float] = time.monotonic):
        """`clock`: the one the parent's deadlines are written in (tools/control_link.py)."""
        self.node = node
        self.endpoint = endpoint
        self.channel = channel
        self.clock = clock
        self.stop = trio.Event()
        self.creates_done = 0  # create requests answered: the parent's placement counts the ones in flight

    async def serve_requests(self, nursery: trio.Nursery) -> None:
        """Until the parent says stop, its end closes or it sends what is not a control message:
        each request in a task of its own."""
        try:
            while True:
                try:
                    message = await self.channel.receive()
                except control.ControlProtocolError as error:
                    log.error("the parent sent a malformed control message: %s; stopping", error)
                    return
                if message is None:
                    log.warning("the parent's control channel closed: stopping")
                    return
                if message.get("op") == "stop":
                    return
                if "id" in message:
                    nursery.start_soon(self.answer, message)
        finally:
            self.stop.set()

    async def answer(self, message: dict[str, Any]) -> None:
        op, args, deadline = message.get("op"), message.get("args") or {}, message.get("deadline")
        late = self.clock() - deadline if isinstance(deadline, (int, float)) else 0.0
        if late > 0:  # the parent no longer waits for it: running it now would do what it was told failed
            if op == "create":
                self.creates_done += 1  # answered: no longer in flight for the parent's placement
            log.warning("a %s request came %.1f s after the parent gave up on it: not run", op, late)
            reply = {"id": message["id"], "error": {"kind": LATE, "message": f"{op} reached the worker "
                                                                              f"{late:.1f} s after its deadline"}}
        else:
            try:
                handler = getattr(self, f"op_{op}", None)
                if handler is None or not isinstance(args, dict):
                    raise ValueError(f"no control operation {op!r}")
                reply = {"id": message["id"], "ok": await handler(**args)}
            except Exception as error:
                if not isinstance(error, NodeError):  # a bug, which the parent reports as a 500
                    log.exception("control operation %s failed", op)
                reply = {"id": message["id"], "error": error_to_wire(error)}
        try:
            await self.channel.send(reply)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the parent is gone; serve_requests sees it too

    async def forward_notices(self, notices: trio.MemoryReceiveChannel[MatchNotice]) -> None:
        async for notice in notices:
            try:
                await self.channel.send({"notice": attrs.asdict(notice)})
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

    # -- operations (op_NAME answers {"op": NAME}) ------------------------------------------

    async def op_create(self, game: str, params: Any, name: str | None, roster: list[str] | None,
                        lobby_s: float | None, labels: dict[str, str] | None) -> dict[str, Any]:
        try:
            meta = await self.node.create_match(game, params, name, roster=roster, lobby_s=lobby_s, labels=labels)
        finally:
            self.creates_done += 1
        return {"match_id": meta.match_id, "game": meta.game, "status": meta.status}

    async def op_change_roster(self, match_id: str, players: list[str], release: bool) -> list[str]:
        return await self.node.change_roster(match_id, players, release=release)

    async def op_describe(self, match_id: str) -> dict[str, Any]:
        return await self.node.describe(match_id)

    async def op_logged_inputs(self, match_id: str) -> dict[str, list[list[int]]]:
        return await self.node.logged_inputs(match_id)

    async def op_listing(self) -> list[dict[str, Any]]:
        return [attrs.asdict(summary) for summary in await self.node.listing()]

    async def op_failed_alarms(self) -> list[list[Any]]:
        return [[match_id, attrs.asdict(alarm)] for match_id, alarm in await self.node.failed_alarms()]

    async def op_unusable(self) -> list[dict[str, str]]:
        return [attrs.asdict(broken) for broken in self.node.broken.values()]

    async def op_status(self) -> dict[str, int]:
        node = self.node  # one snapshot: no await in between
        return {"live_matches": len(node.actors), "hibernated_matches": len(node.hibernated),
                "unfinished_matches": len(node.unfinished), "unusable_files": len(node.broken),
                "connections": self.endpoint.open, "creates_done": self.creates_done}

    async def op_metrics(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.node.metrics.registry).decode()


async def run(sock: socket.socket) -> int:
    channel = Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    first = await channel.receive()
    if first is None or "setup" not in first:
        print("arbiter worker: no setup on the control channel (start it with arbiter up --workers N)",
              file=sys.stderr)
        return 2
    setup = decode_setup(first["setup"])
    config = setup.node
    logging.basicConfig(level=setup.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker-{config.worker} %(name)s: %(message)s")
    raise_open_file_limit()
    node = Node(config, setup.games, freeze_gc=True, watch_stalls=True)  # see tools/up.py main()
    notices_in, notices_out = trio.open_memory_channel[MatchNotice](math.inf)  # a notice per match event
    node.listeners.append(notices_in.send_nowait)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            try:
                secret = load_or_create_secret(config.data_dir / "secret.key")
                endpoint = Endpoint(node, secret)
                await nursery.start(node.run)
                server = await nursery.start(endpoint.serve, setup.host, setup.ws_port)
            except (OSError, ValueError) as error:  # a port in use, an unreadable data directory
                log.error("cannot start: %s", error)
                await channel.send({"failed": str(error)})
                nursery.cancel_scope.cancel()
                return 1
            worker = Worker(node, endpoint, channel)
            nursery.start_soon(worker.forward_notices, notices_out)
            await channel.send({"hello": {"ws_port": server.port, "pid": os.getpid(),
                                          "unfinished_matches": len(node.unfinished)}})
            log.info("serving %d unfinished matches; WebSocket port %d", len(node.unfinished), server.port)
            gc.collect()
            gc.freeze()  # see tools/up.py main()

            async def watch_signals() -> None:
                async for signum in signals:
                    log.info("received %s: stopping", signal.Signals(signum).name)
                    worker.stop.set()
                    return

            nursery.start_soon(watch_signals)
            nursery.start_soon(worker.serve_requests, nursery)
            await worker.stop.wait()
            await node.shutdown()
            await endpoint.shutdown()
            nursery.cancel_scope.cancel()
    log.info("stopped")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m tools.worker FD (started by arbiter up --workers N)", file=sys.stderr)
        return 2
    sock = socket.socket(fileno=int(argv[0]))
    memory.configure_process()  # before any worker thread starts or file opens (gameserver/memory.py)
    return trio.run(run, sock)


if __name__ == "__main__":
    from tools import worker as this  # the module by its own name: the setup unpickles as tools.worker's classes

    sys.exit(this.main(sys.argv[1:]))
