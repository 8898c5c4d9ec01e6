"""`arbiter bench sweep`'s search, with a fake `bench arena` (no processes)."""

import argparse

from hypothesis import given
from hypothesis import strategies as st

from tools.bench_sweep import sweep


def args(**overrides):
    base = dict(start=25, max=1000, resolution=25, duration=10.0, warmup=2.0, p99_ms=100.0, cpu_pct=90.0,
                synchronous="NORMAL", json=True)
    base.update(overrides)
    return argparse.Namespace(**base)


def fake_report(matches, capacity, bots_limit=10**9):
    ok = matches <= capacity
    return {"clients": 4 * matches, "latency_ms": {"p50": 10.0, "p99": 50.0 if ok else 300.0},
            "server": {"cpu_pct": 0.05 * matches if ok else 99.0, "rss_mb": 70.0, "late_ticks": 0},
            "lost_inputs": 0, "errors": 0, "bot_cpu": [1], "bot_cpu_pct": 95.0 if matches > bots_limit else 40.0,
            "command": f"arbiter bench arena --matches {matches}"}


@given(st.integers(1, 1000), st.integers(1, 100), st.integers(1, 60))
def test_the_sweep_brackets_the_capacity_within_the_resolution(capacity, start, resolution):
    tried = []

    def run_one(matches):
        tried.append(matches)
        return fake_report(matches, capacity)

    report = sweep(args(start=start, resolution=resolution), run_one)
    found = report["capacity_matches"]
    assert found <= capacity
    assert capacity - found < resolution or found == 1000  # below --start too: it bisects down from there
    assert len(tried) == len(set(tried))  # no R is run twice
    assert all(run["passed"] == (run["matches"] <= capacity) for run in report["runs"])


def test_a_failure_with_busy_bots_is_blamed_on_the_bots_and_a_projection_is_given():
    report = sweep(args(start=25, resolution=25), lambda m: fake_report(m, capacity=150, bots_limit=150))
    assert report["capacity_matches"] == 150
    assert report["first_failure_limited_by"] == "bots"
    assert report["projection"] == {"from_matches": 150, "server_cpu_pct_per_match": 0.05,
                                    "matches_per_core_at_limit": 1800}
