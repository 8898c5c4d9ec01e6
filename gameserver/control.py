"""The control channel between `arbiter up` and its workers: length-prefixed JSON, no I/O.

A message is a 4-byte big-endian length and that many bytes of UTF-8 JSON (an object, as Python's
json module writes it: Infinity and NaN pass, as they do within one process). The
channel is a socket pair the parent makes before it starts a worker and hands to it as an
inherited file descriptor: nothing listens on a port, so nothing else can talk on it.

Messages (the trio shells are tools/workers.py, the parent, and tools/worker.py, the worker):

- parent -> worker: `{"id": n, "op": name, "args": {...}, "deadline": t}`, a request, where `t` is
  when the parent gives up waiting for its answer, as `time.monotonic()` (CLOCK_MONOTONIC on Linux:
  the same clock in both processes); a worker that receives it later answers the error kind
  "late" without running it. `{"op": "stop"}`: shut down.
- worker -> parent: `{"id": n, "ok": result}` or `{"id": n, "error": {"kind": ..., "message": ...}}`,
  the answer to request n; `{"hello": {...}}` once serving; `{"notice": {...}}`, a match notice.
"""

from __future__ import annotations

import json
from typing import Any

HEADER = 4
MAX_MESSAGE = 64 * 1024 * 1024  # a listing of every match of a worker must fit


class ControlProtocolError(Exception):
    """The other end sent something that is not a control message: the channel is unusable."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_MESSAGE:
        raise ControlProtocolError(f"a control message is at most {MAX_MESSAGE} bytes, this one {len(body)}")
    return len(body).to_bytes(HEADER, "big") + body


class Decoder:
    """Bytes in (`feed`), messages out (`next`)."""

    def __init__(self, max_message: int = MAX_MESSAGE):
        self.max_message = max_message
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next(self) -> dict[str, Any] | None:
        """The next whole message, or None until more bytes arrive. Raises ControlProtocolError."""
        if len(self._buffer) < HEADER:
            return None
        size = int.from_bytes(self._buffer[:HEADER], "big")
        if size > self.max_message:
            raise ControlProtocolError(f"a control message of {size} bytes (at most {self.max_message})")
        if len(self._buffer) < HEADER + size:
            return None
        body = bytes(self._buffer[HEADER:HEADER + size])
        del self._buffer[:HEADER + size]
        try:
            message = json.loads(body)
        except (UnicodeDecodeError, ValueError) as error:
            raise ControlProtocolError(f"a control message that is not JSON: {error}") from None
        if not isinstance(message, dict):
            raise ControlProtocolError("a control message is a JSON object")
        return message

    @property
    def pending(self) -> int:
        """Bytes received that are not a whole message yet."""
        return len(self._buffer)
