"""The Python client: create or join a match over HTTP, play it over WebSocket, resume after drops.

    async with ArbiterHTTP("http://127.0.0.1:7350") as http:
        match = await http.create_match("arena")
        grant = await http.join_token(match["match_id"], "alice")
    async with MatchClient(grant["ws_url"], grant["token"]) as client:
        seq = await client.send_input({"dx": 1, "dy": 0})
        while True:
            message = await client.receive()   # Welcome, State, Event or Error
            if isinstance(message, State) and client.acked >= seq:
                break

The client numbers inputs itself (`seq` from 1) and keeps every input the server has not yet
acknowledged. When the connection drops for a reason worth retrying (server restart, network,
overload), `receive` reconnects with backoff, resumes from the last tick it saw, resends the
unacknowledged inputs (the server drops any it already has) and returns the new `Welcome`.

Inputs go out in `seq` order through one queue, paced to the input limits the server announced in
its welcome (clients/pacing.py), so the server never refuses one with `rate_limited`: not after a
long drop (hundreds of resends), not when a burst of inputs reaches it bunched together. An input
the pacer holds back is sent by a background task as soon as it may (`send_input` has returned its
seq by then); the pacer waits for acknowledgements, which `receive` reads, so keep receiving.
"""

from __future__ import annotations

import json
import random
from collections import OrderedDict, deque
from contextlib import AsyncExitStack
from typing import Any

import attrs
import httpx
import msgpack
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, connect_websocket_url

from clients.pacing import InputPacer

JSON_SUBPROTOCOL = "arbiter.json.v1"
MSGPACK_SUBPROTOCOL = "arbiter.msgpack.v1"
# Close codes after which reconnecting cannot help (see docs/protocol.md).
FINAL_CLOSE_CODES = {1000, 1002, 1007, 1008, 1009, 4001, 4004, 4005, 4009, 4011, 4012, 4013}
# Error codes that refuse an input for good. Inputs refused with another code stay kept until an
# acknowledgement passes them (a resend after a reconnect that comes first may still count):
# not_ready, not_started, and rate_limited (also listed in `MatchClient.rate_limited`).
REFUSED_INPUT_CODES = {"invalid_input", "not_seated", "forbidden"}


@attrs.frozen
class Welcome:
    match_id: str
    player: str
    role: str
    tick: int
    tick_rate: int
    last_seq: int
    acks: dict[str, int]
    state: Any
    resumed: bool = False
    limits: dict[str, Any] = attrs.Factory(dict)  # the connection's limits, as the server announced them


@attrs.frozen
class State:
    tick: int
    acks: dict[str, int]
    state: Any


@attrs.frozen
class Event:
    tick: int
    kind: str
    data: Any


@attrs.frozen
class Error:
    code: str
    message: str
    seq: int | None = None


class MatchClosed(Exception):
    """The server closed the connection for good (the match ended, a refusal, a bad token)."""

    def __init__(self, code: int | None, reason: str | None):
        super().__init__(f"closed with {code}: {reason}")
        self.code = code
        self.reason = reason


class MatchmakingFailed(Exception):
    """A ticket ended without a match: expired (max_wait, no_show) or cancelled."""

    def __init__(self, status: str, reason: str | None):
        super().__init__(f"ticket {status}: {reason}")
        self.status, self.reason = status, reason


