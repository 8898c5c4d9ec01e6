"""Bench one match-forming pass: `python -m tools.bench_forming [TICKETS] [SEED]` prints JSON.

The pool: TICKETS tickets in queue "ranked" (5 v 5), 70 % solo and 30 % parties of 2 to 4;
skill ~ Normal(1500, 300) per ticket; 4 regions, each ticket near one home region (latency
20-60 ms) and farther from the others (60-200 ms), accepting its home region and any other under
100 ms; waits spread uniformly over 0..120 s. Only `form_matches` is timed, with
time.perf_counter; building the pool is not.

`python -m tools.bench_forming TICKETS SEED --backfill REQUESTS` times one `fill_backfills` pass
over the same pool instead: REQUESTS running matches, each missing 1 to 4 players spread over
its two teams (`team_open`), in a random region, with a mean skill ~ Normal(1500, 300), asking
for up to 30 s.
"""

from __future__ import annotations

import json
import random
import sys
import time

from matchmaker.backfill import BackfillRequest, fill_backfills
from matchmaker.forming import form_matches
from matchmaker.tickets import PlayerCount, QueueConfig, RegionRule, SkillWindow, TeamLayout, Ticket

REGIONS = ("eu-west", "us-east", "us-west", "ap-south")
NOW = 1_000_000.0
MAX_AGE_S = 120.0

CONFIG = QueueConfig(
    queue="ranked",
    players=PlayerCount(min=6, max=10),
    teams=TeamLayout(count=2, size=5),
    skill=SkillWindow(initial=50.0, per_second=5.0, max_width=400.0),
    region=RegionRule(max_latency_ms=100.0, relax_after_s=30.0, relaxed_max_latency_ms=150.0),
    max_wait_s=100.0,
    start_short=True,
)


def make_pool(tickets: int, seed: int) -> list[Ticket]:
    rng = random.Random(seed)
    pool = []
    player = 0
    for number in range(tickets):
        size = 1 if rng.random() < 0.7 else rng.randint(2, 4)
        players = [f"p{player + k}" for k in range(size)]
        player += size
        home = rng.choice(REGIONS)
        latencies = {region: round(rng.uniform(20, 60) if region == home else rng.uniform(60, 200), 1)
                     for region in REGIONS}
        accepted = {region for region, ms in latencies.items() if region == home or ms < 100}
        pool.append(Ticket(
            ticket_id=f"t{number}", queue="ranked", players=players,
            created_at=NOW - rng.uniform(0, MAX_AGE_S),
            numbers={"skill": round(rng.gauss(1500, 300), 1)},
            string_sets={"regions": accepted},
            latencies=latencies,
        ))
    return pool


def run(tickets: int, seed: int) -> dict:
    pool = make_pool(tickets, seed)
    started = time.perf_counter()
    result = form_matches(pool, CONFIG, NOW)
    elapsed = time.perf_counter() - started
    matches = result.matches
    return {
        "tickets": tickets,
        "form_pass_s": round(elapsed, 4),
        "matches_formed": len(matches),
        "tickets_matched": sum(len(match.ticket_ids) for match in matches),
        "short_matches": sum(match.short for match in matches),
        "expired": len(result.expired),
        "remaining": len(result.remaining),
        "mean_skill_spread": round(sum(m.quality.skill_spread for m in matches) / len(matches), 2) if matches else 0.0,
        "max_wait_s": round(max((m.quality.max_wait_s for m in matches), default=0.0), 2),
    }


def make_requests(requests: int, seed: int) -> list[BackfillRequest]:
    rng = random.Random(seed + 1)
    made = []
    for number in range(requests):
        team_open = [0, 0]
        for _ in range(rng.randint(1, 4)):
            team_open[rng.randrange(2)] += 1
        made.append(BackfillRequest(
            match_id=f"m{number}", queue="ranked", open_seats=sum(team_open), team_open=tuple(team_open),
            created_at=NOW - rng.uniform(0, 30), region=rng.choice(REGIONS), skill=round(rng.gauss(1500, 300), 1)))
    return made


def run_backfill(tickets: int, requests: int, seed: int) -> dict:
    pool = make_pool(tickets, seed)
    asks = make_requests(requests, seed)
    started = time.perf_counter()
    result = fill_backfills(pool, asks, CONFIG, NOW)
    elapsed = time.perf_counter() - started
    fills = result.fills
    return {
        "tickets": tickets,
        "requests": requests,
        "backfill_pass_s": round(elapsed, 4),
        "requests_filled": len(fills),
        "requests_full": sum(len(fill.players) == ask.open_seats
                             for fill, ask in zip(fills, sorted(asks, key=lambda a: (a.created_at, a.match_id)))
                             if fill.match_id == ask.match_id),
        "seats_asked": sum(ask.open_seats for ask in asks),
        "players_placed": sum(len(fill.players) for fill in fills),
        "tickets_used": sum(len(fill.ticket_ids) for fill in fills),
    }


def main(argv: list[str]) -> None:
    backfill = None
    if "--backfill" in argv:
        at = argv.index("--backfill")
        backfill = int(argv[at + 1])
        argv = argv[:at] + argv[at + 2:]
    tickets = int(argv[0]) if argv else 100_000
    seed = int(argv[1]) if len(argv) > 1 else 1
    print(json.dumps(run(tickets, seed) if backfill is None else run_backfill(tickets, backfill, seed)))


if __name__ == "__main__":
    main(sys.argv[1:])
