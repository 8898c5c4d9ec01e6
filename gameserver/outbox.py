"""The write half both ends of our WebSocket share (the server's `wsserver.WebSocket`, the bots'
`clients.lightws.WebSocket`): a frame goes straight to the kernel when it takes it, and whatever it
does not take waits in `out` until `flush`; writing never blocks."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio


class Outbox:
    def _init_outbox(self, sock: socket.socket) -> None:
        self.sock = sock
        self.out = bytearray()  # bytes the kernel has not taken yet
        self.on_pending: Callable[[], None] | None = None  # told when `out` stops being empty
        self._drained = trio.Event()  # set while `out` is empty (or the connection is gone)
        self._drained.set()
        self._flushing = False

    def _lost(self, error: OSError | None) -> None:
        """The connection is gone (`error`, or None: the peer ended it). Subclasses record it and
        must clear `out` and set `_drained`."""
        raise NotImplementedError

    def _write_raw(self, wire: bytes) -> None:
        if self.out:
            self.out += wire
            return
        try:
            sent = self.sock.send(wire)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as error:
            self._lost(error)
            return
        if sent < len(wire):
            self.out += memoryview(wire)[sent:]
            self._drained = trio.Event()
            if self.on_pending is not None:
                self.on_pending()

    async def flush(self) -> None:
        """Wait until the kernel has taken everything written (or the connection is gone)."""
        if self._flushing:  # another task is at it
            await self._drained.wait()
            return
        self._flushing = True
        try:
            while self.out:
                try:
                    sent = self.sock.send(self.out)
                except (BlockingIOError, InterruptedError):
                    try:
                        await trio.lowlevel.wait_writable(self.sock)
                    except trio.ClosedResourceError:
                        self._lost(None)
                    continue
                except OSError as error:
                    self._lost(error)
                    break
                del self.out[:sent]
        finally:
            self._flushing = False
        self._drained.set()