class ArbiterHTTP:
    """The HTTP API. Errors raise `httpx.HTTPStatusError`; the body is problem+json.

    `admin_token` goes with the admin calls (create_match, join_token); `player_token` (from your
    login service, or `guest()` in development mode) with the matchmaking calls."""

    def __init__(self, base_url: str, admin_token: str | None = None, timeout: float = 10.0,
                 player_token: str | None = None):
        headers = {"authorization": f"Bearer {admin_token}"} if admin_token else {}
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout)
        self.player_token = player_token
        self.player_id: str | None = None

    async def __aenter__(self) -> ArbiterHTTP:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, body: Any = None, *, player: bool = False,
                    params: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        headers = None
        if player:
            if self.player_token is None:
                raise RuntimeError("no player token: pass player_token=... or call guest() first")
            headers = {"authorization": f"Bearer {self.player_token}"}
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        response = await self._http.request(method, path, json=body, headers=headers, params=params, **extra)
        response.raise_for_status()
        return response.json()

    # -- matchmaking (player token) ----------------------------------------------------------------

    async def guest(self) -> str:
        """Development mode: become a new guest player; returns the player id."""
        answer = await self._call("POST", "/v1/auth/guest")
        self.player_token, self.player_id = answer["token"], answer["player_id"]
        return answer["player_id"]

    async def create_ticket(self, queue: str, *, party: list[str] | None = None, numbers: dict[str, float] | None = None,
                            strings: dict[str, str] | None = None, string_sets: dict[str, list[str]] | None = None,
                            latencies: dict[str, float] | None = None) -> dict:
        """A ticket: queued at once for you alone; with `party` (every member, you included), pending until
        each other member accepts it (`accept_ticket`)."""
        body: dict[str, Any] = {"queue": queue}
        for name, value in (("party", party), ("numbers", numbers), ("strings", strings),
                            ("string_sets", string_sets), ("latencies", latencies)):
            if value is not None:
                body[name] = value
        return await self._call("POST", "/v1/tickets", body, player=True)

    async def ticket(self, ticket_id: str, *, wait_s: float = 0.0, version: int | None = None) -> dict:
        params: dict[str, Any] = {"wait_s": f"{max(wait_s, 0.0):.3f}"}  # plain decimals: str(1e-05) is refused
        if version is not None:
            params["version"] = version
        return await self._call("GET", f"/v1/tickets/{ticket_id}", player=True, params=params, timeout=wait_s + 10)

    async def cancel_ticket(self, ticket_id: str) -> dict:
        """Cancel a queued or pending ticket you are in (a party ticket you have not accepted: decline it)."""
        return await self._call("DELETE", f"/v1/tickets/{ticket_id}", player=True)

    async def accept_ticket(self, ticket_id: str) -> dict:
        """Accept a party ticket that names you (again: no change); the last acceptance queues it."""
        return await self._call("POST", f"/v1/tickets/{ticket_id}/accept", player=True)

    async def list_tickets(self, *, status: str | None = None, limit: int | None = None) -> list[dict]:
        """Your tickets that the matchmaker keeps, newest first: invitations are the `pending` ones you are
        not `accepted` in. `status` filters; `limit` 1 to 100 (default 20)."""
        params = {name: value for name, value in (("status", status), ("limit", limit)) if value is not None}
        return await self._call("GET", "/v1/tickets", player=True, params=params)

    async def matchmake(self, queue: str, *, timeout_s: float = 300.0, **properties: Any) -> dict:
        """Queue a ticket and wait (long-poll) until it is matched: its assignment (match_id,
        ws_url, token, ...). With `party=[...]` it waits for the others to accept it first. Raises
        `MatchmakingFailed` if it expires (a party not accepted in time: `not_accepted`) or is cancelled
        (declined); on timeout the ticket is cancelled and `trio.TooSlowError` raised."""
        ticket = await self.create_ticket(queue, **properties)
        with trio.move_on_after(timeout_s):
            while ticket["status"] in ("pending", "queued"):
                ticket = await self.ticket(ticket["ticket_id"], wait_s=min(30.0, timeout_s),
                                           version=ticket["version"])
        if ticket["status"] == "matched":
            return ticket["assignment"]
        if ticket["status"] in ("pending", "queued"):
            with trio.CancelScope(shield=True):
                try:
                    await self.cancel_ticket(ticket["ticket_id"])
                except httpx.HTTPStatusError:
                    pass  # matched or placed meanwhile
            raise trio.TooSlowError(f"not matched within {timeout_s} s")
        raise MatchmakingFailed(ticket["status"], ticket.get("reason"))

    async def create_custom(self, game: str, params: dict[str, Any] | None = None, *, private: bool = False) -> dict:
        """An open match that others join by its code: match_id, code, ws_url and your token."""
        return await self._call("POST", "/v1/custom", {"game": game, "params": params or {}, "private": private},
                                player=True)

    async def join_custom(self, code: str) -> dict:
        return await self._call("POST", "/v1/custom/join", {"code": code}, player=True)

    async def matches(self, **filters: Any) -> list[dict]:
        """Unfinished matches (filters: game, queue, joinable, label=["key:value", ...], limit)."""
        return await self._call("GET", "/v1/matches", params=filters)

    # -- admin ----------------------------------------------------------------------------------

    async def create_match(self, game: str, params: dict[str, Any] | None = None, name: str | None = None) -> dict:
        body: dict[str, Any] = {"game": game, "params": params or {}}
        if name is not None:
            body["name"] = name
        return await self._call("POST", "/v1/matches", body)

    async def join_token(self, match_id: str, player_id: str, role: str = "player") -> dict:
        return await self._call("POST", f"/v1/matches/{match_id}/tokens", {"player_id": player_id, "role": role})

    async def match(self, match_id: str) -> dict:
        return await self._call("GET", f"/v1/matches/{match_id}")


