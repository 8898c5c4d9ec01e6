"""`arbiter replay`: verify, state, export, inspect; divergence causes; bad files refused untouched."""

import contextlib
import csv
import hashlib
import io
import json
import sqlite3
import tempfile
import threading
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gameserver import storage
from gameserver.alarms import END
from gameserver.game import Game, NoParams
from gameserver.games.arena import Arena, Params
from gameserver.games.connect_four import ConnectFour, Params as FourParams
from gameserver.records import step_record
from gameserver.recovery import create_match_file
from gameserver.simulation import INPUT, JOIN, LEAVE, TIMER, Command
from gameserver.storage import MatchStore
from tools.cli import main
from tools.replay_progress import Progress

MATCH = "0" * 26
PLAYERS = ("p1", "p2", "p3", "p4")


def record(path: Path, game: Game, batches: list[list[Command]], *, snapshot_every: int = 10, seed: int = 5,
           params=None, store: MatchStore | None = None) -> list[bytes]:
    """Write a match as the runtime does (one committed step per batch); the canonical state after each
    tick, from tick 0. With `store`, append to that open (live) file instead of creating one."""
    if store is None:
        _meta, sim = create_match_file(path, game, match_id=MATCH, params=params if params is not None else
                                       game.params_type(), seed=seed, snapshot_every=snapshot_every, now=1000.0)
        store, own = MatchStore.open(path), True
        record.sims[path] = sim
    else:
        sim, own = record.sims[path], False
    states = [sim.canonical()]
    try:
        for batch in batches:
            step = sim.step(batch, now=1000.0 + sim.tick / 20, ticked=True)
            rec = step_record(sim, step, snapshot_every)
            if step.status is not None:  # as the actor does: an ended match keeps none of its alarms
                rec = attrs.evolve(rec, alarm_writes=[(a.name, None) for a in store.alarms()], next_alarm_at=None)
            store.commit_step(rec, now=1000.0 + sim.tick / 20)
            states.append(sim.canonical())
            if step.status is not None:
                break
    finally:
        if own:
            store.close()
    return states


record.sims = {}


def arena_batches(ticks: int, end: bool = False) -> list[list[Command]]:
    batches = [[Command(JOIN, p) for p in PLAYERS]]
    for t in range(1, ticks):
        batches.append([Command(INPUT, p, t, {"dx": (t + i) % 3 - 1, "dy": ((t * 7 + i) % 5 - 2) / 2})
                        for i, p in enumerate(PLAYERS)])
    if end:
        batches.append([Command(TIMER, "", 0, {"name": END, "retry": 0})])
    return batches


