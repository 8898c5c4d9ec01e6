"""A client connection as its match's actor sees it: who it is, and an outbox that never blocks.

The actor only ever calls the non-blocking methods here. With a socket attached (`ws`, by the
endpoint) and nothing waiting before it, a frame goes to the kernel at once, in the actor's own
step: no task switch per frame. What the kernel does not take waits; then frames queue here and
the connection's writer task (in endpoint.py) drains them. State frames replace each other (a slow
reader gets the newest state, not a backlog); other frames queue up to a bound, past which the
connection is closed as a slow consumer.
"""

from __future__ import annotations

import itertools
from collections import deque

import trio

from .protocol import CLOSE_SLOW_CONSUMER

_ids = itertools.count(1)


class Connection:
    __slots__ = ("id", "match_id", "player", "role", "fmt", "resume_tick", "attachment", "connected_at",
                 "queue", "pending_state",
                 "close_request", "wakeup", "ws", "admitted", "admission_error", "max_frames", "on_slow")

    def __init__(self, *, match_id: str, player: str, role: str, fmt: str, resume_tick: int | None,
                 max_frames: int, attachment: object = None, connected_at: float = 0.0):
        self.id = next(_ids)
        self.match_id = match_id
        self.player = player
        self.role = role
        self.fmt = fmt
        self.resume_tick = resume_tick
        self.attachment = attachment  # the client's, up to 16 KiB of JSON; kept while the match hibernates
        self.connected_at = connected_at
        self.queue: deque[str | bytes] = deque()
        self.pending_state: str | bytes | None = None
        self.close_request: tuple[int, str] | None = None
        self.wakeup = trio.Event()
        self.admitted = trio.Event()
        self.admission_error: tuple[int, str] | None = None
        self.max_frames = max_frames
        self.on_slow = None  # set by the endpoint: counts a slow-consumer disconnect
        self.ws = None  # set by the endpoint: the socket (wsserver.WebSocket) frames go to directly

    def row(self) -> tuple:
        """This connection as the match file records it (table `connections`)."""
        return (self.id, self.player, self.role, self.attachment, self.connected_at)

    @property
    def closing(self) -> bool:
        return self.close_request is not None

    def send(self, frame: str | bytes) -> None:
        if self.close_request is not None:
            return
        ws = self.ws
        if ws is not None and not ws.out and not self.queue and self.pending_state is None:
            ws.write(frame)  # nothing waits before it: straight to the kernel
            return
        if len(self.queue) >= self.max_frames:
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer: too many frames waiting")
            return
        self.queue.append(frame)
        self.wakeup.set()

    def offer_state(self, frame: str | bytes) -> None:
        if self.close_request is None:
            ws = self.ws
            if ws is not None and not ws.out and not self.queue and self.pending_state is None:
                ws.write(frame)
                return
            self.pending_state = frame
            self.wakeup.set()

    def close(self, code: int, reason: str) -> None:
        if self.close_request is None:
            self.close_request = (code, reason)
            if code == CLOSE_SLOW_CONSUMER and self.on_slow is not None:
                self.on_slow()
        self.wakeup.set()

    def poke(self) -> None:
        """Wake the writer task (the socket has bytes the kernel did not take yet)."""
        self.wakeup.set()

    def admit(self) -> None:
        self.admitted.set()

    def refuse(self, code: int, reason: str) -> None:
        self.admission_error = (code, reason)
        self.admitted.set()

    def take(self) -> list[str | bytes]:
        """Everything to write now, in order: queued frames, then the newest state."""
        frames = list(self.queue)
        self.queue.clear()
        if self.pending_state is not None:
            frames.append(self.pending_state)
            self.pending_state = None
        if self.wakeup.is_set():
            self.wakeup = trio.Event()
        return frames
