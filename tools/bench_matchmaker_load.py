"""A load process of `arbiter bench matchmaker`: `python -m tools.bench_matchmaker_load SPEC.json`.

It opens its HTTP/1.1 keep-alive connections (trio sockets and a minimal HTTP/1.1 client: light
enough that one core drives a server on another), prints `ready`, waits for a `go` line on stdin,
runs its part, and prints `result {json}`. The spec (JSON) says which part:

- `{"part": "api", "host", "port", "queue", "connections", "players": [[token, skill], ...]}`:
  every connection takes its share of the players and, for each, creates a ticket (POST
  /v1/tickets) then reads it (GET /v1/tickets/{id}). Result: request counts, the wall-clock
  (time.time) start and end, request latencies, and this process's CPU seconds.
- `{"part": "assign", "host", "port", "queue", "rounds", "settle_s", "first_skill", "teams":
  [[[token, player_id], ...], ...]}`: a runner task per team of N players (a connection each),
  each runner with its own skill from `first_skill` on (the queue's skill window is 0 wide, so
  only a runner's own tickets match each other). A round: N - 1 players queue and long-poll;
  after `settle_s` the last player queues; from the moment that POST returned until every
  player's long-poll returned `matched` is one assignment time. Rounds are shared out between
  the runners, which run at once.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import trio

RECEIVE_BYTES = 65536
LONG_POLL_S = 10.0
REQUEST_TIMEOUT_S = 30.0


class HTTPFailed(Exception):
    """The server answered with an unexpected status, or the connection broke."""


class Connection:
    """One HTTP/1.1 keep-alive connection: one request at a time, answered in full.

    Requests are written by hand and responses read with a minimal parser (status line, headers,
    a Content-Length body), not h11: h11 cost the load processes about 0.1 ms of CPU per request,
    which at a few thousand requests a second would make the load, not the server, the limit."""

    def __init__(self, stream: trio.SocketStream, host: str, port: int):
        self.stream, self.address = stream, (host, port)
        self.host = f"{host}:{port}".encode()
        self.buffer = b""
        self.reconnects = 0

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        return cls(await trio.open_tcp_stream(host, port), host, port)

    async def request(self, method: bytes, target: bytes, token: bytes, body: bytes | None = None) -> tuple[int, Any]:
        """(status, decoded JSON body)."""
        head = b"%s %s HTTP/1.1\r\nhost: %s\r\nauthorization: Bearer %s\r\n" % (method, target, self.host, token)
        if body is not None:
            head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        await self.stream.send_all(head + b"\r\n" + (body or b""))
        status, close, payload = await self._response()
        if close:  # the server ends this connection: open another for the next request
            await self.stream.aclose()
            self.stream = await trio.open_tcp_stream(*self.address)
            self.buffer = b""
            self.reconnects += 1
        return status, json.loads(payload) if payload else None

    async def _response(self) -> tuple[int, bool, bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._read()
        lines = self.buffer[:end].split(b"\r\n")
        self.buffer = self.buffer[end + 4:]
        try:
            status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise HTTPFailed(f"not an HTTP response: {lines[0][:80]!r}") from None
        length, close = None, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = b"close" in value.lower()
            elif name == b"transfer-encoding":
                raise HTTPFailed("a chunked response: this client reads Content-Length bodies only")
        if length is None:
            raise HTTPFailed("a response without Content-Length")
        while len(self.buffer) < length:
            await self._read()
        payload, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, close, payload

    async def _read(self) -> None:
        received = await self.stream.receive_some(RECEIVE_BYTES)
        if not received:
            raise HTTPFailed("the server closed the connection")
        self.buffer += received

    async def aclose(self) -> None:
        await self.stream.aclose()


def ticket_body(queue: str, skill: float) -> bytes:
    return json.dumps({"queue": queue, "numbers": {"skill": skill}}).encode()


# -- part "api": ticket create plus status ------------------------------------------------------


async def run_api(spec: dict, go: trio.Event, result: dict) -> None:
    queue, players = spec["queue"], spec["players"]
    connections = [await Connection.open(spec["host"], spec["port"]) for _ in range(spec["connections"])]
    latencies: list[float] = []
    errors: dict[str, int] = {}
    counts = {"requests": 0, "tickets": 0}

    async def drive(conn: Connection, share: list) -> None:
        clock = time.perf_counter
        for token, skill in share:
            token = token.encode()
            started = clock()
            status, created = await conn.request(b"POST", b"/v1/tickets", token, ticket_body(queue, skill))
            latencies.append(clock() - started)
            counts["requests"] += 1
            if status != 201:
                errors[f"POST {status}"] = errors.get(f"POST {status}", 0) + 1
                continue
            counts["tickets"] += 1
            started = clock()
            status, _ = await conn.request(b"GET", f"/v1/tickets/{created['ticket_id']}".encode(), token)
            latencies.append(clock() - started)
            counts["requests"] += 1
            if status != 200:
                errors[f"GET {status}"] = errors.get(f"GET {status}", 0) + 1

    print("ready", flush=True)
    await go.wait()
    cpu_before, started = time.process_time(), time.time()
    async with trio.open_nursery() as nursery:
        for number, conn in enumerate(connections):
            nursery.start_soon(drive, conn, players[number::len(connections)])
    ended = time.time()
    result.update(counts, started=started, ended=ended, cpu_s=time.process_time() - cpu_before,
                  latencies_ms=[round(s * 1000, 3) for s in latencies], errors=errors,
                  reconnects=sum(conn.reconnects for conn in connections))
    for conn in connections:
        await conn.aclose()


# -- part "assign": from the last needed ticket to every assignment delivered ------------------


async def run_assign(spec: dict, go: trio.Event, result: dict) -> None:
    queue, rounds, settle_s = spec["queue"], spec["rounds"], spec["settle_s"]
    teams = spec["teams"]
    runners = [[(await Connection.open(spec["host"], spec["port"]), token.encode(), player)
                for token, player in team] for team in teams]
    times_ms: list[float] = []
    errors: dict[str, int] = {}

    def error(kind: str) -> None:
        errors[kind] = errors.get(kind, 0) + 1

    async def create(conn: Connection, token: bytes, skill: float) -> dict:
        status, ticket = await conn.request(b"POST", b"/v1/tickets", token, ticket_body(queue, skill))
        if status != 201:
            raise HTTPFailed(f"POST /v1/tickets: {status} {ticket}")
        return ticket

    async def until_matched(conn: Connection, token: bytes, ticket: dict, done: dict, player: str) -> None:
        while ticket["status"] == "queued":
            target = f"/v1/tickets/{ticket['ticket_id']}?wait_s={LONG_POLL_S:g}&version={ticket['version']}"
            status, ticket = await conn.request(b"GET", target.encode(), token)
            if status != 200:
                raise HTTPFailed(f"GET {target}: {status} {ticket}")
        done[player] = (time.perf_counter(), ticket)

    async def one_round(team: list, skill: float) -> None:
        first, (last_conn, last_token, last_player) = team[:-1], team[-1]
        done: dict[str, tuple[float, dict]] = {}
        async with trio.open_nursery() as nursery:
            for conn, token, player in first:
                ticket = await create(conn, token, skill)
                nursery.start_soon(until_matched, conn, token, ticket, done, player)
            await trio.sleep(settle_s)  # the long-polls are parked at the server
            ticket = await create(last_conn, last_token, skill)
            posted = time.perf_counter()
            nursery.start_soon(until_matched, last_conn, last_token, ticket, done, last_player)
        matches = {ticket["assignment"]["match_id"] for _at, ticket in done.values()}
        if len(matches) != 1:
            error("players of one round in different matches")
            return
        times_ms.append((max(at for at, _ticket in done.values()) - posted) * 1000)

    async def runner(skill: float, team: list, my_rounds: int) -> None:
        for _ in range(my_rounds):
            try:
                with trio.fail_after(REQUEST_TIMEOUT_S):
                    await one_round(team, skill)
            except (HTTPFailed, trio.TooSlowError, KeyError, TypeError) as failure:
                error(type(failure).__name__)
                print(f"round failed: {failure}", file=sys.stderr, flush=True)
                return  # the team's tickets may be in any state: this runner stops

    print("ready", flush=True)
    await go.wait()
    cpu_before, started = time.process_time(), time.time()
    async with trio.open_nursery() as nursery:
        for number, team in enumerate(runners):
            share = rounds // len(runners) + (1 if number < rounds % len(runners) else 0)
            nursery.start_soon(runner, float(spec["first_skill"] + number), team, share)
    ended = time.time()
    result.update(started=started, ended=ended, cpu_s=time.process_time() - cpu_before,
                  assignment_ms=[round(ms, 3) for ms in times_ms], errors=errors)
    for team in runners:
        for conn, _token, _player in team:
            await conn.aclose()


async def main(spec: dict) -> None:
    go = trio.Event()
    result: dict = {}

    async def wait_for_go() -> None:
        line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
        if line.strip() != "go":
            raise SystemExit(f"expected 'go', got {line!r}")
        go.set()

    part = {"api": run_api, "assign": run_assign}[spec["part"]]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_go)
        await part(spec, go, result)
    print("result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    with open(sys.argv[1]) as file:
        trio.run(main, json.load(file))