def replay(*argv) -> tuple[int, str, str]:
    """Run `arbiter replay ARGV` in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["replay", *map(str, argv)])
    return code, out.getvalue(), err.getvalue()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def arena_file(tmp_path):
    path = storage.match_path(tmp_path, MATCH)
    states = record(path, Arena(), arena_batches(60, end=True), params=Params(duration_s=3.0))
    return path, states


# -- a non-deterministic game, and changed versions of arena -------------------------------------

_TICKS_RUN = [0]  # how many ticks this process has run: what Flaky wrongly reads


@attrs.define
class Total:
    total: int = 0


@attrs.frozen
class Add:
    n: int


class Flaky(Game[Total, Add, NoParams]):
    """Adds its inputs; at `flaky_tick` it also adds a module-level counter, which a replay sees grown."""
    name = "flaky"
    state_type = Total
    input_type = Add
    flaky_tick = 37

    def init(self, params, ctx):
        return Total()

    def tick(self, state, inputs, ctx):
        _TICKS_RUN[0] += 1
        state.total += sum(entry.data.n for entry in inputs)
        if ctx.tick == self.flaky_tick:
            state.total += _TICKS_RUN[0]


class FlakyAtSnapshot(Flaky):
    flaky_tick = 40  # a snapshot tick with snapshot_every=10


class ArenaRenumbered(Arena):
    version = "2.0.0"  # the same rules under a new version


class ArenaFaster(Arena):
    version = "2.0.0"

    def tick(self, state, inputs, ctx):
        super().tick(state, inputs, ctx)
        for p in state.players.values():
            p.x = min(p.x + 1.0, 1000.0)


def flaky_file(tmp_path, cls):
    path = storage.match_path(tmp_path, MATCH)
    batches = [[Command(JOIN, "a")]] + [[Command(INPUT, "a", t, {"n": t % 4})] for t in range(1, 60)]
    record(path, cls(), batches)
    return path


# -- verify ----------------------------------------------------------------------------------------

def test_verify_a_finished_match(arena_file):
    path, states = arena_file
    code, out, err = replay("verify", path)
    assert (code, out.strip(), err) == (0, f"verified {len(states) - 1} ticks", "")
    code, out, _ = replay("verify", path, "--json")
    result = json.loads(out)
    assert code == 0 and result["ok"] and result["verified_ticks"] == 61 and result["status"] == "ended"
    assert result["code"]["same_code"] is True and result["divergence"] is None


@settings(max_examples=30, deadline=None, database=None)
@given(st.lists(st.lists(st.tuples(st.sampled_from(("join", "leave", "input", "input", "input")),
                                   st.sampled_from(PLAYERS[:3]), st.integers(-1, 3),
                                   st.floats(-2, 2, allow_nan=False) | st.integers(-2, 2)),
                         max_size=4), min_size=1, max_size=40),
       st.integers(1, 7), st.integers(0, 2 ** 62))
def test_generated_input_logs_replay_to_identical_checksums(log, snapshot_every, seed):
    with tempfile.TemporaryDirectory() as tmp:
        path = storage.match_path(Path(tmp), MATCH)
        seqs: dict[str, int] = {}
        batches = []
        for tick in log:
            batch = []
            for kind, player, step, value in tick:
                if kind == "input":
                    seqs[player] = seqs.get(player, 0) + step  # 0 or less: a duplicate, refused live
                    batch.append(Command(INPUT, player, seqs[player], {"dx": value, "dy": -value}))
                else:
                    batch.append(Command(JOIN if kind == "join" else LEAVE, player))
            batches.append(batch)
        states = record(path, Arena(), batches, snapshot_every=snapshot_every, seed=seed)
        code, out, _ = replay("verify", path)
        assert (code, out.strip()) == (0, f"verified {len(batches)} ticks (an unfinished match, running: "
                                          "up to its last committed tick when read)")
        for tick in {0, len(batches) // 2, len(batches)}:
            code, out, _ = replay("state", path, "--tick", tick)
            assert code == 0 and json.dumps(json.loads(out)["state"], separators=(",", ":")).encode() == states[tick]


@pytest.mark.parametrize("cls, shown", [(Flaky, "previous"), (FlakyAtSnapshot, "snapshot")])
def test_non_determinism_is_caught_at_its_tick(tmp_path, cls, shown):
    path = flaky_file(tmp_path, cls)
    code, out, err = replay("verify", path, "--game", f"{__name__}:{cls.__name__}")
    assert code == 1 and err == ""
    assert out.startswith(f"DIVERGED at tick {cls.flaky_tick} of 60")
    assert "cause: non-determinism: the game is the recorded version" in out
    assert f"ticks 0 to {cls.flaky_tick - 1} matched" in out and "  total: " in out
    assert f"input a seq {cls.flaky_tick - 1} {{\"n\":" in out  # the commands of that tick
    code, out, _ = replay("verify", path, "--game", f"{__name__}:{cls.__name__}", "--json")
    d = json.loads(out)["divergence"]
    assert code == 1 and d["tick"] == cls.flaky_tick and d["cause"] == "non-determinism" and d["compared"] == shown
    assert json.loads(out)["verified_ticks"] == cls.flaky_tick - 1
    before = d["expected_state"] if shown == "snapshot" else d["previous_state"]
    assert [c["path"] for c in d["diff"]] == ["total"] and before["total"] != d["actual_state"]["total"]
    if shown == "previous":
        assert "there is no snapshot at tick 37" in replay("verify", path, "--game",
                                                          f"{__name__}:{cls.__name__}")[1]


def test_a_new_version_with_the_same_rules_verifies_with_a_warning(arena_file):
    path, _ = arena_file
    code, out, err = replay("verify", path, "--game", f"{__name__}:ArenaRenumbered")
    assert code == 0 and out.startswith("verified 61 ticks")
    assert "warning: recorded with arena 1.0.0" in err and "replayed with arena 2.0.0" in err


def test_a_changed_game_is_told_apart_from_non_determinism(arena_file):
    path, _ = arena_file
    code, out, err = replay("verify", path, "--game", f"{__name__}:ArenaFaster")
    assert code == 1 and "warning" in err
    assert out.startswith("DIVERGED at tick 1 of 61") and "cause: different game version/code: recorded with arena " \
        "1.0.0" in out and "players.p1.x" in out
    assert json.loads(replay("verify", path, "--game", f"{__name__}:ArenaFaster", "--json")[1])[
        "divergence"]["cause"] == "different game version/code"


def test_a_turn_based_match_with_a_timer_verifies(tmp_path):
    path = storage.match_path(tmp_path, MATCH)
    batches = [[Command(JOIN, "a"), Command(JOIN, "b")], [Command(INPUT, "a", 1, {"column": 3})],
               [Command(TIMER, "", 0, {"name": "turn", "retry": 0})],  # b's turn runs out: skipped
               [Command(INPUT, "a", 2, {"column": 3})], [Command(INPUT, "b", 1, {"column": 4})]]
    states = record(path, ConnectFour(), batches, params=FourParams(on_timeout="skip"))
    code, out, _ = replay("verify", path)
    assert code == 0 and out.startswith("verified 5 ticks (an unfinished match")
    answer = json.loads(replay("state", path, "--tick", 3)[1])
    assert answer["state"]["turn"] == "a" and answer["state"]["turn_ends_at"] == answer["timers"]["turn"] == 1030.1
    assert json.dumps(answer["state"], separators=(",", ":")).encode() == states[3]


def test_verify_beside_a_live_writer(tmp_path):
    path = storage.match_path(tmp_path, MATCH)
    record(path, Arena(), arena_batches(30))
    writer = MatchStore.open(path)  # the node's connection: commits go to the WAL, not yet the file
    try:
        record(path, Arena(), arena_batches(60)[30:40], store=writer)
        assert Path(f"{path}-wal").stat().st_size > 0
        code, out, _ = replay("verify", path)
        assert code == 0 and out.startswith("verified 40 ticks")
        more = threading.Thread(target=record, args=(path, Arena(), arena_batches(400)[40:]), kwargs={"store": writer})
        more.start()  # the writer goes on while verify reads
        code, out, _ = replay("verify", path, "--json")
        more.join()
        assert code == 0 and json.loads(out)["verified_ticks"] >= 40
        assert replay("verify", path)[1].startswith("verified 400 ticks")
    finally:
        writer.close()


# -- state, export, inspect --------------------------------------------------------------------------

def test_state_at_any_tick_is_the_recorded_state(arena_file):
    path, states = arena_file
    for tick in (0, 1, 9, 10, 33, 61):
        code, out, _ = replay("state", path, "--tick", tick)
        answer = json.loads(out)
        nearest = 61 if tick == 61 else tick // 10 * 10  # every 10 ticks, and the final tick of a finished match
        assert code == 0 and answer["tick"] == tick and answer["from_snapshot"] == nearest
        assert answer["resimulated_ticks"] == tick - nearest and answer["seated"] == list(PLAYERS[:4] if tick else [])
        assert json.dumps(answer["state"], separators=(",", ":")).encode() == states[tick]
    assert json.loads(replay("state", path)[1])["tick"] == 61  # default: the last tick
    code, _, err = replay("state", path, "--tick", 62)
    assert code == 2 and "past the match's last committed tick, 61" in err


def test_export_jsonl_and_csv(arena_file, tmp_path):
    path, _ = arena_file
    code, out, _ = replay("export", path)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["tick"] for r in rows] == sorted(r["tick"] for r in rows)
    ticks = [r for r in rows if r["type"] == "tick"]
    inputs = [r for r in rows if r["type"] == "input"]
    events = [r for r in rows if r["type"] == "event"]
    assert [r["tick"] for r in ticks] == list(range(62)) and len(inputs) == 4 + 59 * 4 + 1
    assert inputs[4] == {"type": "input", "tick": 2, "idx": 0, "kind": "input", "player": "p1", "seq": 1,
                         "data": {"dx": 0, "dy": 0.0}}
    assert events[-1]["kind"] == "end" and events[-1]["data"]["status"] == "ended"
    target = tmp_path / "out.csv"
    code, out, err = replay("export", path, "--format", "csv", "--output", target)
    table = list(csv.DictReader(target.open()))
    assert code == 0 and out == "" and f"wrote 62 ticks, {len(inputs)} inputs and {len(events)} events" in err
    assert len(table) == len(rows) and table[0]["type"] == "tick" and table[5]["data"] == ""  # a join
    assert next(row for row in table if row["kind"] == "input") == {"type": "input", "tick": "2", "idx": "0", "kind": "input", "player": "p1", "seq": "1",
                        "at": "", "ticked": "", "checksum": "", "data": '{"dx":0,"dy":0.0}'}
    before = digest(path)
    assert replay("export", path, "--output", path)[0] == 2 and digest(path) == before


def test_inspect(arena_file):
    path, _ = arena_file
    code, out, _ = replay("inspect", path, "--json")
    info = json.loads(out)
    assert code == 0 and info["game"] == "arena" and info["game_version"] == "1.0.0"
    assert info["schema_version"] == storage.SCHEMA_VERSION and info["ticks"] == 61 and info["status"] == "ended"
    assert [(p["player_id"], p["inputs"]) for p in info["players"]] == [(p, 59) for p in PLAYERS]
    assert info["commands"] == {"input": 236, "join": 4, "timer": 1} and info["game_seconds"] == 3.05
    assert info["result"]["reason"] == "time" and info["here"]["same_code"] is True
    assert info["bytes"]["file"] == path.stat().st_size and info["alarms"] == []
    code, out, _ = replay("inspect", path)
    assert code == 0 and "arena 1.0.0, the same code" in out and "p1 59, p2 59" in out and '"reason": "time"' in out


def test_inspect_and_export_need_no_game_code(tmp_path):
    path = flaky_file(tmp_path, Flaky)
    code, out, _ = replay("inspect", path)
    assert code == 0 and "not available to this command" in out
    assert replay("export", path)[0] == 0
    code, _, err = replay("verify", path)
    assert code == 2 and "a 'flaky' match, a game this command does not have" in err


def test_progress_shows_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    quiet, shown = io.StringIO(), Terminal()
    for stream in (quiet, shown):
        progress = Progress("verify", 2048, stream, interval_s=0.0)
        progress(1024)
        progress.close()
    assert quiet.getvalue() == ""
    assert "verify: tick 1,024 of 2,048 (50 %)" in shown.getvalue() and shown.getvalue().endswith("\r")


# -- files that cannot be used -----------------------------------------------------------------------

def _random_bytes(path):
    path.write_bytes(bytes(range(256)) * 64)


def _truncated(path):
    record(path, Arena(), arena_batches(300))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _other_sqlite(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE match (x)")
    conn.commit()
    conn.close()


def _schema(version):
    def make(path):
        record(path, Arena(), arena_batches(5))
        conn = sqlite3.connect(path)
        conn.execute(f"PRAGMA user_version = {version}")
        conn.close()
    return make


@pytest.mark.parametrize("make, message", [
    (_random_bytes, "not an SQLite database"),
    (_truncated, "malformed"),
    (_other_sqlite, "not an Arbiter match file"),
    (_schema(storage.SCHEMA_VERSION + 1), "is newer than this Arbiter's"),
    (_schema(3), "needs a migration"),
    (None, "no such file"),
])
@pytest.mark.parametrize("action", ["verify", "state", "export", "inspect"])
def test_unusable_files_exit_2_untouched(tmp_path, make, message, action):
    path = storage.match_path(tmp_path, MATCH)
    path.parent.mkdir(parents=True, exist_ok=True)
    if make is not None:
        make(path)
    before = digest(path) if make is not None else None
    listing = sorted(p.name for p in path.parent.iterdir())
    code, out, err = replay(action, path)
    assert code == 2 and out == "" and err.startswith(f"arbiter replay {action}: ") and message in err
    assert (digest(path) if make is not None else None) == before
    # SQLite may add its empty -wal and -shm beside a WAL-mode file to read it; nothing else appears
    assert [name for name in sorted(p.name for p in path.parent.iterdir())
            if not name.endswith(("-wal", "-shm"))] == listing


def test_a_bad_game_option_exits_2(arena_file):
    code, _, err = replay("verify", arena_file[0], "--game", "nosuchmodule:Game")
    assert code == 2 and "cannot import" in err


def test_inputs_equal_but_for_the_sign_of_a_zero_are_logged_and_replayed_as_sent():
    """0.0 == -0.0, but they encode and simulate differently: the caches of structured inputs and of
    their log texts must not hand one for the other (a hypothesis run above found the replay diverging)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = storage.match_path(Path(tmp), MATCH)
        batches = [[Command(JOIN, "p1"), Command(JOIN, "p2")],
                   [Command(INPUT, "p1", 1, {"dx": -0.0, "dy": 0.0})],
                   [Command(INPUT, "p2", 1, {"dx": 0.0, "dy": -0.0})],
                   [Command(INPUT, "p1", 2, {"dx": 0.0, "dy": -0.0})]]
        record(path, Arena(), batches, snapshot_every=1000, seed=3)
        with contextlib.closing(sqlite3.connect(path)) as conn:  # the log as written, not as read back
            logged = [json.loads(data) for (text,) in conn.execute(
                "SELECT commands FROM steps WHERE commands IS NOT NULL ORDER BY tick")
                for _kind, _player, _seq, data in json.loads(text) if data is not None]
        assert [json.dumps(d) for d in logged] == ['{"dx": -0.0, "dy": 0.0}', '{"dx": 0.0, "dy": -0.0}',
                                                  '{"dx": 0.0, "dy": -0.0}']
        code, out, _ = replay("verify", path)
        assert code == 0, out
