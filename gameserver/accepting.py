"""The accept loop both servers share (WebSocket: gameserver/wsserver.py, HTTP: matchmaker/http_server.py)."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any, Callable

import trio

log = logging.getLogger(__name__)

ACCEPTS_PER_TURN = 32  # connections accepted before the loop lets other tasks run


async def accept_forever(listener: socket.socket, started: Callable[[socket.socket, Any], None], what: str) -> None:
    """Accept connections on a non-blocking listener for ever; hand each (non-blocking, TCP_NODELAY)
    socket and its address to `started`, which starts its task. Running out of file descriptors or
    buffers pauses accepting for 100 ms instead of failing the listener."""
    while True:
        await trio.lowlevel.wait_readable(listener)
        accepted = 0
        while True:
            if accepted == ACCEPTS_PER_TURN:
                # A flood of new connections must not make one long batch of trio's scheduler: every
                # new connection's task runs in the next batch, and match ticks wait behind them all.
                accepted = 0
                await trio.lowlevel.checkpoint()
            try:
                sock, address = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept %s connection: %s; pausing accepts for 100 ms", what, error)
                    await trio.sleep(0.1)
                    break
                if error.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                raise
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            started(sock, address)
            accepted += 1
