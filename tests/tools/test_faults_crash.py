"""Crash safety: `kill -9` a real `arbiter up` at 20+ points under bot load (tools/faults_crash.py),
and the checks that judge the run (tools/faults_check.py), each shown to catch what it looks for."""

import json
import sqlite3

import pytest
import trio

from gameserver import storage
from gameserver.games import builtin_games
from gameserver.games.arena import Arena, Params
from gameserver.records import step_record
from gameserver.recovery import create_match_file
from gameserver.simulation import INPUT, JOIN, TIMER, Command
from gameserver.storage import MatchStore
from tools.faults_check import Claim, check_data_dir
from tools.faults_crash import KINDS, Options, crash

MATCH = "1" * 26


async def test_kill9_at_twenty_points_under_load_loses_nothing(tmp_path):
    """20 kills: external at random moments, at startup, and inside the commit path (before COMMIT
    and between COMMIT and the acknowledgement); restarts on the same data directory; then every
    acknowledged input, every state a client saw, every match file, every end and every alarm is checked."""
    with trio.fail_after(240):  # about 30 s on an idle 2-core machine
        # One process (`--workers 1`): a worker restarts in twice the time, and a match's crash safety is
        # the same in every worker; `arbiter faults crash` runs against the default workers.
        report = await crash(Options(kills=20, arena_bots=3, connect_four_bots=4, seed=7, workers=1,
                                     keep=tmp_path / "run"))
    (tmp_path / "report.json").write_text(json.dumps(report, indent=1))
    assert report["problems"] == {}, json.dumps(report["problems"], indent=1)
    assert report["ok"] and report["kills"] >= 20 and report["inputs_lost"] == 0
    reached = {how for how in report["kills_by_kind"] if how in KINDS}  # not "... (not reached: killed from outside)"
    assert {"commit-before", "commit-after"} <= reached, report["kills_by_kind"]  # the hook really fired
    assert report["acked_inputs_checked"] >= 100 and report["states_checked"] >= 20
    assert report["files_verified"] == report["match_files"] >= 2
    assert report["matches_finished_by_alarms_after_restart"] == report["matches_unfinished_at_last_kill"]
    assert report["staging_files_left"] == 0


# -- the checks catch what they look for ----------------------------------------------------------


def played_file(data_dir, ticks=30, end=False):
    """An arena match with players a and b, each sending seq 1.. (one input a tick); optionally ended."""
    path = storage.match_path(data_dir, MATCH)
    _meta, sim = create_match_file(path, Arena(), match_id=MATCH, params=Params(), seed=3, snapshot_every=10,
                                   now=1000.0)
    store = MatchStore.open(path)
    sent = {"a": {}, "b": {}}
    try:
        step = sim.step([Command(JOIN, "a"), Command(JOIN, "b")])
        store.commit_step(step_record(sim, step, 10), now=1000.0)
        for t in range(1, ticks):
            for player, dx in (("a", 1), ("b", -1)):
                sent[player][t] = {"dx": dx, "dy": t % 2}
            step = sim.step([Command(INPUT, p, t, sent[p][t]) for p in ("a", "b")])
            store.commit_step(step_record(sim, step, 10), now=1000.0 + t)
        if end:
            sim.params = Params(duration_s=1.0)
            step = sim.step([Command(TIMER, "", 0, {"name": "arbiter:end"})])
            assert step.status is not None
            store.commit_step(step_record(sim, step, 10), now=2000.0)
    finally:
        store.close()
    return path, sim, sent


def claims_of(sim, sent, acked):
    return [Claim(MATCH, p, acked=acked, sent=dict(sent[p]), states=[(sim.tick, json.loads(sim.canonical()))])
            for p in ("a", "b")]


def problems(data_dir, claims, all_finished=False):
    found = check_data_dir(data_dir, claims, builtin_games(), all_finished=all_finished)
    return found.problems, found.figures


def edit_log(path, edit):
    """Rewrite each step's commands in the file's input log (`edit(tick, commands)`): what a bug could do."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT tick, commands FROM steps WHERE commands IS NOT NULL").fetchall()
        conn.executemany("UPDATE steps SET commands = ? WHERE tick = ?",
                         [(json.dumps(edit(tick, json.loads(text))), tick) for tick, text in rows])


def test_a_sound_file_and_true_claims_pass(tmp_path):
    path, sim, sent = played_file(tmp_path)
    found, figures = problems(tmp_path, claims_of(sim, sent, acked=29))
    assert found == {}
    assert figures["acked_inputs_checked"] == 58 and figures["files_verified"] == 1 and figures["states_checked"] == 2


def test_a_lost_acknowledged_input_is_found(tmp_path):
    path, sim, sent = played_file(tmp_path)
    edit_log(path, lambda tick, commands: [c for c in commands if c[1:3] != ["a", 17]])
    found, figures = problems(tmp_path, claims_of(sim, sent, acked=29))
    assert figures["inputs_lost"] == 1 and "seq 17" in found["input_lost"][0]


def test_an_input_logged_with_other_data_or_twice_is_found(tmp_path):
    path, sim, sent = played_file(tmp_path)
    claims = claims_of(sim, sent, acked=29)
    claims[1].sent[5] = {"dx": 1, "dy": 1}  # b says it sent something else than the log has
    edit_log(path, lambda tick, commands: commands + [["input", "a", 3, '{"dx":1,"dy":1}']] if tick == 3 else commands)
    found, _ = problems(tmp_path, claims)
    assert "seq 5" in found["input_differs"][0] and "a seq 3" in found["input_logged_twice"][0]


def test_a_state_the_file_does_not_rebuild_is_found(tmp_path):
    path, sim, sent = played_file(tmp_path)
    claims = claims_of(sim, sent, acked=29)
    tick, state = claims[0].states[0]
    state["players"]["a"]["x"] += 1
    claims[1].states = [(tick + 5, state)]  # a tick the file never committed
    found, _ = problems(tmp_path, claims)
    assert "state_differs" in found and "state_lost" in found


def test_an_end_written_twice_or_a_client_seeing_two_ends_is_found(tmp_path):
    path, sim, sent = played_file(tmp_path, end=True)
    claims = claims_of(sim, sent, acked=29)
    assert problems(tmp_path, claims, all_finished=True)[0] == {}
    claims[0].ends = 2
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO events (tick, idx, kind, data) SELECT tick, idx + 1, kind, data FROM events "
                     "WHERE kind = 'end'")
    found, _ = problems(tmp_path, claims, all_finished=True)
    assert "ended_twice" in found and "client_saw_two_ends" in found


def test_an_unfinished_match_a_diverging_file_and_a_missing_file_are_found(tmp_path):
    path, sim, sent = played_file(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE steps SET checksum = checksum + 1 WHERE tick = 12")
    claims = claims_of(sim, sent, acked=29) + [Claim("2" * 26, "c", acked=3)]
    found, figures = problems(tmp_path, claims, all_finished=True)
    assert "unfinished" in found and "does_not_verify" in found and "no_match_file" in found
    assert figures["inputs_lost"] == 3
