"""One process of `arbiter soak`'s bots: many bots in one trio loop.

    python -m tools.soak_worker SPEC_FILE

SPEC_FILE is JSON: {"url", "admin_token", "game", "queue", "first", "count", "seed",
"churn_per_min", "period_s"}. Bot `first + i` (i < count) starts (i + first) / 100 s into the run
and becomes a guest player, then until the end: queues a ticket, long-polls it, plays the match it
is given (`clients.bots.play`, dropping its connection at the churn rate), has its acknowledged
inputs checked against the server's input log (`tools.soak_check`, as soon as its match is over),
and queues again.

The driver (tools/soak.py) and this process talk in lines:

    stdout  ready {}                      the process is up
    stdin   go START END                  the run, in time.time() seconds
    stdout  progress {...}                every second: gauges, running totals, recent latencies
    stdout  result {...}                  once every bot stopped and every claim was checked

At END bots in a queue cancel their ticket; bots in a match stop sending, wait up to 1 s for
their last acknowledgements, and close.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter
from typing import Any

import attrs
import httpx
import trio
from trio_websocket import HandshakeError

from clients.bots import STRATEGIES, Meter, SharedHTTP, play, shared_client
from clients.client import MatchClient, MatchClosed
from tools.soak_check import CheckFailed, Claim, check

LONG_POLL_S = 30.0
PROGRESS_S = 1.0
CHECKERS = 4  # concurrent input-log reads per process
PAUSE_S = 1.0  # after a failed request, before trying again
JOIN_WITHIN_S = 25.0  # keep trying to join an assigned match this long (seat holds are 30 s by default)
JOIN_RETRY_PAUSE_S = 0.5
CONNECT_TIMEOUT_S = 10.0  # one attempt to connect and be welcomed
REQUEUE_WAIT_S = 5.0  # for a ticket to be put back in the queue after its match was cancelled
CHECK_ATTEMPTS = 3  # reads of an input log before the check counts as failed
GO_TIMEOUT_S = 300.0
HTTP_TIMEOUT_S = 30.0
SKILL = 1000  # every bot the same: skill windows never keep bots apart
REGION = "local"  # a latency to one region, so queues with a region rule accept the tickets
EXAMPLES = 3  # kept per error kind, and of lost inputs
SPAWN_PER_S = 100  # bot i starts i / SPAWN_PER_S seconds into the run: no stampede of connections


def say(word: str, body: dict) -> None:
    sys.stdout.write(f"{word} {json.dumps(body, separators=(',', ':'))}\n")
    sys.stdout.flush()


class Worker:
    def __init__(self, spec: dict, http: httpx.AsyncClient, admin: httpx.AsyncClient, start: float, end: float):
        self.spec = spec
        self.http, self.admin = http, admin
        self.start_at, self.stop_at = start, end  # trio time
        self.strategy = STRATEGIES[spec["game"]]
        self.meter = Meter()
        self.stop = trio.Event()
        self.errors: Counter[str] = Counter()
        self.error_examples: dict[str, list[str]] = {}
        self.info: Counter[str] = Counter()  # expected happenings, reported but not errors
        self.joined: set[str] = set()  # matches a bot of this process was admitted to
        self.ended: set[str] = set()  # matches that ended (the end event, or 4012 after a drop)
        self.in_match = self.queued = 0  # gauges
        self.drops = 0
        self.lost = self.seats_checked = 0
        self.played = 0  # ended matches whose first player (by id) is a bot of this process: for progress
        self.lost_examples: list[dict] = []
        self.cpu_start = self.cpu_end = 0.0
        self.claims_in, self.claims_out = trio.open_memory_channel[Claim](float("inf"))

    def error(self, kind: str, example: str | None = None) -> None:
        self.errors[kind] += 1
        examples = self.error_examples.setdefault(kind, [])
        if example and len(examples) < EXAMPLES:
            examples.append(example[:300])

    # -- the run ---------------------------------------------------------------------------------

    async def run(self) -> None:
        await trio.sleep_until(self.start_at)
        self.cpu_start = time.process_time()
        async with trio.open_nursery() as background:
            background.start_soon(self.report_progress)
            background.start_soon(self.stop_at_end)
            async with trio.open_nursery() as checkers:
                for _ in range(CHECKERS):
                    checkers.start_soon(self.check_claims, self.claims_out.clone())
                await self.claims_out.aclose()
                async with self.claims_in, trio.open_nursery() as bots:
                    for i in range(self.spec["count"]):
                        bots.start_soon(self.bot_life, self.spec["first"] + i)
            background.cancel_scope.cancel()

    async def stop_at_end(self) -> None:
        await trio.sleep_until(self.stop_at)
        self.cpu_end = time.process_time()
        self.stop.set()

    async def pause(self, seconds: float = PAUSE_S) -> None:
        with trio.move_on_after(seconds):
            await self.stop.wait()

    async def bot_life(self, index: int) -> None:
        rng = random.Random(self.spec["seed"] * 1_000_003 + index)
        http = SharedHTTP(self.http)
        with trio.move_on_at(self.start_at + index / SPAWN_PER_S):
            await self.stop.wait()
        while not self.stop.is_set():
            try:
                await http.guest()
                break
            except httpx.HTTPError as error:
                self.error(f"guest_{http_kind(error)}", str(error))
                await self.pause()
        held = Held()
        while not self.stop.is_set():
            try:
                assignment = await self.matchmake(http, held)
                if assignment is None:
                    continue
                held.played_match = assignment["match_id"]
                if await self.play_match(assignment, rng) != "cancelled":
                    held.ticket_id = None  # else the server puts the ticket back in the queue: poll it again
            except (httpx.HTTPError, MatchmakingError) as error:
                if isinstance(error, httpx.HTTPStatusError):
                    held.ticket_id = None  # refused (404 after a restart, ...): a new ticket next time
                self.error(error.kind if isinstance(error, MatchmakingError) else f"http_{http_kind(error)}",
                           str(error))
                await self.pause()
            except Exception as error:  # a bug in a bot or in the client: count it, go on
                self.error(f"bot_exception_{leaf_names(error)}", repr(error))
                await self.pause()

    async def matchmake(self, http: SharedHTTP, held: Held) -> dict | None:
        """The assignment of a ticket: the held one if it is still queued or matched, else a new one.
        None if the run ended first, or the ticket expired waiting (a left-over bot)."""
        ticket = None
        if held.ticket_id is not None:
            ticket = await http.ticket(held.ticket_id)
            if ticket["status"] == "matched" and ticket["assignment"]["match_id"] == held.played_match:
                # its match was cancelled, and the matchmaker has not put it back in the queue yet
                ticket = await http.ticket(held.ticket_id, wait_s=REQUEUE_WAIT_S, version=ticket["version"])
            usable = ticket["status"] == "queued" or (
                ticket["status"] == "matched" and ticket["assignment"]["match_id"] != held.played_match)
            if not usable:
                ticket = held.ticket_id = None
        if ticket is None:
            ticket = await http.create_ticket(self.spec["queue"], numbers={"skill": SKILL}, latencies={REGION: 1.0})
            held.ticket_id = ticket["ticket_id"]
        self.queued += 1
        try:
            with trio.move_on_at(self.stop_at):
                while ticket["status"] == "queued":
                    ticket = await http.ticket(ticket["ticket_id"], wait_s=LONG_POLL_S, version=ticket["version"])
        finally:
            self.queued -= 1
        status, reason = ticket["status"], ticket.get("reason")
        if status == "matched":
            return ticket["assignment"]
        held.ticket_id = None
        if status == "queued":  # the run is over
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await http.cancel_ticket(ticket["ticket_id"])
                except httpx.HTTPError:
                    pass  # matched or being placed meanwhile: the match goes on without us
            return None
        if status == "expired" and reason == "max_wait":
            self.info["tickets_expired_max_wait"] += 1  # a leftover bot: it queues again
            return None
        raise MatchmakingError(f"ticket_{status}" + (f"_{reason}" if status == "expired" else ""),
                               f"ticket {ticket['ticket_id']} {status}: {reason}")

    async def join(self, assignment: dict) -> MatchClient | None:
        """A client admitted to the assigned match, trying again for up to JOIN_WITHIN_S when the
        connection fails or is slow (an overloaded server); None (an error counted) if it cannot."""
        deadline = trio.current_time() + JOIN_WITHIN_S
        while True:
            client = MatchClient(assignment["ws_url"], assignment["token"],
                                 connect_timeout=max(1.0, min(CONNECT_TIMEOUT_S, deadline - trio.current_time())))
            try:
                await client.__aenter__()
                return client
            except MatchClosed as closed:
                self.error(f"join_closed_{closed.code}", f"{assignment['match_id']}: {closed}")
                return None
            except (OSError, HandshakeError, trio.TooSlowError) as error:
                if trio.current_time() >= deadline or self.stop.is_set():
                    self.error(f"join_failed_{type(error).__name__}", f"{assignment['match_id']}: {error!r}")
                    return None
                self.info["join_retries"] += 1
            await self.pause(JOIN_RETRY_PAUSE_S)

    async def play_match(self, assignment: dict, rng: random.Random) -> str:
        bot = self.strategy(seed=rng.randrange(1 << 32), period_s=self.spec.get("period_s"))
        client = await self.join(assignment)
        if client is None:
            return "refused"
        self.in_match += 1
        try:
            outcome = await play(client, bot, meter=self.meter, stop=self.stop,
                                 drops_per_min=self.spec["churn_per_min"])
        finally:
            self.in_match -= 1
            await client.__aexit__(None, None, None)
        self.drops += outcome.drops
        match_id = outcome.match_id or assignment["match_id"]
        self.joined.add(match_id)
        if outcome.status in ("ended", "over"):
            self.ended.add(match_id)
            self.played += bool(outcome.players) and outcome.player == min(outcome.players)
        if outcome.status == "over":  # it ended while this bot was reconnecting
            self.info["match_over_while_away"] += 1
        elif outcome.status in ("cancelled", "crashed"):
            self.error(f"match_{outcome.status}", f"{match_id}: {outcome.result}")
        elif outcome.status == "closed":
            self.error(f"closed_{outcome.close_code}", f"{match_id}: {outcome.close_reason}")
        if outcome.player is not None:
            self.claims_in.send_nowait(Claim(match_id, outcome.player, outcome.acked, frozenset(outcome.refused)))
        return outcome.status

    async def check_claims(self, claims: trio.MemoryReceiveChannel[Claim]) -> None:
        async with claims:
            async for claim in claims:
                for attempt in range(CHECK_ATTEMPTS):
                    try:
                        lost, seqs = await check(self.admin, claim, limit=5)
                        break
                    except CheckFailed as error:
                        failure = error
                    if attempt + 1 < CHECK_ATTEMPTS:
                        await trio.sleep(PAUSE_S)  # not cut short by the end: every claim is checked
                else:
                    self.error("check_failed", str(failure))
                    continue
                self.seats_checked += 1
                if lost:
                    self.lost += lost
                    if len(self.lost_examples) < EXAMPLES:
                        self.lost_examples.append({"match_id": claim.match_id, "player": claim.player,
                                                   "acked": claim.acked, "lost": lost, "first_lost_seqs": seqs})

    # -- reports ---------------------------------------------------------------------------------

    async def report_progress(self) -> None:
        last: Counter[int] = Counter()
        while True:
            await trio.sleep(PROGRESS_S)
            buckets = self.meter.latency_buckets
            recent = {str(k): n - last[k] for k, n in buckets.items() if n != last[k]}
            last = Counter(buckets)
            say("progress", {**self.totals(), "in_match": self.in_match, "queued": self.queued,
                             "recent_buckets": recent})

    def totals(self) -> dict[str, Any]:
        m = self.meter
        return {"sent": m.sent, "acked": m.acked, "matches": self.played, "reconnects": m.reconnects,
                "drops": self.drops, "errors": sum(self.errors.values()) + sum(m.errors.values()),
                "lost": self.lost}

    def result(self) -> dict[str, Any]:
        m = self.meter
        errors = self.errors + m.errors
        return {**self.totals(), "unacked": m.unacked, "refused": m.refused,
                "latency_buckets": {str(k): n for k, n in sorted(m.latency_buckets.items())},
                "latency_max_ms": m.latency_max_ms, "errors_by_kind": dict(errors),
                "reconnect_buckets": {str(k): n for k, n in sorted(m.reconnect_buckets.items())},
                "error_examples": {k: v for k, v in self.error_examples.items() if v},
                "info": dict(self.info), "ended_matches": sorted(self.ended), "joined_matches": sorted(self.joined), "seats_checked": self.seats_checked,
                "lost_examples": self.lost_examples, "cpu_s": self.cpu_end - self.cpu_start,
                "run_s": self.stop_at - self.start_at}


@attrs.define
class Held:
    """A bot's ticket that may still be queued or matched: polled again before making another
    (after its long-poll failed, or when the server put it back in the queue)."""

    ticket_id: str | None = None
    played_match: str | None = None  # the match its last assignment was for


class MatchmakingError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def http_kind(error: httpx.HTTPError) -> str:
    """`409_already_queued` (status and problem code) or the exception's name."""
    if isinstance(error, httpx.HTTPStatusError):
        try:
            code = error.response.json().get("code", "")
        except ValueError:
            code = ""
        return f"{error.response.status_code}_{code}".rstrip("_")
    return type(error).__name__


