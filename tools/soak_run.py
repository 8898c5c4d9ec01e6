"""`arbiter soak`'s run (the command and its options are in tools/soak.py): the server, the bot
processes, the progress display, the results."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from tools.bench_arena import cpu_seconds, machine_busy_seconds, peak_rss_mb, pin
from tools.soak import DEFAULT_INPUT_HZ
from tools.soak_report import Display, Progress, merge

ROOT = Path(__file__).resolve().parent.parent
SERVER_READY_TIMEOUT_S = 120.0  # a loaded machine can take long to import and start it
SERVER_STOP_TIMEOUT_S = 15.0
WORKERS_READY_TIMEOUT_S = 60.0
RESULTS_TIMEOUT_S = 120.0  # after the end: the bots' 1 s grace, closing, and the last checks
GO_MARGIN_S = 0.5

# The queues of a server the soak starts: matches form in seconds and arena matches end.
SOAK_QUEUES = """\
[queues.arena]
game = "arena"
players = {{ min = 2, max = 4 }}
params = {{ duration_s = {match_s} }}
max_wait_s = 2
start_short = true

[queues.connect_four]
game = "connect_four"
players = {{ min = 2, max = 2 }}
params = {{ turn_s = 10, lobby_s = 30 }}
max_wait_s = 30
"""


class SetupFailed(Exception):
    """The soak could not run: exit status 2, with this message."""


def info(message: str) -> None:
    print(f"soak: {message}", file=sys.stderr, flush=True)


def command_line(args: argparse.Namespace) -> str:
    words = ["arbiter", "soak", "--bots", str(args.bots), "--duration", f"{args.duration:g}", "--game", args.game,
             "--churn", f"{args.churn:g}", "--seed", str(args.seed)]
    for flag, value in (("--url", args.url), ("--queue", args.queue), ("--input-hz", args.input_hz)):
        if value is not None:
            words += [flag, f"{value:g}" if isinstance(value, float) else value]
    if args.url is None:
        words += ["--match-s", f"{args.match_s:g}"]
    if args.json:
        words.append("--json")
    return shlex.join(words)


# -- the run ------------------------------------------------------------------------------------


async def soak(args: argparse.Namespace) -> dict:
    processes = math.ceil(args.bots / args.bots_per_process)
    usable = sorted(os.sched_getaffinity(0))
    server_cpus, bot_cpus = (usable[:1], usable[1:]) if args.url is None and len(usable) >= 2 else (None, None)
    work_dir = Path(tempfile.mkdtemp(prefix="arbiter-soak-"))
    server: trio.Process | None = None
    workers: list[trio.Process] = []
    try:
        if bot_cpus:
            os.sched_setaffinity(0, bot_cpus)  # this driver stays off the server's CPU too
        if args.url is None:
            server, url = await start_server(work_dir, args, server_cpus)
        else:
            url = args.url.rstrip("/")
        workers = await start_workers(work_dir, args, url, processes, bot_cpus)
        results, run_s, used = await drive(args, workers, server)
        for worker in workers:
            with trio.move_on_after(10):
                await worker.wait()
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
        server_figures = None
        if server is not None:
            server_figures = {"pid": server.pid, "rss_mb": _rounded(_quiet(peak_rss_mb, server.pid)),
                              "cpu": server_cpus}
            await stop_server(server)
            server_figures["log_errors"], server_figures["log_error_examples"] = log_errors(work_dir / "server.log")
        shutil.rmtree(work_dir, ignore_errors=True)
        os.sched_setaffinity(0, usable)
    report = {"game": args.game, "queue": args.queue or args.game, "duration_s": args.duration,
              "churn_per_min": args.churn, "input_hz": args.input_hz or DEFAULT_INPUT_HZ[args.game],
              **merge(results, bots=args.bots, run_s=run_s), "bot_processes": processes, "bot_cpu": bot_cpus}
    server_cpu_s = used.get("server_cpu_s")
    if server_figures is not None:
        server_figures["cpu_pct"] = round(server_cpu_s / run_s * 100, 1) if server_cpu_s is not None else None
    report["server"] = server_figures
    # CPU the rest of the machine used meanwhile (this driver included): other load makes figures noisy
    report["other_cpu_pct"] = (round(max(0.0, used["machine_busy_s"] - (server_cpu_s or 0.0) - report["bot_cpu_s"])
                                     / run_s * 100, 1) if "machine_busy_s" in used else None)
    report["warnings"] = warnings(report, bot_cpus)
    report["command"] = command_line(args)
    return report


def _quiet(function, *args):
    try:
        return function(*args)
    except OSError:  # the process is gone
        return None


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def warnings(report: dict, bot_cpus: list[int] | None) -> list[str]:
    found = []
    cpus = len(bot_cpus or os.sched_getaffinity(0))
    if report["bot_cpu_per_1000_bots"] and report["bot_cpu_per_1000_bots"] * report["bots"] / 1000 > 0.8 * cpus:
        found.append(f"the bots used more than 80 % of their {cpus} CPU(s): latency includes their own delays")
    if report["inputs_acked"] and not report["seats_checked"]:
        found.append("no seat was checked against the server's input logs")
    if report["other_cpu_pct"] is not None and report["other_cpu_pct"] > 10:
        found.append(f"other processes used {report['other_cpu_pct']} % of a CPU during the run: the figures "
                     "are noisy")
    server = report.get("server")
    if server and server["log_errors"]:
        found.append(f"the server logged {server['log_errors']} ERROR lines: {server['log_error_examples'][:1]}")
    return found


def log_errors(path: Path) -> tuple[int, list[str]]:
    count, examples = 0, []
    try:
        with open(path, errors="replace") as file:
            for line in file:
                if " ERROR " in line or " CRITICAL " in line:
                    count += 1
                    if len(examples) < 3:
                        examples.append(line.strip()[:300])
    except OSError:
        pass
    return count, examples


async def start_server(work_dir: Path, args: argparse.Namespace,
                       cpus: list[int] | None) -> tuple[trio.Process, str]:
    ready_file = work_dir / "ready.json"
    queues = work_dir / "queues.toml"
    queues.write_text(SOAK_QUEUES.format(match_s=args.match_s))
    command = [sys.executable, "-m", "tools.cli", "--log-level", "WARNING", "up", "--data-dir", str(work_dir / "data"),
               "--port", "0", "--ready-file", str(ready_file), "--queues", str(queues),
               "--workers", "1"]  # one process: its PID's CPU and memory are the server's
    if args.admin_token:
        command += ["--admin-token", args.admin_token]
    with open(work_dir / "server.log", "wb") as log:
        server = await trio.lowlevel.open_process(command, cwd=ROOT, stdin=subprocess.DEVNULL,
                                                  stdout=subprocess.DEVNULL, stderr=log)
    pin(server.pid, cpus)
    with trio.move_on_after(SERVER_READY_TIMEOUT_S):
        while not ready_file.exists():  # written whole, then renamed
            if server.poll() is not None:
                tail = (work_dir / "server.log").read_text(errors="replace")[-2000:]
                raise SetupFailed(f"the server exited with status {server.returncode} before it was ready:\n{tail}")
            await trio.sleep(0.05)
    if not ready_file.exists():
        server.kill()
        await server.wait()
        raise SetupFailed(f"the server was not ready after {SERVER_READY_TIMEOUT_S:g} s")
    ready = json.loads(ready_file.read_text())
    pin(server.pid, cpus)  # threads started while it came up
    info(f"server pid {server.pid} at {ready['http_url']}, CPUs {cpus or 'any'}")
    return server, ready["http_url"]


async def stop_server(server: trio.Process) -> None:
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    with trio.move_on_after(SERVER_STOP_TIMEOUT_S):
        await server.wait()
        return
    info(f"the server did not stop within {SERVER_STOP_TIMEOUT_S:g} s of SIGTERM; killing it")
    server.kill()
    await server.wait()


async def start_workers(work_dir: Path, args: argparse.Namespace, url: str, processes: int,
                        cpus: list[int] | None) -> list[trio.Process]:
    workers = []
    share = math.ceil(args.bots / processes)
    hz = args.input_hz or DEFAULT_INPUT_HZ[args.game]
    for p in range(processes):
        first = p * share
        spec = {"url": url, "admin_token": args.admin_token, "game": args.game, "queue": args.queue or args.game,
                "first": first, "count": min(share, args.bots - first), "seed": args.seed,
                "churn_per_min": args.churn, "period_s": 1.0 / hz}
        path = work_dir / f"worker-{p}.json"
        path.write_text(json.dumps(spec))
        worker = await trio.lowlevel.open_process([sys.executable, "-m", "tools.soak_worker", str(path)], cwd=ROOT,
                                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        pin(worker.pid, cpus)
        workers.append(worker)
    info(f"{args.bots} bots in {processes} process{'es' if processes > 1 else ''}, CPUs {cpus or 'any'}")
    return workers


async def drive(args: argparse.Namespace, workers: list[trio.Process],
                server: trio.Process | None) -> tuple[list[dict], float, dict[str, float]]:
    """Start the run, show progress, collect every worker's result: (results, run seconds, CPU
    seconds used over the run: `server_cpu_s`, `machine_busy_s`)."""
    send, receive = trio.open_memory_channel[tuple[int, str | None]](math.inf)
    failure: SetupFailed | None = None
    async with trio.open_nursery() as nursery:
        for number, worker in enumerate(workers):
            nursery.start_soon(pump, number, worker, send.clone())
        try:
            outcome = await _run(args, workers, server, receive)
        except SetupFailed as error:  # raised outside the nursery: not wrapped in an exception group
            failure = error
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return outcome


async def _run(args: argparse.Namespace, workers: list[trio.Process], server: trio.Process | None,
               receive: trio.MemoryReceiveChannel) -> tuple[list[dict], float, dict[str, float]]:
    progress = Progress(len(workers), args.bots, args.duration)
    ready: set[int] = set()
    results: dict[int, dict] = {}
    with trio.move_on_after(WORKERS_READY_TIMEOUT_S):
        while len(ready) < len(workers):
            number, line = await receive.receive()
            _expect_line(number, line, workers)
            if line.startswith("ready "):
                ready.add(number)
    if len(ready) < len(workers):
        raise SetupFailed(f"bot processes {sorted(set(range(len(workers))) - ready)} were not up within "
                          f"{WORKERS_READY_TIMEOUT_S:g} s")
    start = time.time() + GO_MARGIN_S
    end = start + args.duration
    for worker in workers:
        await worker.stdin.send_all(f"go {start!r} {end!r}\n".encode())
    await trio.sleep(max(0.0, start - time.time()))
    progress.started_at = time.monotonic()
    before, used = sample(server), {}
    with Display(progress) as display:
        with trio.move_on_after(end - time.time() + RESULTS_TIMEOUT_S):
            while len(results) < len(workers):
                with trio.move_on_after(0.5):
                    number, line = await receive.receive()
                    if line is None and number in results:
                        continue  # it said everything and exited
                    _expect_line(number, line, workers)
                    word, _, body = line.partition(" ")
                    if word == "progress":
                        progress.update(number, json.loads(body))
                    elif word == "result":
                        results[number] = json.loads(body)
                if not used and time.time() >= end:
                    after = sample(server)
                    used = {key: after[key] - before[key] for key in before if after.get(key) is not None}
                display.refresh()
    if len(results) < len(workers):
        raise SetupFailed(f"bot processes {sorted(set(range(len(workers))) - set(results))} sent no result "
                          f"within {RESULTS_TIMEOUT_S:g} s after the end")
    for worker in workers:
        await worker.stdin.aclose()
    return [results[n] for n in range(len(workers))], args.duration, used


def sample(server: trio.Process | None) -> dict[str, float | None]:
    """CPU seconds so far: the server's (if the soak started it) and the whole machine's."""
    figures = {"machine_busy_s": machine_busy_seconds()}
    if server is not None:
        figures["server_cpu_s"] = _quiet(cpu_seconds, server.pid)
    return figures


def _expect_line(number: int, line: str | None, workers: list[trio.Process]) -> None:
    if line is None:
        raise SetupFailed(f"bot process {number} (pid {workers[number].pid}) exited early, status "
                          f"{workers[number].poll()}")


async def pump(number: int, worker: trio.Process, send: trio.MemorySendChannel) -> None:
    """Every line the worker writes, as (number, line); (number, None) at the end of its output."""
    async with send:
        buffer = b""
        async for chunk in worker.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                await send.send((number, line.decode()))
        await send.send((number, None))
