"""`arbiter bench replay`: how fast `arbiter replay verify` and `arbiter replay state --tick` are.

Builds an arena match file as `arbiter bench recovery` does (4 players, one input each per tick,
default 36,000 ticks: 30 minutes at 20 Hz), then measures, in this process:

- verify: the whole `replay verify` path (re-simulation from `init`, every checksum compared), in
  re-simulated ticks per second, one core. Targets: 50,000 ticks/s or more.
- state: opening the file and rebuilding the state after a tick from the nearest snapshot, for
  ticks spread over the match, in milliseconds. Target: within 50 ms.

Also one `arbiter replay state` run as its own process, to show the interpreter's start-up beside
it. Prints the figures and, with --json, only one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from gameserver import storage
from gameserver.games.arena import Arena
from gameserver.recovery import restore

from tools.arguments import positive_int
from tools.replay_open import code_check, open_match
from tools.replay_verify import verify


def run(ticks: int, snapshot_every: int, repeat: int, samples: int, seed: int) -> dict:
    from tools.bench_recovery import PLAYERS, build_match  # imports the node (trio): only when benchmarking

    with tempfile.TemporaryDirectory(prefix="arbiter-bench-replay-") as tmp:
        match_id, build_s = build_match(Path(tmp), ticks, snapshot_every, seed)
        path = storage.match_path(Path(tmp), match_id)
        size = path.stat().st_size
        rates = []
        for _ in range(repeat):
            store = open_match(path)
            try:
                result = verify(store, Arena(), code_check(store.meta(), Arena))
            finally:
                store.close()
            if not result["ok"]:
                raise RuntimeError(f"the benchmark's match did not verify: {result['divergence']}")
            rates.append(result["ticks_per_s"])
        rng = random.Random(seed)
        targets = [rng.randrange(ticks + 1) for _ in range(samples)]
        times = []
        for tick in targets:
            started = time.perf_counter()
            store = open_match(path, check=False)
            try:
                json.dumps({"tick": tick, "state": json.loads(restore(store, Arena(), until=tick).canonical())})
            finally:
                store.close()
            times.append((time.perf_counter() - started) * 1000)
        command = [sys.executable, "-m", "tools.cli", "replay", "state", str(path), "--tick", str(ticks - 1)]
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        process_ms = (time.perf_counter() - started) * 1000
    return {"workload": "replay", "ticks": ticks, "players": len(PLAYERS), "snapshot_every": snapshot_every,
            "file_bytes": size, "build_s": round(build_s, 2),
            "verify_ticks_per_s": {"median": round(statistics.median(rates)), "best": max(rates), "repeat": repeat},
            "state_ms": {"p50": round(statistics.median(times), 2), "max": round(max(times), 2), "samples": samples},
            "state_process_ms": round(process_ms, 1)}


def run_cli(args: argparse.Namespace) -> int:
    result = run(args.ticks, args.snapshot_every, args.repeat, args.samples, args.seed)
    result["command"] = "arbiter bench replay " + " ".join(sys.argv[3:])
    if not args.json:
        v, s = result["verify_ticks_per_s"], result["state_ms"]
        print(f"replay of a {args.ticks}-tick arena match ({result['file_bytes'] / 1e6:.1f} MB, 4 players, snapshot "
              f"every {args.snapshot_every}):\n"
              f"  verify: median {v['median']:,} ticks/s, best {v['best']:,} (of {v['repeat']}; target 50,000)\n"
              f"  state --tick: p50 {s['p50']} ms, max {s['max']} ms over {s['samples']} ticks (target 50 ms); "
              f"as its own process {result['state_process_ms']} ms", file=sys.stderr)
    print(json.dumps(result))
    return 0


def add_parser(workloads: argparse._SubParsersAction) -> None:
    replay = workloads.add_parser("replay", help="replay verify speed and state --tick latency on a long arena match")
    replay.add_argument("--ticks", type=positive_int, default=36_000, help="logged ticks (default 36000: 30 min)")
    replay.add_argument("--snapshot-every", type=positive_int, default=100, help="ticks between snapshots (100)")
    replay.add_argument("--repeat", type=positive_int, default=3, help="verify runs (default 3)")
    replay.add_argument("--samples", type=positive_int, default=20, help="state --tick runs (default 20)")
    replay.add_argument("--seed", type=int, default=1)
    replay.add_argument("--json", action="store_true", help="print only the JSON object")
