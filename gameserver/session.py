"""The per-connection session state machine, sans-IO: frames and time in, actions out.

    awaiting_auth --auth--> joining --admitted--> active --leave / close--> closed
                                    --refused---> closed

Every frame goes through `receive`; the shell carries out the returned actions. Each limit has a
stated answer: a frame that is not a valid message, or an input or a ping past its rate limit,
earns an error frame; when errors keep coming faster than `error_rate` (after a burst of `error_burst`),
the connection is closed with 1008.
"""

from __future__ import annotations

from typing import Any

import attrs

from . import protocol
from .protocol import Auth, Input, Leave, Ping, ProtocolError
from .ratelimit import TokenBucket
from .tokens import PLAYER

AWAITING_AUTH = "awaiting_auth"
JOINING = "joining"
ACTIVE = "active"
CLOSED = "closed"


@attrs.frozen
class Send:
    frame: dict[str, Any]


@attrs.frozen
class Close:
    code: int
    reason: str


@attrs.frozen
class Authenticate:
    auth: Auth


@attrs.frozen
class Submit:
    input: Input


@attrs.frozen
class LeaveMatch:
    pass


Action = Send | Close | Authenticate | Submit | LeaveMatch


@attrs.frozen
class Limits:
    input_rate: float = 60.0  # inputs a second, sustained
    input_burst: float = 120.0
    error_rate: float = 2.0  # error frames a second, sustained, before the connection is closed
    error_burst: float = 20.0
    ping_rate: float = 10.0  # pings answered a second, sustained; past it: rate_limited (an error)
    ping_burst: float = 20.0
    auth_timeout_s: float = 10.0

    def announced(self) -> dict[str, float]:
        """The limits a `welcome` tells the client (its `limits` field), so it can pace itself."""
        return {"input_rate": self.input_rate, "input_burst": self.input_burst, "ping_rate": self.ping_rate,
                "ping_burst": self.ping_burst, "error_rate": self.error_rate, "error_burst": self.error_burst}


class Session:
    def __init__(self, fmt: str, now: float, limits: Limits = Limits()):
        self.fmt = fmt
        self.state = AWAITING_AUTH
        self.role: str | None = None
        self._inputs = TokenBucket(limits.input_rate, limits.input_burst, now)
        self._errors = TokenBucket(limits.error_rate, limits.error_burst, now)
        self._pings = TokenBucket(limits.ping_rate, limits.ping_burst, now)

    def receive(self, frame: str | bytes, now: float) -> list[Action]:
        if self.state == CLOSED:
            return []
        try:
            message = protocol.decode_client(frame, self.fmt)
        except ProtocolError as error:
            return self._error(error.code, error.message, now)
        if isinstance(message, Ping):
            if not self._pings.take(now):  # a pong costs the server as much as an input: bounded too
                return self._error("rate_limited", "too many pings; this one was not answered", now)
            return [Send({"t": "pong", "id": message.id})]
        if self.state == AWAITING_AUTH:
            if not isinstance(message, Auth):
                return self._error("not_authenticated", "send auth first", now)
            self.state = JOINING
            return [Authenticate(message)]
        if self.state == JOINING:
            return self._error("not_ready", "wait for welcome", now,
                               seq=message.seq if isinstance(message, Input) else None)
        if isinstance(message, Auth):
            return self._error("already_authenticated", "this connection is authenticated", now)
        if isinstance(message, Leave):
            self.state = CLOSED
            return [LeaveMatch(), Close(protocol.CLOSE_NORMAL, "left the match")]
        # an Input
        if self.role != PLAYER:
            return self._error("forbidden", "spectators do not send inputs", now, seq=message.seq)
        if not self._inputs.take(now):
            return self._error("rate_limited", "too many inputs; this one was not accepted", now, seq=message.seq)
        return [Submit(message)]

    def admitted(self, role: str) -> None:
        if self.state == JOINING:
            self.state = ACTIVE
            self.role = role

    def close(self, code: int, reason: str) -> list[Action]:
        if self.state == CLOSED:
            return []
        self.state = CLOSED
        return [Close(code, reason)]

    def _error(self, code: str, message: str, now: float, seq: int | None = None) -> list[Action]:
        if not self._errors.take(now):
            return self.close(protocol.CLOSE_POLICY, "too many errors")
        return [Send(protocol.error_frame(code, message, seq))]
