"""`arbiter bench hibernation` runs end to end on a tiny scale and reports every field (never timings);
its memory arithmetic over workers, on given readings."""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tools.bench_hibernation import Server, Worker, matches_budget, memory_figures

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--matches", "10", "--moves", "5", "--wake-matches", "2", "--wakes", "2", "--alarm-matches", "4",
        "--bare", "5", "--json"]
MB = 2**20


def bench(*extra: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "hibernation", *TINY, *extra],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_bench_hibernation_reports_its_figures():
    report = bench()
    assert report["workload"] == "hibernation" and report["workers"] == 1
    assert isinstance(report["hibernated_bytes_per_match"], int)
    assert report["wake_ms"]["n"] == 4 and report["wake_ms"]["p50"] > 0  # 2 rounds of 2 matches
    assert report["wake_warmup_ms"]["n"] == 2 and len(report["wake_round_max_ms"]) == 2  # and a warm-up round
    assert report["alarm_lateness_ms"]["n"] == 4 and report["alarms_fired"] == 4
    assert report["alarm_lateness_ms"]["p50"] >= 0  # an alarm never runs before it is due
    late = report["alarms_over_10ms_late"]
    assert late["count"] == len(late["at_s_ms"]) and all(ms > 10 for _, ms in late["at_s_ms"])
    assert all(ms > 20 for _, ms in report["alarm_phase_bench_stalls"]["at_s_ms"])
    memory = report["memory"]
    assert memory["matches"] == 10 and memory["connections"] == 20 and memory["spectators"] == 5
    assert memory["http_process"] is None  # one process: it is the worker
    assert [w["matches"] for w in memory["per_worker"]] == [10]
    assert memory["per_worker"][0]["pid"] != report["server"]["pid"]  # a fresh server for the memory phase
    assert memory["client_processes"] == 4  # a primer, spectators, players, late spectators
    assert memory["per_worker"][0]["connection_bytes"] == memory["connection_bytes"]
    for phase in ("wake", "alarms", "memory"):
        assert len(report["phases"][phase]["load_avg_1m"]) == 2


@pytest.mark.slow
def test_bench_hibernation_with_two_workers_measures_each():
    report = bench("--workers", "2")
    assert report["workers"] == 2 and report["alarms_fired"] == 4 and report["wake_ms"]["n"] == 4
    memory = report["memory"]
    workers = memory["per_worker"]
    assert sorted(w["worker"] for w in workers) == [0, 1]
    assert len({w["pid"] for w in workers}) == 2 and report["server"]["worker_pids"]
    assert sum(w["matches"] for w in workers) == 10 == memory["matches"]
    assert all(w["matches"] == 5 for w in workers)  # placement: the least loaded worker
    assert memory["spectators_total"] == 10  # 5 per worker
    assert memory["http_process"]["pid"] not in {w["pid"] for w in workers}


def two_workers() -> Server:
    parent = SimpleNamespace(pid=1)  # the HTTP process
    return Server(process=parent, http_url="http://x", cpus=None,  # type: ignore[arg-type]
                  workers=[Worker(0, 100, "ws://a"), Worker(1, 200, "ws://b")])


def test_memory_figures_sum_over_workers():
    server = two_workers()
    owned = {0: ["m"] * 4, 1: ["n"] * 6}
    # worker 0: connections 1,000 B each, 10,000 B per match beyond its 2 connections
    # worker 1: connections 3,000 B each, 2,000 B per match beyond them
    before = {1: 70 * MB, 100: 50 * MB, 200: 60 * MB}
    spectators = {1: 71 * MB, 100: before[100] + 10 * 1000, 200: before[200] + 10 * 3000}
    hibernated = {1: 72 * MB, 100: spectators[100] + 4 * (2 * 1000 + 10_000),
                  200: spectators[200] + 6 * (2 * 3000 + 2000)}
    late = {1: 73 * MB, 100: hibernated[100] + 10 * 500, 200: hibernated[200] - 10 * 100}  # holes filled
    readings = {"before": before, "spectators": spectators, "hibernated": hibernated, "late_spectators": late}
    figures = memory_figures(server, owned, 10, readings, client_processes=2)
    assert figures["hibernated_bytes_per_match"] == (4 * 10_000 + 6 * 2000) / 10
    assert figures["bytes_per_match_with_connections"] == (4 * 12_000 + 6 * 8000) / 10
    assert figures["connection_bytes"] == (10 * 1000 + 10 * 3000) / 20
    assert figures["late_connection_bytes"] == (10 * 500 - 10 * 100) / 20
    assert figures["hibernated_bytes_per_match_late_spectators"] == (4 * (12_000 - 1000) + 6 * (8000 + 200)) / 10
    assert [w["hibernated_bytes_per_match"] for w in figures["per_worker"]] == [10_000, 2000]
    assert [w["connection_bytes"] for w in figures["per_worker"]] == [1000, 3000]
    assert figures["matches"] == 10 and figures["connections"] == 20 and figures["spectators_total"] == 20
    assert figures["rss_hibernated_mb"] == round((hibernated[100] + hibernated[200]) / MB, 1)  # not the parent's
    assert figures["http_process"] == {"pid": 1, "rss_before_mb": 70.0, "rss_spectators_mb": 71.0,
                                       "rss_hibernated_mb": 72.0, "rss_late_spectators_mb": 73.0}


def test_memory_figures_with_a_worker_that_got_no_match():
    server = two_workers()
    readings = {"before": {1: MB, 100: 10 * MB, 200: 10 * MB},
                "spectators": {1: MB, 100: 10 * MB + 5 * 500, 200: 20 * MB},
                "hibernated": {1: MB, 100: 10 * MB + 5 * 500 + 7000, 200: 30 * MB},
                "late_spectators": {1: MB, 100: 10 * MB + 5 * 500 + 7000, 200: 40 * MB}}
    figures = memory_figures(server, {0: ["m"], 1: []}, 5, readings, client_processes=2)
    assert figures["hibernated_bytes_per_match"] == 7000 - 2 * 500  # worker 1's growth is not a match's
    assert figures["connection_bytes"] == 500
    assert figures["per_worker"][1]["matches"] == 0 and "hibernated_bytes_per_match" not in figures["per_worker"][1]
    assert figures["spectators_total"] == 5


def test_matches_budget_scales_with_workers():
    assert matches_budget(1, 1000, 20_000) == 8000  # 2 x 1,000 spectators besides
    assert matches_budget(2, 1000, 20_000) == 16_000  # room for 10,000
    assert matches_budget(3, 0, 2000) == 3  # never 0 a worker
