"""The accept loop both servers share (WebSocket: gameserver/wsserver.py, HTTP: matchmaker/http_server.py)."""

from __future__ import annotations

import errno
import logging
import socket
from typing import Any, Callable

import trio

log = logging.getLogger(__name__)

ACCEPTS_PER_TURN = 32  # connections accepted before the loop lets other tasks run


def listen(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking listening sockets on every address `host` resolves to, all on one port (a free
    one if `port` is 0); IPv6 sockets are IPv6-only so that both families can share the port."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys((i[0], i[1], i[2], i[3], i[4]) for i in infos):
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and listeners[0] is not sock:  # the same free port on every address
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in listeners:
            sock.close()
        raise
    return listeners


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
