"""`arbiter bench matchmaker`: the issue-4 targets, measured and reported (never asserted).

1. `form_pass_s`: one forming pass over --form-tickets queued tickets (100,000), with the pool
   and the timing of tools/bench_forming.py (only `form_matches` is timed), in this process.
2. `api_requests_per_s`: a fresh `arbiter up` pinned to the first usable CPU, with the queue file
   below; --api-processes load processes (tools/bench_matchmaker_load.py) pinned to the other CPUs,
   each with --api-connections HTTP/1.1 keep-alive connections, create --api-tickets tickets, each
   followed by a status read: POST /v1/tickets then GET /v1/tickets/{id}, two requests. Queue
   `bench_api` has a skill window 0 wide and every ticket a skill of its own, so no two tickets
   ever match: the pool grows to --api-tickets and every arrival triggers a forming pass over it
   (coalesced; in a worker thread from 2,000 tickets on, on the server's core). The skills are a
   shuffled 0..N-1: skills that grow with arrival time make each pass quadratic in the pool (seeds
   that found nothing stay in the buckets and every later seed walks over them), a case of its own.
   The rate is all requests over the time from `go` to the last answer.
3. `assignment_ms`: a second fresh `arbiter up`, the same pinning; queue `bench_assign`
   (--match-players players, skill window 0 wide). --concurrency teams of that many guests, each
   team with its own skill so that its tickets only match each other, play --matches rounds in
   all, at once: N - 1 players queue and long-poll (GET ?wait_s&version), then the last one
   queues; from the moment that POST returned until every player's long-poll returned `matched`.
   The match is really created on the node (its file written) before the assignments go out.

Players: the bench signs its players' tokens with the server's auth secret (--auth-secret-file),
as a studio's login service would; the server checks them exactly like guest tokens. A player
holds one queued ticket per queue, so the API part has a player per ticket.
Matches are held for an hour (seat_hold_s) and --hibernate-after is an hour: nobody joins them
and nothing else happens on the server while it is measured.

Only JSON goes to stdout with --json; progress goes to stderr. Exit status: 0 it ran, 1 it ran but
requests failed, 2 it could not run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pstats
import queue
import random
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from matchmaker.auth import PlayerAuth
from tools.bench_arena import (
    SetupFailed,
    cpu_seconds,
    machine_busy_seconds,
    peak_rss_mb,
    pin,
    stop_server,
)
from tools.bench_forming import run as run_forming

ROOT = Path(__file__).resolve().parent.parent
API_QUEUE = "bench_api"
ASSIGN_QUEUE = "bench_assign"
SERVER_READY_TIMEOUT_S = 30.0
LOAD_READY_TIMEOUT_S = 60.0
RESULTS_TIMEOUT_S = 600.0
SETTLE_S = 0.02  # between the first players' long-polls and the last player's ticket
HOLD_S = 3600  # seat hold and hibernation: nothing happens to the formed matches during the bench
TARGETS = {"form_pass_s": 1.0, "api_requests_per_s": 2000.0, "assignment_ms_p99": 50.0}


def queue_file(players: int) -> str:
    game = "connect_four" if players == 2 else "arena"
    params = f"{{ lobby_s = {HOLD_S} }}" if game == "connect_four" else "{ duration_s = 300 }"
    no_matches = "skill = { initial = 0, per_second = 0, max_width = 0 }"  # only equal skills match
    return "\n".join([
        f"[queues.{API_QUEUE}]", 'game = "connect_four"', f"params = {{ lobby_s = {HOLD_S} }}",
        "players = { min = 2, max = 2 }", f"max_wait_s = {HOLD_S}", f"seat_hold_s = {HOLD_S}", no_matches, "",
        f"[queues.{ASSIGN_QUEUE}]", f'game = "{game}"', f"params = {params}",
        f"players = {{ min = {players}, max = {players} }}", f"max_wait_s = {HOLD_S}", f"seat_hold_s = {HOLD_S}",
        no_matches, ""])


def run_cli(args: argparse.Namespace) -> int:
    try:
        report = run(args)
    except SetupFailed as error:
        print(f"arbiter bench matchmaker: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arbiter bench matchmaker: interrupted", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=None if args.json else 2))
    failed = report["api"]["errors"] or report["assignment"]["errors"] or report["assignment"]["rounds_unmeasured"]
    return 1 if failed else 0


def command_line(args: argparse.Namespace) -> str:
    words = ["arbiter", "bench", "matchmaker", "--form-tickets", str(args.form_tickets), "--api-tickets",
             str(args.api_tickets), "--api-processes", str(args.api_processes), "--api-connections",
             str(args.api_connections), "--matches", str(args.matches), "--match-players", str(args.match_players),
             "--concurrency", str(args.concurrency), "--seed", str(args.seed)]
    if args.profile is not None:
        words += ["--profile", str(args.profile)]
    if args.json:
        words.append("--json")
    return shlex.join(words)


def info(message: str) -> None:
    print(f"bench matchmaker: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per request
    if args.match_players not in (2, 4):
        raise SetupFailed("--match-players is 2 (connect four) or 4 (arena)")
    driver_cpus = os.sched_getaffinity(0)
    usable = sorted(driver_cpus)
    server_cpus, load_cpus = (usable[:1], usable[1:]) if len(usable) >= 2 else (None, None)
    work_dir = Path(tempfile.mkdtemp(prefix="arbiter-bench-matchmaker-"))
    secret = secrets.token_hex(32).encode()
    (work_dir / "auth.key").write_bytes(secret)
    (work_dir / "queues.toml").write_text(queue_file(args.match_players))
    auth = PlayerAuth(secret=secret, guests=False)
    try:
        if load_cpus:
            os.sched_setaffinity(0, load_cpus)  # the driver stays off the server's CPU
        info(f"forming pass over {args.form_tickets} tickets (tools/bench_forming.py)")
        forming = run_forming(args.form_tickets, args.seed)
        api = api_part(args, work_dir, auth, server_cpus, load_cpus)
        assignment = assign_part(args, work_dir, auth, server_cpus, load_cpus)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
        os.sched_setaffinity(0, driver_cpus)
    figures = {"form_pass_s": forming["form_pass_s"], "api_requests_per_s": api["requests_per_s"],
               "assignment_ms_p99": assignment["assignment_ms"]["p99"]}
    return {
        "workload": "matchmaker",
        "form_pass_s": forming["form_pass_s"],
        "api_requests_per_s": api["requests_per_s"],
        "assignment_ms": assignment.pop("assignment_ms"),
        "targets": {name: {"target": f"{'>=' if name == 'api_requests_per_s' else '<='} {limit:g}",
                           "met": None if figures[name] is None else (
                               figures[name] >= limit if name == "api_requests_per_s" else figures[name] <= limit)}
                    for name, limit in TARGETS.items()},
        "form_pass": forming,
        "api": api,
        "assignment": assignment,
        "server_cpu": server_cpus, "load_cpu": load_cpus,
        "command": command_line(args),
    }


# -- the parts ----------------------------------------------------------------------------------


def api_part(args: argparse.Namespace, work_dir: Path, auth: PlayerAuth, server_cpus: list[int] | None,
             load_cpus: list[int] | None) -> dict:
    server, url = start_server(work_dir, "api", args.profile, server_cpus)
    try:
        host, port = host_port(url)
        now = time.time()
        skills = list(range(args.api_tickets))  # distinct, in no order: see the module's docstring
        random.Random(args.seed).shuffle(skills)
        players = [[auth.sign(f"bench-{n}", now)[0], float(skills[n])] for n in range(args.api_tickets)]
        specs = [{"part": "api", "host": host, "port": port, "queue": API_QUEUE, "connections": args.api_connections,
                  "players": players[p::args.api_processes]} for p in range(args.api_processes)]
        results, window = run_load(work_dir, "api", specs, server, load_cpus)
        with httpx.Client(base_url=url, timeout=10.0) as http:
            stats = {q["queue"]: q for q in http.get("/v1/queues").raise_for_status().json()}[API_QUEUE]
    finally:
        stop_server(server)
        show_profile(args.profile, "api")
    requests = sum(r["requests"] for r in results)
    elapsed = max(r["ended"] for r in results) - min(r["started"] for r in results)
    latencies = sorted(ms for r in results for ms in r["latencies_ms"])
    errors: dict[str, int] = {}
    for r in results:
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    return {
        "requests_per_s": round(requests / elapsed, 1) if elapsed > 0 else None,
        # what a request costs the server, however busy the machine was: its CPU time over the requests
        "server_cpu_ms_per_request": round(1000 * window["server_cpu_s"] / requests, 3) if requests else None,
        # the rate the server's CPU time allows: what requests_per_s would be with its core to itself
        "requests_per_server_cpu_s": round(requests / window["server_cpu_s"], 1) if window["server_cpu_s"] else None,
        "requests": requests, "tickets": sum(r["tickets"] for r in results), "duration_s": round(elapsed, 3),
        "request_ms": summary(latencies),
        "errors": sum(errors.values()), "errors_by_kind": errors,
        "queue_rule": (f"queue {API_QUEUE}: 2 players, skill window 0 wide, a distinct skill per ticket: no "
                       "ticket ever matches, the pool grows and each arrival triggers a forming pass over it"),
        "pool_at_end": stats["queued_tickets"], "last_pass_s": stats["last_pass_s"],
        "client_processes": args.api_processes, "connections": args.api_processes * args.api_connections,
        "reconnects": sum(r["reconnects"] for r in results),  # connections the server closed, opened again
        "client_cpu_pct": round(100 * sum(r["cpu_s"] for r in results) / elapsed, 1) if elapsed > 0 else None,
        **window,
    }


def assign_part(args: argparse.Namespace, work_dir: Path, auth: PlayerAuth, server_cpus: list[int] | None,
                load_cpus: list[int] | None) -> dict:
    server, url = start_server(work_dir, "assign", args.profile, server_cpus)
    try:
        host, port = host_port(url)
        now = time.time()
        teams = [[[auth.sign(f"team{t}-p{k}", now)[0], f"team{t}-p{k}"] for k in range(args.match_players)]
                 for t in range(args.concurrency)]
        spec = {"part": "assign", "host": host, "port": port, "queue": ASSIGN_QUEUE, "rounds": args.matches,
                "settle_s": SETTLE_S, "first_skill": 0, "teams": teams}
        results, window = run_load(work_dir, "assign", [spec], server, load_cpus)
    finally:
        stop_server(server)
        show_profile(args.profile, "assign")
    times = sorted(ms for r in results for ms in r["assignment_ms"])
    errors: dict[str, int] = {}
    for r in results:
        for kind, n in r["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
    elapsed = max(r["ended"] for r in results) - min(r["started"] for r in results)
    return {
        "assignment_ms": {**summary(times), "count": len(times)},
        "matches": args.matches, "players_per_match": args.match_players, "concurrent_rounds": args.concurrency,
        "rounds_unmeasured": args.matches - len(times), "errors": sum(errors.values()), "errors_by_kind": errors,
        "queue_rule": (f"queue {ASSIGN_QUEUE}: {args.match_players} players "
                       f"({'connect_four' if args.match_players == 2 else 'arena'}), skill window 0 wide; each "
                       "concurrent team has its own skill, so its tickets only match each other"),
        "measured": "from the last ticket's POST answer to every player's long-poll answer 'matched'",
        "client_cpu_pct": round(100 * sum(r["cpu_s"] for r in results) / elapsed, 1) if elapsed > 0 else None,
        **window,
    }


def summary(values: list[float]) -> dict:
    """p50, p99 (nearest rank) and max of sorted values."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    def rank(q: float) -> float:
        return values[max(0, math.ceil(q * len(values)) - 1)]

    return {"p50": round(rank(0.50), 2), "p99": round(rank(0.99), 2), "max": round(values[-1], 2)}