def leaf_names(error: BaseException) -> str:
    if isinstance(error, BaseExceptionGroup):
        return "+".join(sorted({leaf_names(e) for e in error.exceptions}))
    return type(error).__name__


async def read_go() -> tuple[float, float] | None:
    """The driver's `go START END`, in trio time; None at end of input or on anything else."""
    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    parts = line.split()
    if len(parts) != 3 or parts[0] != "go":
        return None
    offset = trio.current_time() - time.time()
    return float(parts[1]) + offset, float(parts[2]) + offset


async def run(spec: dict) -> int:
    from tools.up import raise_open_file_limit

    raise_open_file_limit()
    admin_headers = {"authorization": f"Bearer {spec['admin_token']}"} if spec.get("admin_token") else {}
    async with shared_client(spec["url"], timeout=HTTP_TIMEOUT_S) as http, \
            httpx.AsyncClient(base_url=spec["url"], headers=admin_headers, timeout=HTTP_TIMEOUT_S) as admin:
        say("ready", {})
        go = None
        with trio.move_on_after(GO_TIMEOUT_S):
            go = await read_go()
        if go is None:
            print("soak_worker: no go line from the driver; stopping", file=sys.stderr)
            return 2
        worker = Worker(spec, http, admin, *go)
        await worker.run()
        say("result", worker.result())
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tools.soak_worker SPEC_FILE", file=sys.stderr)
        return 2
    with open(argv[0]) as file:
        spec = json.load(file)
    return trio.run(run, spec)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
