"""`arbiter bench hibernation` runs end to end on a tiny scale and reports every field (never timings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_bench_hibernation_reports_its_figures():
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "bench", "hibernation", "--matches", "10", "--moves", "5",
         "--wake-matches", "2", "--wakes", "2", "--alarm-matches", "4", "--bare", "5", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["workload"] == "hibernation"
    assert isinstance(report["hibernated_bytes_per_match"], int)
    assert report["wake_ms"]["n"] == 4 and report["wake_ms"]["p50"] > 0
    assert report["alarm_lateness_ms"]["n"] == 4 and report["alarms_fired"] == 4
    assert report["alarm_lateness_ms"]["p50"] >= 0  # an alarm never runs before it is due
    memory = report["memory"]
    assert memory["matches"] == 10 and memory["connections"] == 20 and memory["spectators"] == 5
