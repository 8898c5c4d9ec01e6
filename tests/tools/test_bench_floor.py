"""`arbiter bench floor`: a short real run (the floor server and its bots as processes), and its
arguments. Timing figures are reported, never asserted: only what a bug would change is."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench_floor import run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_tick_the_floor_server_counts_is_a_row_in_its_matchs_file(tmp_path):
    affinity = os.sched_getaffinity(0)
    report = run(matches=2, duration_s=0.5, warmup_s=0.2, storage=True, seed=3, keep_files_in=tmp_path)

    assert os.sched_getaffinity(0) == affinity  # the benchmark pins itself only while it runs
    server = report["server"]
    assert (report["matches"], report["clients"], report["storage"]) == (2, 8, True)
    assert server["expected_ticks_per_s"] == 40
    assert server["ticks_total"] > 0 and server["inputs_per_s"] > 0
    assert report["bots"]["inputs_sent"] > 0
    rows = 0
    for index in range(2):
        with sqlite3.connect(tmp_path / f"floor-{index}.sqlite") as db:
            ticks = [tick for (tick,) in db.execute("SELECT tick FROM steps ORDER BY tick")]
            logged = sum(len(json.loads(c)) for (c,) in db.execute("SELECT commands FROM steps WHERE commands IS NOT NULL"))
        assert ticks == list(range(1, len(ticks) + 1))  # one row per tick, none missing
        assert logged > 0  # the bots' inputs are in the log
        rows += len(ticks)
    assert rows == server["ticks_total"]


@pytest.mark.slow
def test_without_storage_no_file_is_written(tmp_path):
    report = run(matches=1, duration_s=0.3, warmup_s=0.0, storage=False, seed=1, keep_files_in=tmp_path)
    assert report["storage"] is False and report["server"]["ticks_total"] > 0
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("arguments", [["--matches", "0"], ["--matches", "2001"], ["--matches", "x"],
                                       ["--duration", "0"], ["--duration", "nan"], ["--duration", "inf"],
                                       ["--warmup", "-1"], ["--warmup", "nan"]])
def test_bad_arguments_exit_2_with_a_message(arguments):
    done = subprocess.run([sys.executable, "-m", "tools.cli", "bench", "floor", *arguments], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "error: argument" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_stranger_with_garbage_does_not_stop_the_floor_server():
    from gameserver.websocket import client_message
    from tools.floor_bots import run as run_bots

    server = subprocess.Popen([sys.executable, "-m", "tools.floor_server", "1", "0", "0.3", "-"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(server.stdout.readline().partition(" ")[2])["port"]
        for garbage in (b"not json", b'{"match": 7}', b'{"match": "0"}', b"[]"):
            with socket.create_connection(("127.0.0.1", port)) as stranger:
                stranger.sendall(client_message(garbage, b"abcd"))
                assert stranger.recv(10) == b""  # dropped
        sent = run_bots(port, matches=1, seconds=30, seed=1)  # returns once the server ends its window
        assert server.stdout.readline().strip() == "joined {}"
        figures = json.loads(server.stdout.readline().partition(" ")[2])
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert sent > 0 and figures["ticks_total"] > 0 and figures["storage"] is False
