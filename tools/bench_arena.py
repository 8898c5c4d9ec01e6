"""`arbiter bench arena`: workload "arena" (../shared/workloads/arena.md) against a local server.

1. Start `arbiter up --workers N` on a fresh data directory (unless --url; N is --workers, default
   1), pinned to the first usable CPU (the first N with workers); the bots get the others (when
   there are more CPUs than that; else everything shares every CPU, and the report says so).
2. Create R arena matches that never end and 4 join tokens per match over the HTTP API.
3. Start the bot processes (clients/arena_bots.py), one per 400 bots by default, and wait until
   every bot is welcomed or has failed to join.
4. Tell them the schedule: --warmup seconds, then the window of --duration seconds (time.time()).
5. Sample the server's CPU time (/proc, its workers included) and its tick counters (/metrics,
   summed over workers) at both ends of the window; collect the bots' raw figures after the window
   and its 1 s grace; merge; report.

Only JSON goes to stdout with --json; progress goes to stderr. Exit status: 0 it ran, 1 it ran but
inputs were lost or errors happened, 2 it could not run (usage, setup, a bot process failed).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

PLAYERS_PER_MATCH = 4
TICK_RATE = 20
BOTS_PER_PROCESS = 400
LOOPBACK = ("127.0.0.1", "::1", "localhost")
SERVER_READY_TIMEOUT_S = 30.0
SERVER_STOP_TIMEOUT_S = 10.0
BOTS_READY_TIMEOUT_S = 90.0  # bots give up joining after 60 s
RESULTS_TIMEOUT_S = 30.0  # after the window and the bots' 1 s grace
BOTS_EXIT_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 10.0
GO_MARGIN_S = 0.2  # time for the go line to reach every bot before the warm-up would end
ROOT = Path(__file__).resolve().parent.parent


class SetupFailed(Exception):
    """The benchmark could not run: exit status 2, with this message."""


def run_cli(args: argparse.Namespace) -> int:
    try:
        report = run(args)
    except SetupFailed as error:
        print(f"arbiter bench arena: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arbiter bench arena: interrupted", file=sys.stderr)
        return 2
    if not args.json:
        print(table(report))
    print(json.dumps(report, indent=None if args.json else 2))
    return 1 if report["lost_inputs"] or report["errors"] else 0


def command_line(args: argparse.Namespace) -> str:
    words = ["arbiter", "bench", "arena", "--matches", str(args.matches), "--duration", f"{args.duration:g}",
             "--warmup", f"{args.warmup:g}", "--seed", str(args.seed), "--synchronous", args.synchronous]
    if args.bot_processes is not None:
        words += ["--bot-processes", str(args.bot_processes)]
    if args.url is not None:
        words += ["--url", args.url]
    if workers_of(args) != 1:
        words += ["--workers", str(workers_of(args))]
    if args.json:
        words.append("--json")
    return shlex.join(words)


def workers_of(args: argparse.Namespace) -> int:
    return getattr(args, "workers", None) or 1  # callers that build their own arguments have no workers


def info(message: str) -> None:
    print(f"bench arena: {message}", file=sys.stderr, flush=True)


# -- the run ----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if args.warmup < 0:
        raise SetupFailed("--warmup must be 0 or more")
    if args.url is not None and not is_loopback(args.url):
        raise SetupFailed(f"--url {args.url}: only loopback addresses ({', '.join(LOOPBACK)})")
    clients = PLAYERS_PER_MATCH * args.matches
    processes = args.bot_processes or max(1, math.ceil(clients / BOTS_PER_PROCESS))
    driver_cpus = os.sched_getaffinity(0)
    usable = sorted(driver_cpus)
    workers = workers_of(args)
    # the server's processes (with workers: one per worker; the HTTP parent is idle during the window)
    # on as many CPUs, the bots on the rest; with no CPU left for the bots, nobody is pinned
    server_cpus, bot_cpus = (usable[:workers], usable[workers:]) if len(usable) > workers else (None, None)
    work_dir = Path(tempfile.mkdtemp(prefix="arbiter-bench-arena-"))
    server: subprocess.Popen | None = None
    bots: list[subprocess.Popen] = []
    try:
        if bot_cpus:
            os.sched_setaffinity(0, bot_cpus)  # the driver stays off the server's CPU too
        if args.url is None:
            server, http_url = start_server(work_dir, args.synchronous, server_cpus, workers)
        else:
            http_url = args.url.rstrip("/")
        with httpx.Client(base_url=http_url, timeout=HTTP_TIMEOUT_S) as http:
            seats = create_matches(http, args.matches)
            bots = start_bots(work_dir, seats, processes, args.seed, bot_cpus)
            lines = read_lines(bots)
            wait_for(lines, bots, "ready", BOTS_READY_TIMEOUT_S)
            info(f"all {clients} bots settled; warm-up {args.warmup:g} s, window {args.duration:g} s")
            window_start = time.time() + max(args.warmup, GO_MARGIN_S)
            window_end = window_start + args.duration
            for bot in bots:
                try:
                    bot.stdin.write(f"go {window_start!r} {window_end!r}\n")
                    bot.stdin.flush()
                except OSError as error:
                    raise SetupFailed(f"telling the bots to go: {error}") from None
            sleep_until(window_start)
            before = sample(http, server, bots)
            sleep_until(window_end)
            after = sample(http, server, bots)
            results = wait_for(lines, bots, "result", window_end - time.time() + 1.0 + RESULTS_TIMEOUT_S)
        stop_bots(bots)
    finally:
        for bot in bots:
            if bot.poll() is None:
                bot.kill()
        if server is not None:
            stop_server(server)
        shutil.rmtree(work_dir, ignore_errors=True)
        os.sched_setaffinity(0, driver_cpus)
    return report(args, processes, results, before, after, server, server_cpus, bot_cpus)


def is_loopback(url: str) -> bool:
    return urlsplit(url).hostname in LOOPBACK


def sleep_until(wall_time: float) -> None:
    time.sleep(max(0.0, wall_time - time.time()))


def pin(pid: int, cpus: list[int] | None) -> None:
    """Pin every thread of a process (its future threads inherit from them)."""
    if not cpus:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass  # the thread just ended


# -- the server -------------------------------------------------------------------------------


def start_server(work_dir: Path, synchronous: str, cpus: list[int] | None,
                 workers: int = 1) -> tuple[subprocess.Popen, str]:
    ready_file = work_dir / "ready.json"
    command = [sys.executable, "-m", "tools.cli", "--log-level", "WARNING", "up", "--data-dir",
               str(work_dir / "data"), "--port", "0", "--ready-file", str(ready_file), "--synchronous", synchronous,
               "--workers", str(workers)]
    server = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    pin(server.pid, cpus)
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while not ready_file.exists():  # written in one piece once the server serves
        if server.poll() is not None:
            raise SetupFailed(f"the server exited with status {server.returncode} before it was ready")
        if time.monotonic() > deadline:
            raise SetupFailed(f"the server was not ready after {SERVER_READY_TIMEOUT_S:g} s")
        time.sleep(0.05)
    try:
        ready = json.loads(ready_file.read_text())
    except ValueError:  # caught mid-write: read it again
        time.sleep(0.2)
        ready = json.loads(ready_file.read_text())
    server.worker_pids = [w["pid"] for w in ready.get("workers", [])]  # type: ignore[attr-defined]
    for pid in (server.pid, *server.worker_pids):  # type: ignore[attr-defined]
        pin(pid, cpus)  # threads started while it came up (workers inherit the parent's CPUs)
    info(f"server pid {server.pid} at {ready['http_url']}, CPUs {cpus or 'any'}"
         + (f", workers {server.worker_pids}" if server.worker_pids else ""))  # type: ignore[attr-defined]
    return server, ready["http_url"]


def server_pids(server: subprocess.Popen) -> list[int]:
    """The server's process and its workers'."""
    return [server.pid, *getattr(server, "worker_pids", [])]


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        info(f"the server did not stop within {SERVER_STOP_TIMEOUT_S:g} s of SIGTERM; killing it")
        server.kill()
        server.wait()


def create_matches(http: httpx.Client, matches: int) -> list[dict]:
    """R never-ending arena matches and 4 join tokens each: [{"ws_url", "token"}] in match order."""
    seats = []
    try:
        for _ in range(matches):
            created = http.post("/v1/matches", json={"game": "arena", "params": {"duration_s": 0}})
            created.raise_for_status()
            match_id = created.json()["match_id"]
            for n in range(PLAYERS_PER_MATCH):
                grant = http.post(f"/v1/matches/{match_id}/tokens", json={"player_id": f"bot-{n}"})
                grant.raise_for_status()
                body = grant.json()
                if not is_loopback(body["ws_url"]):
                    raise SetupFailed(f"the server hands out a non-loopback WebSocket URL: {body['ws_url']}")
                seats.append({"ws_url": body["ws_url"], "token": body["token"]})
    except httpx.HTTPError as error:
        raise SetupFailed(f"creating matches: {error}") from None
    return seats


def sample(http: httpx.Client, server: subprocess.Popen | None, bots: list[subprocess.Popen]) -> dict:
    """The counters the report takes deltas of, at one instant."""
    figures = {"at": time.monotonic(),
               "server_cpu_s": sum(cpu_seconds(pid) for pid in server_pids(server)) if server else None,
               "server_rss_mb": sum(peak_rss_mb(pid) or 0.0 for pid in server_pids(server)) if server else None,
               "bots_cpu_s": sum(cpu_seconds(bot.pid) for bot in bots), "machine_busy_s": machine_busy_seconds()}
    asked = time.monotonic()
    try:
        response = http.get("/metrics")
        response.raise_for_status()
    except httpx.HTTPError as error:
        raise SetupFailed(f"reading /metrics: {error}") from None
    figures["metrics_at"] = (asked + time.monotonic()) / 2  # the server read its counters in between
    wanted = {"arbiter_ticks_total": "ticks", "arbiter_late_ticks_total": "late_ticks"}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            if s.name in wanted:  # one sample per worker (label worker) with workers: their sum
                figures[wanted[s.name]] = figures.get(wanted[s.name], 0.0) + s.value
    return figures


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time every process of the machine spent, all CPUs, from /proc/stat."""
    with open("/proc/stat") as file:
        ticks = [int(n) for n in file.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")  # guest time is already in user


def peak_rss_mb(pid: int) -> float | None:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return None


# -- the bot processes ------------------------------------------------------------------------


def start_bots(work_dir: Path, seats: list[dict], processes: int, seed: int,
               cpus: list[int] | None) -> list[subprocess.Popen]:
    bots = []
    share = math.ceil(len(seats) / processes)
    for p in range(processes):
        mine = [{"index": i, **seats[i]} for i in range(p * share, min(len(seats), (p + 1) * share))]
        spec = work_dir / f"bots-{p}.json"
        spec.write_text(json.dumps({"seed": seed, "bots": mine}))
        bot = subprocess.Popen([sys.executable, "-m", "clients.arena_bots", str(spec)], cwd=ROOT,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        pin(bot.pid, cpus)
        bots.append(bot)
    info(f"{len(seats)} bots in {processes} processes, CPUs {cpus or 'any'}")
    return bots


def read_lines(bots: list[subprocess.Popen]) -> queue.Queue:
    """A queue of (process number, line or None at end of output), fed by one thread per process."""
    lines: queue.Queue = queue.Queue()

    def pump(number: int, stream) -> None:
        for line in stream:
            lines.put((number, line))
        lines.put((number, None))

    for number, bot in enumerate(bots):
        threading.Thread(target=pump, args=(number, bot.stdout), daemon=True).start()
    return lines


def wait_for(lines: queue.Queue, bots: list[subprocess.Popen], word: str, timeout: float,
             kind: str = "bot process") -> list[dict]:
    """One `word {json}` line from every process (of `read_lines`), within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    found: dict[int, dict] = {}
    while len(found) < len(bots):
        try:
            number, line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            missing = ", ".join(str(n) for n in sorted(set(range(len(bots))) - set(found)))
            raise SetupFailed(f"no {word!r} line within {timeout:.0f} s from {kind} {missing}") from None
        if line is None:
            raise SetupFailed(f"{kind} {number} exited (status {bots[number].wait()}) before its {word!r} line")
        head, _, body = line.partition(" ")
        if head == word:
            found[number] = json.loads(body)
    return [found[n] for n in range(len(bots))]


def stop_bots(bots: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + BOTS_EXIT_TIMEOUT_S
    for bot in bots:
        bot.stdin.close()
        try:
            bot.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            bot.kill()


# -- the report -------------------------------------------------------------------------------


def percentiles(buckets: dict[int, int], bucket_ms: float, max_ms: float) -> dict:
    """p50/p95/p99 (nearest rank, at the upper edge of their bucket, so within bucket_ms) and max."""
    total = sum(buckets.values())
    if total == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    found = {}
    for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket in sorted(buckets):
            seen += buckets[bucket]
            if seen >= rank:
                found[name] = round(min((bucket + 1) * bucket_ms, max_ms), 3)
                break
    found["max"] = round(max_ms, 3)
    return found


def report(args: argparse.Namespace, processes: int, results: list[dict], before: dict, after: dict,
           server: subprocess.Popen | None, server_cpus: list[int] | None, bot_cpus: list[int] | None) -> dict:
    clients = PLAYERS_PER_MATCH * args.matches
    elapsed = after["at"] - before["at"]
    buckets: dict[int, int] = {}
    errors: dict[str, int] = {}
    for r in results:
        for bucket, n in r["latency_buckets"].items():
            buckets[int(bucket)] = buckets.get(int(bucket), 0) + n
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    total = {key: sum(r[key] for r in results) for key in ("joined", "sent", "acked", "lost", "state_frames",
                                                          "late_sends")}
    bucket_ms = results[0]["bucket_ms"] if results else 0.1
    latency = percentiles(buckets, bucket_ms, max((r["latency_max_ms"] for r in results), default=0.0))

    def per_s(key: str) -> float | None:
        if key not in before or key not in after:
            return None
        return round((after[key] - before[key]) / (after["metrics_at"] - before["metrics_at"]), 2)

    server_figures = {
        "cpu_pct": round((after["server_cpu_s"] - before["server_cpu_s"]) / elapsed * 100, 1) if server else None,
        "rss_mb": round(after["server_rss_mb"], 1) if server else None,
        "ticks_per_s": per_s("ticks"), "expected_ticks_per_s": TICK_RATE * args.matches,
        "late_ticks": int(after["late_ticks"] - before["late_ticks"]) if "late_ticks" in after else None,
        "pid": server.pid if server else None, "cpu": server_cpus if server else None,
        "workers": workers_of(args),
        "worker_pids": getattr(server, "worker_pids", []) if server else None,
    }
    bot_cpu_pct = round((after["bots_cpu_s"] - before["bots_cpu_s"]) / elapsed * 100, 1)
    machine_pct = (after["machine_busy_s"] - before["machine_busy_s"]) / elapsed * 100
    other_cpu_pct = round(max(0.0, machine_pct - bot_cpu_pct - (server_figures["cpu_pct"] or 0.0)), 1)
    warnings = []
    if server is not None and workers_of(args) > 1:
        server_figures["note"] = ("cpu_pct and rss_mb are summed over the server's processes (the HTTP parent "
                                  "and its workers); cpu_pct can exceed 100")
        if server_cpus is None:
            warnings.append(f"{workers_of(args)} workers and the bots share the machine's {len(os.sched_getaffinity(0))}"
                            " CPUs: they compete for them, so neither figure is the server's alone")
    if server is not None and other_cpu_pct > 10:
        warnings.append(f"other processes used {other_cpu_pct} % of a CPU during the window: the figures are noisy")
    if bot_cpu_pct > 80 * len(bot_cpus or os.sched_getaffinity(0)) or total["late_sends"] > 0.01 * total["sent"]:
        warnings.append("the bots were short of CPU (see bot_cpu_pct, bot_late_sends): latency includes "
                        "their own delays; use fewer matches or more CPUs for the bots")
    if server is None:
        server_figures["note"] = "external server (--url): its PID is unknown, so cpu_pct and rss_mb are null"
    return {
        "workload": "arena", "matches": args.matches, "clients": clients, "duration_s": args.duration,
        "warmup_s": args.warmup, "latency_ms": latency, "latency_resolution_ms": bucket_ms,
        "inputs_sent": total["sent"], "inputs_acked": total["acked"], "lost_inputs": total["lost"],
        "state_frames_per_s": round(total["state_frames"] / args.duration, 1),
        "expected_state_frames_per_s": TICK_RATE * clients,
        "server": server_figures,
        "errors": sum(errors.values()), "errors_by_kind": errors,
        "bots_joined": total["joined"], "bot_processes": processes,
        "bot_cpu_pct": bot_cpu_pct, "bot_cpu": bot_cpus, "bot_late_sends": total["late_sends"],
        "other_cpu_pct": other_cpu_pct,
        "warnings": warnings, "command": command_line(args),
    }


def table(r: dict) -> str:
    s, lat = r["server"], r["latency_ms"]
    rows = [
        ("matches / clients", f"{r['matches']} / {r['clients']} ({r['bots_joined']} joined)"),
        ("window", f"{r['duration_s']:g} s after {r['warmup_s']:g} s warm-up"),
        ("latency ms p50/p95/p99/max", f"{lat['p50']} / {lat['p95']} / {lat['p99']} / {lat['max']}"),
        ("inputs sent / acked / lost", f"{r['inputs_sent']} / {r['inputs_acked']} / {r['lost_inputs']}"),
        ("state frames/s", f"{r['state_frames_per_s']} (expected {r['expected_state_frames_per_s']})"),
        ("server ticks/s", f"{s['ticks_per_s']} (expected {s['expected_ticks_per_s']}), late {s['late_ticks']}"),
        ("server CPU % / peak RSS MB", f"{s['cpu_pct']} / {s['rss_mb']}  (CPUs {s['cpu']}, "
                                       f"{s.get('workers', 1)} worker{'s' if s.get('workers', 1) > 1 else ''})"),
        ("bots CPU %", (f"{r['bot_cpu_pct']} in {r['bot_processes']} processes (CPUs {r['bot_cpu']}), "
                        f"{r['bot_late_sends']} late sends")),
        ("other processes CPU %", f"{r['other_cpu_pct']}"),
        ("errors", f"{r['errors']} {r['errors_by_kind'] or ''}"),
        *(("warning", w) for w in r["warnings"]),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
