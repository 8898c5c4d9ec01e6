"""`arbiter bench floor`: what the arena workload costs a bare CPython loop on this machine.

The arena targets (docs/performance.md) are fractions of one core. This measures the least any
CPython server can spend on the same work: R matches of 4 bots, an input from each bot at 20 Hz
read from its own TCP socket and decoded, a 20 Hz tick per match that applies the arena rules,
persists the tick's step in the match's own SQLite file (unless --no-storage) and writes one
WebSocket frame to each bot. The floor server (tools/floor_server.py) has no framework, no
validation, no sessions and no reconnection; it is not a server anyone should run, only a
measuring stick, run with the same CPU split as `arbiter bench arena`: the floor server on the
first usable CPU, the bots (tools/floor_bots.py, one process) on the others.

Only JSON goes to stdout with --json; progress goes to stderr. Exit status: 0 it ran, 2 it could
not run (usage, a process failed or timed out).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.arguments import integer, number
from tools.bench_arena import SetupFailed, cpu_seconds, pin, read_lines, wait_for
from tools.openfiles import raise_open_file_limit

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0
JOIN_TIMEOUT_S = 150.0  # the floor server gives up after 120 s
END_MARGIN_S = 30.0
STOP_TIMEOUT_S = 10.0
SPARE_FILES = 256  # beyond a socket per bot (and, in the server, a match file and its WAL per match)


def info(message: str) -> None:
    print(f"bench floor: {message}", file=sys.stderr, flush=True)


def run(matches: int, duration_s: float, warmup_s: float, storage: bool, seed: int,
        keep_files_in: Path | None = None) -> dict:
    """The figures; the floor server's match files are left in `keep_files_in` if given."""
    needed = 4 * matches + (2 * matches if storage else 0) + SPARE_FILES
    limit = raise_open_file_limit()  # (the processes it starts inherit it)
    if 0 < limit < needed:
        raise SetupFailed(f"R = {matches} needs about {needed} open files; the limit here is {limit}")
    mine = os.sched_getaffinity(0)
    usable = sorted(mine)
    server_cpus, bot_cpus = (usable[:1], usable[1:]) if len(usable) > 1 else (None, None)
    processes: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-floor-") as temporary:
        data_dir = str(keep_files_in or temporary)
        try:
            if bot_cpus:
                os.sched_setaffinity(0, bot_cpus)
            server = _start([sys.executable, "-m", "tools.floor_server", str(matches), repr(warmup_s),
                             repr(duration_s), data_dir if storage else "-"], server_cpus, processes)
            lines = read_lines([server])
            port = wait_for(lines, [server], "listening", START_TIMEOUT_S, "floor server")[0]["port"]
            info(f"floor server pid {server.pid} on port {port}, CPUs {server_cpus or 'any'}; "
                 f"{4 * matches} bots, CPUs {bot_cpus or 'any'}")
            lifetime = JOIN_TIMEOUT_S + warmup_s + duration_s + END_MARGIN_S
            bots = _start([sys.executable, "-m", "tools.floor_bots", str(port), str(matches), repr(lifetime),
                           str(seed)], bot_cpus, processes)
            wait_for(lines, [server], "joined", JOIN_TIMEOUT_S, "floor server")
            info(f"every match filled; warm-up {warmup_s:g} s, window {duration_s:g} s")
            time.sleep(warmup_s)
            bots_before, at = cpu_seconds(bots.pid), time.monotonic()
            figures = wait_for(lines, [server], "figures", duration_s + END_MARGIN_S, "floor server")[0]
            bots_cpu_pct = 100 * (cpu_seconds(bots.pid) - bots_before) / (time.monotonic() - at)
            sent = json.loads(bots.communicate(timeout=STOP_TIMEOUT_S)[0] or "{}").get("inputs_sent")
            server.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            raise SetupFailed(f"a process did not stop in time: {error}") from None
        finally:
            for process in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            os.sched_setaffinity(0, mine)
    return {"workload": "floor", "matches": matches, "clients": 4 * matches, "duration_s": duration_s,
            "warmup_s": warmup_s, "storage": storage, "server": figures,
            "bots": {"cpu_pct": round(bots_cpu_pct, 1), "inputs_sent": sent, "processes": 1},
            "cpus": {"server": server_cpus, "bots": bot_cpus}}


def _start(command: list[str], cpus: list[int] | None, processes: list[subprocess.Popen]) -> subprocess.Popen:
    process = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    processes.append(process)
    pin(process.pid, cpus)
    return process


def command_line(args: argparse.Namespace) -> str:
    words = ["arbiter", "bench", "floor", "--matches", str(args.matches), "--duration", f"{args.duration:g}",
             "--warmup", f"{args.warmup:g}", "--seed", str(args.seed)]
    if args.no_storage:
        words.append("--no-storage")
    if args.json:
        words.append("--json")
    return shlex.join(words)


def run_cli(args: argparse.Namespace) -> int:
    try:
        report = run(args.matches, args.duration, args.warmup, not args.no_storage, args.seed)
    except SetupFailed as error:
        print(f"arbiter bench floor: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arbiter bench floor: interrupted", file=sys.stderr)
        return 2
    report["command"] = command_line(args)
    if not args.json:
        s = report["server"]
        print(f"floor at R = {args.matches} ({report['clients']} clients, storage {'on' if report['storage'] else 'off'}): "
              f"{s['cpu_pct']} % of a core (user {s['user_pct']}, system {s['system_pct']}), "
              f"{s['ticks_per_s']} of {s['expected_ticks_per_s']} ticks/s, {s['inputs_per_s']} inputs/s, "
              f"{s['late_ticks']} late ticks; bots {report['bots']['cpu_pct']} %", file=sys.stderr)
    print(json.dumps(report))
    return 0


def add_parser(workloads: argparse._SubParsersAction) -> None:
    floor = workloads.add_parser("floor", help="the arena workload's cost in a bare CPython loop (a lower bound)")
    floor.add_argument("--matches", "-R", type=integer(1, 2000), default=100, help="matches of 4 bots (default 100)")
    floor.add_argument("--duration", "-D", type=number(0, 3600, above=True), default=15.0, help="measured window, s (default 15)")
    floor.add_argument("--warmup", type=number(0, 600), default=2.0, help="seconds after every match filled (default 2)")
    floor.add_argument("--no-storage", action="store_true", help="no SQLite: sockets and ticks only")
    floor.add_argument("--seed", type=int, default=1, help="bots' random seed")
    floor.add_argument("--json", action="store_true", help="print only the JSON object")
