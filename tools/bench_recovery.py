"""`arbiter bench recovery`: how long re-activating a long match takes.

Builds an arena match file with `--ticks` logged ticks (4 players, one input each per tick, as in
workload arena), then activates it on a fresh node several times, as after a restart: open the
file, check it, load the latest snapshot, re-simulate the ticks after it with checksums, start
the actor. Prints the figures and, with --json, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from gameserver import storage
from gameserver.config import NodeConfig
from gameserver.games.arena import Arena, Params
from gameserver.node import Node
from gameserver.records import step_record
from gameserver.recovery import create_match_file
from gameserver.simulation import INPUT, JOIN, Command
from gameserver.storage import MatchStore

PLAYERS = ("p1", "p2", "p3", "p4")


def build_match(data_dir: Path, ticks: int, snapshot_every: int, seed: int) -> tuple[str, float]:
    """Write a match of `ticks` ticks; returns its id and the seconds it took."""
    rng = random.Random(seed)
    match_id = f"0{'1' * 25}"
    path = storage.match_path(data_dir, match_id)
    started = time.perf_counter()
    _meta, sim = create_match_file(path, Arena(), match_id=match_id, params=Params(), seed=seed,
                                   snapshot_every=snapshot_every, now=time.time())
    store = MatchStore.open(path)
    try:
        seq = 0
        for tick in range(ticks):
            if tick == 0:
                commands = [Command(JOIN, p) for p in PLAYERS]
            else:
                seq += 1
                commands = [Command(INPUT, p, seq, {"dx": rng.choice((-1, 0, 1)), "dy": rng.choice((-1, 0, 1))})
                            for p in PLAYERS]
            step = sim.step(commands)
            store.commit_step(step_record(sim, step, snapshot_every), now=time.time())
    finally:
        store.close()
    return match_id, time.perf_counter() - started


async def activate(data_dir: Path, match_id: str, snapshot_every: int) -> tuple[float, int]:
    node = Node(NodeConfig(data_dir=data_dir, snapshot_every=snapshot_every), {"arena": Arena})
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        started = time.perf_counter()
        actor = await node.actor(match_id)
        elapsed = time.perf_counter() - started
        tick = actor.sim.tick
        actor.stop()
        await actor.finished.wait()
        nursery.cancel_scope.cancel()
    return elapsed, tick


def run(ticks: int, snapshot_every: int, repeat: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-recovery-") as tmp:
        data_dir = Path(tmp)
        match_id, build_s = build_match(data_dir, ticks, snapshot_every, seed)
        size = storage.match_path(data_dir, match_id).stat().st_size
        times = []
        for _ in range(repeat):
            elapsed, tick = trio.run(activate, data_dir, match_id, snapshot_every)
            # each activation starts the tick loop once before it is stopped: the match grows a tick or two
            times.append(elapsed * 1000)
    return {"workload": "recovery", "logged_ticks": ticks, "players": len(PLAYERS), "snapshot_every": snapshot_every,
            "resimulated_ticks": ticks % snapshot_every, "file_bytes": size, "repeat": repeat,
            "activation_ms": {"min": round(min(times), 2), "median": round(statistics.median(times), 2),
                              "max": round(max(times), 2)},
            "build_s": round(build_s, 2), "last_tick": tick}


def run_cli(args: argparse.Namespace) -> int:
    result = run(args.ticks, args.snapshot_every, args.repeat, args.seed)
    result["command"] = "arbiter bench recovery " + " ".join(sys.argv[3:])
    if not args.json:
        a = result["activation_ms"]
        print(f"re-activating a {args.ticks}-tick arena match ({result['file_bytes'] / 1e6:.1f} MB, snapshot every "
              f"{args.snapshot_every}): median {a['median']} ms, min {a['min']} ms, max {a['max']} ms", file=sys.stderr)
    print(json.dumps(result))
    return 0