# -- processes ----------------------------------------------------------------------------------


def host_port(url: str) -> tuple[str, int]:
    parsed = httpx.URL(url)
    if parsed.host not in ("127.0.0.1", "::1", "localhost") or parsed.port is None:
        raise SetupFailed(f"the server is not on a loopback address with a port: {url}")
    return parsed.host, parsed.port


def start_server(work_dir: Path, part: str, profile: Path | None,
                 cpus: list[int] | None) -> tuple[subprocess.Popen, str]:
    ready_file = work_dir / f"ready-{part}.json"
    prefix = [sys.executable]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        prefix += ["-m", "cProfile", "-o", str(profile / f"server-{part}.prof")]
    command = prefix + ["-m", "tools.cli", "--log-level", "WARNING", "up", "--data-dir", str(work_dir / f"data-{part}"),
                        "--port", "0", "--ready-file", str(ready_file), "--queues", str(work_dir / "queues.toml"),
                        "--auth-secret-file", str(work_dir / "auth.key"), "--hibernate-after", str(HOLD_S),
                        "--workers", "1"]  # one process: its PID's CPU and memory are the server's
    server = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    pin(server.pid, cpus)
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while not ready_file.exists():  # written whole, then renamed
        if server.poll() is not None:
            raise SetupFailed(f"the server exited with status {server.returncode} before it was ready")
        if time.monotonic() > deadline:
            stop_server(server)
            raise SetupFailed(f"the server was not ready after {SERVER_READY_TIMEOUT_S:g} s")
        time.sleep(0.05)
    pin(server.pid, cpus)  # threads started while it came up
    url = json.loads(ready_file.read_text())["http_url"]
    info(f"{part}: server pid {server.pid} at {url}, CPUs {cpus or 'any'}")
    return server, url


