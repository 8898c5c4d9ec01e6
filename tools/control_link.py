"""The trio shell of the control channel (gameserver/control.py) between `arbiter up` and a worker.

`Channel` sends and receives whole messages over a socket stream. `Link` is the parent's side of
one worker: numbered requests, each waiting for its own answer, while the worker's notices go to
a callback. Errors cross as their NodeError class name and message, and are raised again as
that class on the parent's side, so the HTTP API answers exactly as a single process would.

Every request carries its deadline: the time its caller gives up, as `time.monotonic()`, which on
Linux is CLOCK_MONOTONIC, one clock for every process of the machine. A worker answers a request
that reaches it after its deadline with an error (LATE) and does nothing else, so that nothing
happens that the caller was told had failed (a match created twice, say, when the first create's
answer came too late).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from gameserver import control
from gameserver.node import (InvalidParams, MatchFailed, MatchNotFound, MatchOver, MatchStorageUnavailable,
                             MatchUnavailable, NameTaken, NodeClosing, NodeError, StorageFailed, UnknownGame,
                             WrongWorker)
from matchmaker.hosts import WorkerError, WorkerUnavailable

log = logging.getLogger("arbiter.workers")

_ERRORS: dict[str, type[NodeError]] = {cls.__name__: cls for cls in (
    NodeError, UnknownGame, InvalidParams, MatchNotFound, MatchUnavailable, NodeClosing, MatchOver, NameTaken,
    WrongWorker, StorageFailed, MatchStorageUnavailable, MatchFailed)}
INTERNAL = "internal"
LATE = "late"  # the kind of error a worker answers to a request that reached it after its deadline
CALL_TIMEOUT_S = 60.0  # a worker that does not answer this long is treated as gone for that call
MAX_IN_FLIGHT = 1024  # requests waiting for one worker's answers; more callers wait their turn
RECEIVE_BYTES = 256 * 1024


def error_to_wire(error: BaseException) -> dict[str, str]:
    kind = type(error).__name__ if type(error).__name__ in _ERRORS and isinstance(error, NodeError) else INTERNAL
    return {"kind": kind, "message": str(error) if kind != INTERNAL else f"{type(error).__name__}: {error}"}


def error_from_wire(wire: Any) -> Exception:
    if not isinstance(wire, dict):
        return WorkerError(f"a malformed error from a worker: {wire!r}")
    message = str(wire.get("message", ""))
    if wire.get("kind") == LATE:  # nobody waits for it but a caller at the very edge of its deadline
        return WorkerUnavailable(message)
    cls = _ERRORS.get(wire.get("kind"))
    return cls(message) if cls is not None else WorkerError(message)


class Channel:
    """Whole control messages over a stream; `send` may be called from many tasks at once.

    A send cut short (cancelled while the other end was not reading, or failed) may have written
    part of a message, after which nothing could be framed: the channel is then broken and closed
    at once (the other end sees EOF, this end's `receive` None), and every later `send` raises
    trio.BrokenResourceError."""

    def __init__(self, stream: trio.abc.Stream):
        self.stream = stream
        self._decoder = control.Decoder()
        self._send_lock = trio.Lock()
        self.broken = False

    async def send(self, message: dict[str, Any]) -> None:
        data = control.encode(message)
        async with self._send_lock:
            if self.broken:
                raise trio.BrokenResourceError("the control channel broke in the middle of a message")
            await trio.lowlevel.checkpoint_if_cancelled()  # cancelled before the first byte: still whole
            try:
                await self.stream.send_all(data)
            except BaseException:
                self.broken = True
                await self.close_now()
                raise

    async def receive(self) -> dict[str, Any] | None:
        """The next message; None once the other end closed (or broke) the channel.
        Raises control.ControlProtocolError for bytes that are not messages."""
        while True:
            message = self._decoder.next()
            if message is not None:
                return message
            try:
                data = await self.stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                if self._decoder.pending:
                    raise control.ControlProtocolError("the channel closed in the middle of a message")
                return None
            self._decoder.feed(data)

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def close_now(self) -> None:
        """Close, even in a cancelled scope (the other end sees EOF)."""
        await trio.aclose_forcefully(self.stream)


class Link:
    """The parent's side of one worker's channel."""

    def __init__(self, channel: Channel, name: str):
        self.channel = channel
        self.name = name
        self._next_id = 0
        self._waiting: dict[int, tuple[trio.Event, list[Any]]] = {}
        self._limit = trio.Semaphore(MAX_IN_FLIGHT)
        self.closed = False

    async def call(self, op: str, /, *, timeout: float | None = None, **args: Any) -> Any:
        """The worker's answer to `op`; raises its NodeError, WorkerError, or WorkerUnavailable if the
        worker is gone or has not answered within `timeout` (CALL_TIMEOUT_S if None). That one
        deadline covers the wait for a turn (MAX_IN_FLIGHT), the send and the wait for the answer,
        and goes with the request (see the module's description). A send it cuts short breaks the
        channel (see Channel): the worker sees EOF and stops, and every caller waiting on it gets
        WorkerUnavailable."""
        timeout = CALL_TIMEOUT_S if timeout is None else timeout
        deadline = time.monotonic() + timeout
        answer: list[Any] = []
        with trio.move_on_after(timeout):
            async with self._limit:
                if self.closed:
                    raise WorkerUnavailable(f"{self.name} is not running: try again in a moment")
                self._next_id += 1
                call_id = self._next_id
                done = trio.Event()
                self._waiting[call_id] = (done, answer)
                try:
                    try:
                        await self.channel.send({"id": call_id, "op": op, "args": args, "deadline": deadline})
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        raise WorkerUnavailable(f"{self.name} is not running: try again in a moment") from None
                    await done.wait()
                finally:
                    del self._waiting[call_id]
        if not answer:
            if self.closed:
                raise WorkerUnavailable(f"{self.name} stopped before it answered: try again in a moment")
            raise WorkerUnavailable(f"{self.name} did not answer within {timeout:g} s")
        message = answer[0]
        if "error" in message:
            raise error_from_wire(message["error"])
        return message.get("ok")

    async def stop(self) -> None:
        """Ask the worker to shut down (it finishes its matches' ticks and closes their connections)."""
        try:
            await self.channel.send({"op": "stop"})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    async def run(self, on_message: Callable[[dict[str, Any]], None]) -> None:
        """Read until the worker closes the channel (or it breaks): answers go to their callers,
        anything else (notices) to `on_message`. Then every caller still waiting gets
        WorkerUnavailable, and the channel is closed at once: the worker sees EOF and stops."""
        try:
            while True:
                try:
                    message = await self.channel.receive()
                except control.ControlProtocolError as error:
                    log.error("%s sent a malformed control message: %s; dropping its channel", self.name, error)
                    return
                if message is None:
                    return
                call_id = message.get("id")
                if call_id is not None:
                    waiting = self._waiting.get(call_id)
                    if waiting is not None:
                        waiting[1].append(message)
                        waiting[0].set()
                    continue
                try:
                    on_message(message)
                except Exception:
                    log.exception("handling a message of %s failed: %r", self.name, message)
        finally:
            if self.channel.broken:
                log.error("a request to %s was cut short in the middle (it did not read it in time): its channel "
                          "is closed", self.name)
            self.closed = True
            for done, _answer in self._waiting.values():
                done.set()
            await self.channel.close_now()
