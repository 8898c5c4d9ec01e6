"""`arbiter bench attack` runs end to end and reports each phase (its figures are not asserted:
a benchmark reports, tests do not pass on timings)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_the_attack_bench_reports_a_baseline_and_each_attack():
    run = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "attack", "--attacks", "garbage,huge",
                          "--matches", "2", "--duration", "1", "--rest", "0", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert [p["phase"] for p in report["phases"]] == ["baseline", "garbage", "huge"]
    assert report["victims"] == 4 and report["command"].startswith("arbiter bench attack --attacks garbage,huge")
    for phase in report["phases"]:
        assert phase["metrics_error"] is None and phase["ticks"] > 0 and phase["victims_closed"] == 0
    garbage, huge = report["phases"][1]["attacker"], report["phases"][2]["attacker"]
    assert garbage["connections"] > 0 and set(garbage["closes"]) <= {"1008", "1006"}
    assert huge["connections"] > 0 and set(huge["closes"]) <= {"1009", "1006"}


def test_unknown_attacks_are_refused():
    run = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "attack", "--attacks", "nuke"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "unknown attacks ['nuke']" in run.stderr