class MatchClient:
    def __init__(self, ws_url: str, token: str, *, fmt: str = "json", state_type: type | None = None,
                 reconnect: bool = True, max_reconnect_s: float = 30.0, connect_timeout: float = 10.0,
                 attachment: Any = None):
        if fmt not in ("json", "msgpack"):
            raise ValueError("fmt is json or msgpack")
        self.ws_url = ws_url
        self.token = token
        self.fmt = fmt
        self.state_type = state_type
        self.reconnect = reconnect
        self.max_reconnect_s = max_reconnect_s
        self.connect_timeout = connect_timeout
        self.attachment = attachment  # sent with every auth; kept with the connection on the server
        self.player: str | None = None
        self.tick = -1  # the last tick seen, for resume
        self.acked = 0  # this player's last acknowledged seq
        self.next_seq = 1
        self.unacked: OrderedDict[int, Any] = OrderedDict()
        self.reconnects = 0
        # Inputs the server refused with rate_limited: not applied, and never will be (see
        # docs/protocol.md). The pacing keeps this empty against a server that announces its limits.
        self.rate_limited: list[int] = []
        self._ws: WebSocketConnection | None = None
        self._stack = AsyncExitStack()
        self._nursery: trio.Nursery | None = None
        self._pending: list[Any] = []
        # Sending, per connection: the inputs to send on it, in seq order (resends first, then new
        # ones); those sent on it and not answered yet (acknowledged, or refused with their seq);
        # the pacer for its announced limits. Only the queue's head is ever sent, under the lock.
        self._unsent: deque[int] = deque()
        self._in_flight: deque[int] = deque()
        self._pacer: InputPacer | None = None
        self._send_lock = trio.Lock()
        self._wake = trio.Event()  # set when sending may go on: an answer, a new connection
        self._leave = False  # leave() was called: send `leave` after the queued inputs

    async def __aenter__(self) -> MatchClient:
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        self._nursery.start_soon(self._send_in_background)
        try:
            self._pending.append(await self._connect(resume=False))
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        await self._stack.aclose()

    async def close(self, code: int = 1000) -> None:
        if self._ws is not None:
            with trio.move_on_after(2):
                await self._ws.aclose(code)
            self._ws = None

    # -- sending ------------------------------------------------------------------------------

    async def send_input(self, data: Any) -> int:
        """Send an input; returns its seq. It is kept until acknowledged and resent after a resume.

        It goes out after every earlier input, when the pacer allows: at once, or after a wait for a
        token (at most 1/54 s at the default limits: a caller sending faster than the limit is
        slowed down). While the window is full (inputs awaiting acknowledgement) or the client is
        reconnecting, it is queued and sent in the background."""
        seq = self.next_seq
        self.next_seq += 1
        self.unacked[seq] = data
        self._unsent.append(seq)
        try:
            await self._send_queued(until=seq)
        finally:
            if self._unsent:
                self._wake.set()
        return seq

    async def ping(self, ping_id: Any = None) -> None:
        await self._send_quietly({"t": "ping", "id": ping_id})

    async def leave(self) -> None:
        """Give up the seat for good; the server closes the connection with 1000. Sent after the
        inputs still queued, so that they count."""
        self._leave = True
        await self._send_queued(until=None, wait=False)

    async def _send_quietly(self, frame: dict) -> None:
        """Send if connected; after a drop, `receive` reconnects and resends unacked inputs."""
        if self._ws is None:
            return
        try:
            await self._ws.send_message(self._encode(frame))
        except ConnectionClosed:
            pass

    async def _send_queued(self, *, until: int | None, wait: bool = True) -> None:
        """Send the queue's head while the pacer allows, up to seq `until` (None: all), then a
        requested leave. Stops when the window is full or there is no connection (the background
        sender goes on when that changes); waits for tokens if `wait`, else leaves that to it."""
        unsent = self._unsent  # one deque for the client's life: a new connection refills it
        async with self._send_lock:
            while unsent and (until is None or unsent[0] <= until):
                seq = unsent[0]
                if seq not in self.unacked:  # acknowledged by a welcome, or refused, meanwhile
                    unsent.popleft()
                    continue
                ws, pacer = self._ws, self._pacer
                if ws is None or pacer is None:
                    return  # reconnecting: the welcome queues it again
                now = trio.current_time()
                delay = pacer.delay(now, len(self._in_flight))
                if delay is None:
                    return  # the window is full: an acknowledgement wakes the background sender
                if delay > 0:
                    if not wait:
                        self._wake.set()
                        return
                    await trio.sleep(delay)
                    continue  # the connection, the queue and the window may all have changed
                pacer.sent(now)
                unsent.popleft()
                self._in_flight.append(seq)
                try:
                    await ws.send_message(self._encode({"t": "input", "seq": seq, "data": self.unacked[seq]}))
                except ConnectionClosed:
                    return  # receive() reconnects; the welcome queues what is unacknowledged again
            if self._leave and not unsent and self._ws is not None:
                self._leave = False
                await self._send_quietly({"t": "leave"})

    async def _send_in_background(self) -> None:
        """Send what `send_input` left queued, whenever sending may go on."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            await self._send_queued(until=None)

    def _answered(self, seq: int | None = None) -> None:
        """Inputs in flight were answered: acknowledged up to `self.acked`, or `seq` refused."""
        in_flight = self._in_flight
        while in_flight and in_flight[0] <= self.acked:
            in_flight.popleft()
        if seq is not None and seq in in_flight:
            in_flight.remove(seq)
        if self._unsent or self._leave:
            self._wake.set()

    # -- receiving ----------------------------------------------------------------------------

    async def receive(self) -> Welcome | State | Event | Error:
        """The next message from the server, reconnecting (and resuming) if the connection drops."""
        if self._pending:
            return self._pending.pop(0)
        while True:
            if self._ws is None:
                return await self._reconnect(None, "not connected")
            try:
                raw = await self._ws.get_message()
            except ConnectionClosed as closed:
                reason = closed.reason
                return await self._reconnect(reason.code if reason else None, reason.reason if reason else None)
            message = self._decode(raw)
            if message is not None:
                return message

    async def receive_state(self) -> State:
        """The next state frame (events and errors in between are skipped: use `receive` to see them)."""
        while True:
            message = await self.receive()
            if isinstance(message, State):
                return message

    def _decode(self, raw: str | bytes) -> Welcome | State | Event | Error | None:
        body = json.loads(raw) if isinstance(raw, str) else msgpack.unpackb(raw, raw=False)
        kind = body.get("t")
        if kind == "state":
            self.tick = body["tick"]
            self._acknowledge(body["acks"])
            return State(body["tick"], body["acks"], self._state(body["state"]))
        if kind == "event":
            return Event(body["tick"], body["kind"], body.get("data"))
        if kind == "error":
            seq = body.get("seq")
            if seq is not None:
                if body["code"] in REFUSED_INPUT_CODES:
                    self.unacked.pop(seq, None)  # refused for good: resending it would be refused again
                elif body["code"] == "rate_limited":
                    self.rate_limited.append(seq)
                self._answered(seq)
            return Error(body["code"], body["message"], seq)
        if kind == "welcome":
            self.tick = body["tick"]
            self.player = body["player"]
            self._acknowledge(body["acks"])
            # A seat that already has inputs (a restarted client): number on from the server's count.
            self.next_seq = max(self.next_seq, body["last_seq"] + 1)
            limits = body.get("limits")
            return Welcome(body["match"], body["player"], body["role"], body["tick"], body["tick_rate"],
                           body["last_seq"], body["acks"], self._state(body["state"]),
                           limits=limits if isinstance(limits, dict) else {})
        return None  # pong, or a message kind this client does not know yet

    def _acknowledge(self, acks: dict[str, int]) -> None:
        if self.player is None:
            return
        acked = acks.get(self.player, 0)
        if acked > self.acked:
            self.acked = acked
        while self.unacked and next(iter(self.unacked)) <= self.acked:
            self.unacked.popitem(last=False)
        self._answered()

    def _state(self, state: Any) -> Any:
        if self.state_type is None:
            return state
        from gameserver.canonical import converter

        return converter.structure(state, self.state_type)

    # -- connecting ---------------------------------------------------------------------------

    async def _connect(self, *, resume: bool) -> Welcome:
        assert self._nursery is not None
        subprotocol = JSON_SUBPROTOCOL if self.fmt == "json" else MSGPACK_SUBPROTOCOL
        with trio.fail_after(self.connect_timeout):
            ws = await connect_websocket_url(self._nursery, self.ws_url, subprotocols=[subprotocol],
                                             max_message_size=1 << 20)
            auth: dict[str, Any] = {"t": "auth", "token": self.token}
            if self.attachment is not None:
                auth["attachment"] = self.attachment
            if resume and self.tick >= 0:
                auth["resume_tick"] = self.tick
            try:
                await ws.send_message(self._encode(auth))
                while True:
                    message = self._decode(await ws.get_message())
                    if isinstance(message, Welcome):
                        break
                    if isinstance(message, Error):  # the server refused our auth frame: retrying cannot help
                        raise MatchClosed(1008, f"{message.code}: {message.message}")
            except ConnectionClosed as closed:
                reason = closed.reason
                raise MatchClosed(reason.code if reason else None, reason.reason if reason else None) from None
        # Queue what the server has not processed, in order, for the new connection, and only then
        # publish it, in one step: every input goes out through the queue, head first, so an input
        # sent meanwhile by another task goes after the resends and cannot overtake them (the
        # server would then drop them as duplicates). The pacer follows the welcome's limits: the
        # resends of a long drop are spread out, not refused past the burst.
        self._unsent.clear()
        self._unsent.extend(seq for seq in self.unacked if seq > message.last_seq)
        self._in_flight.clear()
        self._pacer = InputPacer.from_welcome(message.limits, trio.current_time())
        self._ws = ws
        self._wake.set()
        return attrs.evolve(message, resumed=resume)

    async def _reconnect(self, code: int | None, reason: str | None) -> Welcome:
        self._ws = None
        if not self.reconnect or code in FINAL_CLOSE_CODES:
            raise MatchClosed(code, reason)
        deadline = trio.current_time() + self.max_reconnect_s
        delay = 0.05
        while True:
            try:
                welcome = await self._connect(resume=True)
                self.reconnects += 1
                return welcome
            except MatchClosed as closed:
                if closed.code in FINAL_CLOSE_CODES:
                    raise
                last: Exception = closed
            except (OSError, HandshakeError, trio.TooSlowError) as error:
                last = error
            if trio.current_time() + delay > deadline:
                raise MatchClosed(code, f"could not reconnect: {last}")
            await trio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 2.0)

    def _encode(self, frame: dict) -> str | bytes:
        if self.fmt == "json":
            return json.dumps(frame, separators=(",", ":"))
        return msgpack.packb(frame, use_bin_type=True)