def run_load(work_dir: Path, part: str, specs: list[dict], server: subprocess.Popen,
             cpus: list[int] | None) -> tuple[list[dict], dict]:
    """Start a load process per spec, wait until all are connected, say go, collect their results;
    and the server's CPU share and peak RSS over that window, and the CPU that other processes took."""
    processes = []
    lines: queue.Queue = queue.Queue()

    def pump(number: int, stream) -> None:
        for line in stream:
            lines.put((number, line))
        lines.put((number, None))

    def wait_for(word: str, timeout: float) -> list[dict]:
        deadline = time.monotonic() + timeout
        found: dict[int, dict] = {}
        while len(found) < len(processes):
            try:
                number, line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise SetupFailed(f"{part}: load processes sent no {word!r} line within {timeout:g} s") from None
            if line is None and number in found:
                continue  # done after its line
            if line is None:
                raise SetupFailed(f"{part}: load process {number} exited (status {processes[number].wait()}) "
                                  f"before its {word!r} line")
            head, _, body = line.partition(" ")
            if head.strip() == word:
                found[number] = json.loads(body) if body.strip() else {}
        return [found[n] for n in range(len(processes))]

    try:
        for number, spec in enumerate(specs):
            path = work_dir / f"load-{part}-{number}.json"
            path.write_text(json.dumps(spec))
            process = subprocess.Popen([sys.executable, "-m", "tools.bench_matchmaker_load", str(path)], cwd=ROOT,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            pin(process.pid, cpus)
            processes.append(process)
            threading.Thread(target=pump, args=(number, process.stdout), daemon=True).start()
        wait_for("ready", LOAD_READY_TIMEOUT_S)
        info(f"{part}: {len(processes)} load processes connected, CPUs {cpus or 'any'}; go")
        cpu_before, busy_before, started = cpu_seconds(server.pid), machine_busy_seconds(), time.monotonic()
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        results = wait_for("result", RESULTS_TIMEOUT_S)
        cpu_after, busy_after, elapsed = cpu_seconds(server.pid), machine_busy_seconds(), time.monotonic() - started
        rss = peak_rss_mb(server.pid)
    finally:
        for process in processes:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    server_s = cpu_after - cpu_before
    others_s = busy_after - busy_before - server_s - sum(r["cpu_s"] for r in results)
    return results, {"server_cpu_pct": round(100 * server_s / elapsed, 1), "server_cpu_s": round(server_s, 3),
                     "server_rss_mb": None if rss is None else round(rss, 1),
                     # anything else on the machine meanwhile (this driver included), % of one core
                     "other_cpu_pct": round(100 * max(0.0, others_s) / elapsed, 1)}


def show_profile(profile: Path | None, part: str) -> None:
    """The server's top functions by own time, to stderr (the file stays for pstats or snakeviz)."""
    if profile is None:
        return
    path = profile / f"server-{part}.prof"
    if not path.exists():
        info(f"{part}: no profile written at {path}")
        return
    info(f"{part}: server profile in {path} (main thread only); top 25 by own time:")
    stats = pstats.Stats(str(path), stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(25)
