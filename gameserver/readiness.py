"""Read readiness for many sockets from one epoll, registered once per socket (Linux).

`trio.lowlevel.wait_readable` registers the socket with trio's epoll on every wait and removes
it when it fires: two `epoll_ctl` system calls and a trip through trio's I/O manager for every
frame a client sends. Here each socket is registered once, edge-triggered, in an epoll of our
own whose descriptor trio watches; one system task collects every ready socket per wake-up and
reschedules the task parked on each. A socket that became ready while nobody was parked on it
is remembered, so the next wait returns at once.

Readers must read until the socket would block before they wait (edge-triggered). Elsewhere
than Linux, `wait_readable` is trio's own.

A socket may also have a handler (`set_handler`): when it becomes ready while its task is parked,
the handler runs first, in this system task, and the task stays parked if the handler says it
read everything there was (wsserver.py handles a player's inputs this way, without a task switch
per input). A handler never raises and never blocks.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Callable

import trio

_current: trio.lowlevel.RunVar["Readiness | None"] = trio.lowlevel.RunVar("arbiter_readiness")

_EVENTS = (select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET) if hasattr(select, "epoll") else 0


class _Entry:
    __slots__ = ("ready", "task", "handler")

    def __init__(self) -> None:
        self.ready = True  # until proven otherwise: the first wait tries the socket
        self.task: trio.lowlevel.Task | None = None
        self.handler: Callable[[], bool] | None = None  # True: it read all there was, the task waits on


class Readiness:
    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._entries: dict[int, _Entry] = {}

    def register(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self._entries[fd] = _Entry()
        self._epoll.register(fd, _EVENTS)

    def set_handler(self, sock: socket.socket, handler: Callable[[], bool] | None) -> bool:
        """Run `handler` when the socket is ready while its task is parked (see the module's doc);
        None removes it. False if the socket is not registered here."""
        entry = self._entries.get(sock.fileno())
        if entry is None:
            return False
        entry.handler = handler
        return True

    def unregister(self, sock: socket.socket) -> None:
        """Before the socket is closed. Wakes a task still parked on it (it sees the socket closed)."""
        fd = sock.fileno()
        entry = self._entries.pop(fd, None)
        if entry is None:
            return
        entry.handler = None  # (run's last `entry` outlives this call: it must not hold the socket's owner)
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass
        if entry.task is not None:
            task, entry.task = entry.task, None
            trio.lowlevel.reschedule(task)

    async def wait_readable(self, sock: socket.socket) -> None:
        entry = self._entries.get(sock.fileno())
        if entry is None:
            await trio.lowlevel.wait_readable(sock)
            return
        if entry.ready:
            entry.ready = False
            await trio.lowlevel.checkpoint()  # a wait is a checkpoint, ready or not
            return
        entry.task = trio.lowlevel.current_task()

        def abort(_raise_cancel) -> trio.lowlevel.Abort:
            entry.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self) -> None:
        poll, entries = self._epoll.poll, self._entries
        reschedule = trio.lowlevel.reschedule
        while True:
            await trio.lowlevel.wait_readable(self._epoll.fileno())
            for fd, _events in poll(0):
                entry = entries.get(fd)
                if entry is None:
                    continue
                task = entry.task
                if task is None:
                    entry.ready = True
                elif entry.handler is not None and entry.handler():
                    continue  # handled here: the task waits on
                else:
                    entry.task = None
                    reschedule(task)


def current() -> Readiness | None:
    """This trio run's Readiness (started on first use), or None where there is no epoll."""
    try:
        return _current.get()
    except LookupError:
        readiness = Readiness() if _EVENTS else None
        _current.set(readiness)
        if readiness is not None:
            trio.lowlevel.spawn_system_task(readiness.run, name="arbiter readiness")
        return readiness
