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
        self.reconnects = self.drops = 0
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

    async def pause(self) -> None:
        with trio.move_on_after(PAUSE_S):
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
        requeued: str | None = None  # a ticket put back in the queue when its match was cancelled
        while not self.stop.is_set():
            try:
                assignment, ticket_id = await self.matchmake(http, requeued)
                requeued = None
                if assignment is None:
                    continue
                status = await self.play_match(assignment, rng)
                if status == "cancelled":
                    requeued = ticket_id
            except (httpx.HTTPError, MatchmakingError) as error:
                self.error(error.kind if isinstance(error, MatchmakingError) else f"http_{http_kind(error)}",
                           str(error))
                await self.pause()
            except Exception as error:  # a bug in a bot or in the client: count it, go on
                self.error(f"bot_exception_{leaf_names(error)}", repr(error))
                await self.pause()

    async def matchmake(self, http: SharedHTTP, requeued: str | None) -> tuple[dict | None, str | None]:
        ticket = None
        if requeued is not None:
            ticket = await http.ticket(requeued)
            if ticket["status"] != "queued":
                ticket = None
        if ticket is None:
            ticket = await http.create_ticket(self.spec["queue"], numbers={"skill": SKILL}, latencies={REGION: 1.0})
        self.queued += 1
        try:
            with trio.move_on_at(self.stop_at):
                while ticket["status"] == "queued":
                    ticket = await http.ticket(ticket["ticket_id"], wait_s=LONG_POLL_S, version=ticket["version"])
        finally:
            self.queued -= 1
        status, reason = ticket["status"], ticket.get("reason")
        if status == "matched":
            return ticket["assignment"], ticket["ticket_id"]
        if status == "queued":  # the run is over
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await http.cancel_ticket(ticket["ticket_id"])
                except httpx.HTTPError:
                    pass  # matched or being placed meanwhile: the match goes on without us
            return None, None
        if status == "expired" and reason == "max_wait":
            self.info["tickets_expired_max_wait"] += 1  # a leftover bot: it queues again
            return None, None
        raise MatchmakingError(f"ticket_{status}" + (f"_{reason}" if status == "expired" else ""),
                               f"ticket {ticket['ticket_id']} {status}: {reason}")

    async def play_match(self, assignment: dict, rng: random.Random) -> str:
        bot = self.strategy(seed=rng.randrange(1 << 32), period_s=self.spec.get("period_s"))
        try:
            client = MatchClient(assignment["ws_url"], assignment["token"])
            await client.__aenter__()
        except MatchClosed as closed:
            self.error(f"join_closed_{closed.code}", f"{assignment['match_id']}: {closed}")
            return "refused"
        except (OSError, HandshakeError, trio.TooSlowError) as error:
            self.error(f"join_failed_{type(error).__name__}", f"{assignment['match_id']}: {error!r}")
            return "refused"
        self.in_match += 1
        try:
            outcome = await play(client, bot, meter=self.meter, stop=self.stop,
                                 drops_per_min=self.spec["churn_per_min"])
        finally:
            self.in_match -= 1
            self.reconnects += client.reconnects
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
                try:
                    lost, seqs = await check(self.admin, claim, limit=5)
                except CheckFailed as error:
                    self.error("check_failed", str(error))
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
        return {"sent": m.sent, "acked": m.acked, "matches": self.played, "reconnects": self.reconnects,
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
