"""`arbiter bench arena`: one short real run (server and bots as processes), and the percentile merge.

Timing figures are reported, never asserted: only their presence and types are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench_arena import percentiles

ROOT = Path(__file__).resolve().parent.parent
NUMBER = (int, float)


@pytest.mark.slow
def test_one_match_runs_and_reports_every_field():
    done = subprocess.run(
        [sys.executable, "-m", "tools.cli", "bench", "arena", "--matches", "1", "--duration", "1",
         "--warmup", "0.5", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # stdout is exactly one JSON object

    assert report["workload"] == "arena"
    assert (report["matches"], report["clients"], report["bot_processes"]) == (1, 4, 1)
    assert report["duration_s"] == 1.0 and report["warmup_s"] == 0.5
    assert set(report["latency_ms"]) == {"p50", "p95", "p99", "max"}
    assert all(isinstance(v, NUMBER) and v >= 0 for v in report["latency_ms"].values())
    lat = report["latency_ms"]
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["inputs_sent"] > 0
    assert report["inputs_acked"] == report["inputs_sent"]
    assert report["lost_inputs"] == 0
    assert report["errors"] == 0 and report["errors_by_kind"] == {}
    assert isinstance(report["state_frames_per_s"], NUMBER) and report["state_frames_per_s"] > 0
    assert report["expected_state_frames_per_s"] == 80
    server = report["server"]
    for key in ("cpu_pct", "rss_mb", "ticks_per_s"):
        assert isinstance(server[key], NUMBER) and server[key] >= 0, key
    assert server["expected_ticks_per_s"] == 20
    assert isinstance(server["late_ticks"], int) and server["late_ticks"] >= 0
    assert isinstance(server["pid"], int)
    assert server["cpu"] is None or isinstance(server["cpu"], list)
    assert isinstance(report["bot_cpu_pct"], NUMBER)
    assert report["command"].startswith("arbiter bench arena --matches 1 --duration 1 ")


def test_percentiles_are_nearest_rank_at_the_bucket_upper_edge_and_max_is_exact():
    # 100 latencies: 98 in [10.0, 10.1) ms, one in [20.0, 20.1), one of 35.42 ms.
    buckets = {100: 98, 200: 1, 354: 1}
    assert percentiles(buckets, 0.1, 35.42) == {"p50": 10.1, "p95": 10.1, "p99": 20.1, "max": 35.42}
    assert percentiles({}, 0.1, 0.0) == {"p50": None, "p95": None, "p99": None, "max": None}
