"""`arbiter bench matchmaker` runs end to end on a tiny scale and reports every field (never timings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def test_bench_matchmaker_reports_its_figures():
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "bench", "matchmaker", "--form-tickets", "500", "--api-tickets", "40",
         "--api-processes", "1", "--api-connections", "2", "--matches", "4", "--concurrency", "2", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["workload"] == "matchmaker"
    assert is_number(report["form_pass_s"]) and report["form_pass"]["tickets"] == 500
    assert is_number(report["api_requests_per_s"]) and report["api_requests_per_s"] > 0
    api = report["api"]
    assert api["requests"] == 80 and api["tickets"] == 40 and api["errors"] == 0
    assert api["pool_at_end"] == 40  # no ticket matched another: the pool only grew
    for name in ("client_cpu_pct", "server_cpu_pct", "server_cpu_ms_per_request"):
        assert is_number(api[name]), name
    assignment = report["assignment_ms"]
    assert assignment["count"] == 4
    assert all(is_number(assignment[name]) for name in ("p50", "p99", "max"))
    assert 0 <= assignment["p50"] <= assignment["p99"] <= assignment["max"]
    assert report["assignment"]["errors"] == 0 and report["assignment"]["rounds_unmeasured"] == 0
    assert set(report["targets"]) == {"form_pass_s", "api_requests_per_s", "assignment_ms_p99"}
