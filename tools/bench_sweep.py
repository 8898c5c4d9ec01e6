"""`arbiter bench sweep`: the arena workload's capacity, found by running `bench arena` at growing R.

Capacity is the largest R (matches of 4 clients) whose run passes: input-to-state p99 at most
`--p99-ms` (100), the server under `--cpu-pct` (90) % of its core, no lost inputs, no errors.
R doubles from `--start` until a run fails (or `--max`), then a bisection between the last pass and
the first failure narrows it to `--resolution` matches. Each run is a fresh server and fresh bots.

When the bots' own CPU is nearly full (`bot_cpu_pct` over 90 % of the cores they have), the bots,
not the server, may be what failed: the run is marked `bots_saturated`, and the result also gives
a projection from the server's CPU per match in the largest passing run (what one core would hold
at `--cpu-pct`), which does not depend on the bots keeping up.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys

from tools.arguments import number, positive_float, positive_int
from tools import bench_arena

BOTS_SATURATED_PCT = 90.0


def add_parser(workloads) -> None:
    sweep = workloads.add_parser("sweep", help="capacity: the largest R of workload arena within the limits")
    sweep.add_argument("--start", type=positive_int, default=25, help="first R (default 25)")
    sweep.add_argument("--max", type=positive_int, default=1000, help="largest R tried (default 1000)")
    sweep.add_argument("--resolution", type=positive_int, default=25, help="stop bisecting at this many matches (default 25)")
    sweep.add_argument("--duration", "-D", type=number(0, 3600, above=True), default=10.0, help="measured window per run, s (default 10)")
    sweep.add_argument("--warmup", type=number(0, 600), default=2.0, help="seconds after every bot joined (default 2)")
    sweep.add_argument("--p99-ms", type=positive_float, default=100.0, help="latency limit (default 100)")
    sweep.add_argument("--cpu-pct", type=positive_float, default=90.0, help="server CPU limit, %% of a core (default 90)")
    sweep.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    sweep.add_argument("--json", action="store_true", help="print only the JSON object")


def check(args: argparse.Namespace) -> str | None:
    if not 1 <= args.start <= args.max:
        return "--start must be at least 1 and at most --max"
    if args.resolution < 1:
        return "--resolution must be at least 1"
    if not (args.duration > 0 and args.warmup >= 0 and args.p99_ms > 0 and 0 < args.cpu_pct <= 100):
        return "--duration, --p99-ms must be positive, --warmup not negative, --cpu-pct in (0, 100]"
    return None


def run_cli(args: argparse.Namespace) -> int:
    problem = check(args)
    if problem:
        print(f"arbiter bench sweep: {problem}", file=sys.stderr)
        return 2
    try:
        report = sweep(args, run_one=lambda r: bench_arena.run(arena_args(args, r)))
    except bench_arena.SetupFailed as error:
        print(f"arbiter bench sweep: {error}", file=sys.stderr)
        return 2
    if not args.json:
        print(table(report))
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def arena_args(args: argparse.Namespace, matches: int) -> argparse.Namespace:
    return argparse.Namespace(matches=matches, duration=args.duration, warmup=args.warmup, bot_processes=None,
                              url=None, synchronous=args.synchronous, seed=1, json=True)


def summary(matches: int, report: dict, args: argparse.Namespace) -> dict:
    server = report["server"]
    cpu = server.get("cpu_pct")
    p99 = report["latency_ms"]["p99"]
    bot_cores = max(1, len(report.get("bot_cpu") or [1]))
    bots_saturated = report.get("bot_cpu_pct", 0.0) > BOTS_SATURATED_PCT * bot_cores
    passed = (p99 is not None and p99 <= args.p99_ms and cpu is not None and cpu < args.cpu_pct
              and report["lost_inputs"] == 0 and report["errors"] == 0)
    return {"matches": matches, "clients": report["clients"], "passed": passed, "p99_ms": p99,
            "p50_ms": report["latency_ms"]["p50"], "server_cpu_pct": cpu, "rss_mb": server.get("rss_mb"),
            "late_ticks": server.get("late_ticks"), "lost_inputs": report["lost_inputs"],
            "errors": report["errors"], "bot_cpu_pct": report.get("bot_cpu_pct"),
            "bots_saturated": bots_saturated, "command": report.get("command")}


def sweep(args: argparse.Namespace, run_one) -> dict:
    """Double, then bisect. `run_one(R)` returns a `bench arena` report."""
    runs: dict[int, dict] = {}

    def attempt(matches: int) -> bool:
        bench_arena.info(f"sweep: R = {matches}")
        runs[matches] = summary(matches, run_one(matches), args)
        return runs[matches]["passed"]

    good, bad = 0, None
    matches = args.start
    while True:
        if attempt(matches):
            good = matches
            if matches >= args.max:
                break
            matches = min(args.max, matches * 2)
        else:
            bad = matches
            break
    if bad is not None:
        while bad - good > args.resolution:
            middle = (good + bad) // 2
            if attempt(middle):
                good = middle
            else:
                bad = middle
    ordered = [runs[r] for r in sorted(runs)]
    best = runs.get(good)
    projection = None
    if best is not None and best["server_cpu_pct"]:
        per_match = best["server_cpu_pct"] / good
        projection = {"from_matches": good, "server_cpu_pct_per_match": round(per_match, 4),
                      "matches_per_core_at_limit": math.floor(args.cpu_pct / per_match)}
    limited_by = None
    if bad is not None:
        failed = runs[bad]
        limited_by = "bots" if failed["bots_saturated"] else "server"
    words = ["arbiter", "bench", "sweep", "--start", str(args.start), "--max", str(args.max), "--resolution",
             str(args.resolution), "--duration", f"{args.duration:g}", "--warmup", f"{args.warmup:g}",
             "--p99-ms", f"{args.p99_ms:g}", "--cpu-pct", f"{args.cpu_pct:g}", "--synchronous", args.synchronous]
    if args.json:
        words.append("--json")
    return {"workload": "arena", "limits": {"p99_ms": args.p99_ms, "server_cpu_pct": args.cpu_pct},
            "capacity_matches": good, "capacity_clients": good * bench_arena.PLAYERS_PER_MATCH,
            "first_failure": bad, "first_failure_limited_by": limited_by, "projection": projection,
            "runs": ordered, "command": shlex.join(words)}


def table(report: dict) -> str:
    lines = ["   R  pass  p50 ms  p99 ms  server CPU %  RSS MB  late ticks  lost  bot CPU %"]
    for run in report["runs"]:
        lines.append(f"{run['matches']:4d}  {'yes' if run['passed'] else 'no ':>4}  {run['p50_ms']:6.1f}  "
                     f"{run['p99_ms']:6.1f}  {run['server_cpu_pct'] or 0:12.1f}  {run['rss_mb'] or 0:6.1f}  "
                     f"{run['late_ticks'] or 0:10d}  {run['lost_inputs']:4d}  {run['bot_cpu_pct'] or 0:9.1f}"
                     + ("  (bots saturated)" if run["bots_saturated"] else ""))
    lines.append(f"capacity: R = {report['capacity_matches']} ({report['capacity_clients']} clients)")
    if report["projection"]:
        p = report["projection"]
        lines.append(f"projection from R = {p['from_matches']}: {p['server_cpu_pct_per_match']} % of a core per "
                     f"match, {p['matches_per_core_at_limit']} matches per core at the CPU limit")
    return "\n".join(lines)
