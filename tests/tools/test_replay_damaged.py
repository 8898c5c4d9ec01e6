"""`arbiter replay` on files with damaged content SQLite accepts (exit 2 with a message, never a
traceback; logged commands of the wrong type included), on holes in the input log (a divergence,
not ticks counted unchecked), with a reader of stdout that left (`| head`), and with a `--game`
module that raises on import."""

import contextlib
import io
import json
import os

import pytest

from gameserver import storage
from gameserver.games.arena import Arena, Params
from tools.cli import main
from test_replay import MATCH, arena_batches, digest, record, replay
from match_files import WRONG_COMMANDS, alter, wrong_command


@pytest.fixture
def ended(tmp_path):
    """An arena match of 61 ticks that ended (a snapshot every 10 ticks, and at its last)."""
    path = storage.match_path(tmp_path, MATCH)
    record(path, Arena(), arena_batches(60, end=True), params=Params(duration_s=3.0))
    return path


# -- damaged content: exit 2, a message, the file untouched -----------------------------------------

@pytest.mark.parametrize("damage, actions, words", [
    ("UPDATE match SET result = 'garbage'", ("verify", "state", "inspect", "export"), "match.result is not JSON"),
    ("UPDATE match SET params = 'not json'", ("verify", "state", "inspect", "export"), "match.params is not JSON"),
    ("UPDATE steps SET commands = 'not json' WHERE tick = 5", ("verify",), "steps.commands at tick 5"),
    ("UPDATE steps SET commands = '[[\"input\", \"p1\", 4]]' WHERE tick = 5", ("verify",), "steps.commands at tick 5"),
    ("UPDATE steps SET commands = '[[\"input\", \"p1\", 4, 5]]' WHERE tick = 5", ("verify", "export"),
     "steps.commands"),
    ("UPDATE snapshots SET seated = 'x' WHERE tick = 0", ("verify", "state"), "snapshots.seated at tick 0"),
    ("UPDATE steps SET checksum = 'abc' WHERE tick = 5", ("verify",), "steps at tick 5 has a checksum"),
    ("UPDATE steps SET at = 'noon' WHERE tick = 5", ("verify", "state"), "steps at tick 5 has a checksum"),
    ("UPDATE events SET data = 'garbage' WHERE kind = 'end'", ("export",), "events.data"),
])
def test_damaged_content_exits_2_with_a_message(ended, damage, actions, words):
    alter(ended, damage)
    before = digest(ended)
    for action in actions:
        extra = ("--tick", "5") if action == "state" else ()
        code, out, err = replay(action, ended, *extra)
        assert code == 2 and (out == "" or action == "export"), (action, code, err)  # export: the records before
        assert err.startswith(f"arbiter replay {action}: ") and words in err and "Traceback" not in err, (action, err)
    assert digest(ended) == before


@pytest.mark.parametrize("damage", WRONG_COMMANDS)
def test_a_command_of_the_wrong_type_exits_2_naming_its_tick(ended, damage):
    """Before: exit 1, `DIVERGED at tick 5` (the game blamed: non-determinism, or "game code raised on
    replay" for a str seq), or for state a re-simulation that diverged; export wrote the command out."""
    alter(ended, wrong_command(damage, 5))
    before = digest(ended)
    for action, extra in (("verify", ()), ("verify", ("--json",)), ("state", ("--tick", "5")), ("export", ())):
        code, out, err = replay(action, ended, *extra)
        assert code == 2 and (out == "" or action == "export"), (action, extra, code, out)  # export: the records before
        assert '"type":"input","tick":5,' not in out  # export: the damaged command is not written out
        assert err.startswith(f"arbiter replay {action}: ") and "Traceback" not in err, (action, err)
        assert f"{ended}: damaged: steps.commands at tick 5 is not " in err, (action, err)
    assert replay("state", ended, "--tick", "4")[0] == 0  # before it: rebuilt as ever
    assert digest(ended) == before


# -- holes in the log: a divergence at the first missing tick -----------------------------------------

@pytest.mark.parametrize("damage, tick, last, reason", [
    ("DELETE FROM steps WHERE tick > 40", 41, 61, "tick 41 is missing from the log"),
    ("DELETE FROM steps WHERE tick BETWEEN 25 AND 35", 25, 61, "tick 25 is missing from the log"),
    ("UPDATE steps SET checksum = NULL WHERE tick = 33", 33, 61, "tick 33 has no stored checksum"),
    ("UPDATE match SET tick = 1000", 62, 1000, "tick 62 is missing from the log"),
])
def test_verify_counts_no_tick_it_did_not_check(ended, damage, tick, last, reason):
    """Before: "verified 61 ticks" (or 1000), exit 0, with the missing ticks stepped unchecked."""
    alter(ended, damage)
    code, out, err = replay("verify", ended)
    assert code == 1 and err == ""
    assert out.startswith(f"DIVERGED at tick {tick} of {last}: {reason}")
    assert f"ticks 0 to {tick - 1} matched" in out and "cause: damaged file: the log lacks a step" in out
    code, out, _ = replay("verify", ended, "--json")
    result = json.loads(out)
    assert code == 1 and not result["ok"] and result["verified_ticks"] == tick - 1
    d = result["divergence"]
    assert d["tick"] == tick and d["cause"] == "damaged file" and d["reason"].startswith(reason)
    assert d["compared"] == "none" and d["expected_checksum"] is None


def test_state_refuses_a_tick_past_a_hole(ended):
    alter(ended, "DELETE FROM steps WHERE tick = 33")
    code, out, err = replay("state", ended, "--tick", 35)
    assert code == 2 and out == "" and "damaged: tick 33 is missing from the log" in err
    assert replay("state", ended, "--tick", 32)[0] == 0  # before it: rebuilt as ever


# -- a reader of stdout that left ------------------------------------------------------------------

@pytest.mark.parametrize("argv", [("verify", "--json"), ("verify",), ("state",), ("inspect", "--json"),
                                  ("inspect",), ("export",)])
def test_a_reader_of_stdout_that_left_ends_every_action_quietly(ended, argv):
    """`arbiter replay ... | head`: head has exited before the answer is written (the pipe's read end
    closed), so writing it raises BrokenPipeError. Before: only export handled it."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stdout, stderr = open(write_end, "w"), io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["replay", argv[0], str(ended), *argv[1:]])
    finally:
        stdout.close()  # raises BrokenPipeError if the answer were still buffered for the closed pipe
    assert code == 1 and stderr.getvalue() == ""


# -- a --game module that raises on import ---------------------------------------------------------------

@pytest.mark.parametrize("source, error", [
    ("raise RuntimeError('needs a GPU')", "RuntimeError: needs a GPU"),
    ("def (", "SyntaxError: invalid syntax"),
    ("import json\njson.loads('{')", "JSONDecodeError"),
])
def test_a_game_module_that_raises_on_import_exits_2(ended, tmp_path, monkeypatch, source, error):
    name = f"raising_game_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, err = replay("verify", ended, "--game", f"{name}:Game")
    assert (code, out) == (2, "") and f"--game {name}:Game: cannot import {name}: {error}" in err
    with contextlib.redirect_stderr(io.StringIO()) as up_err:
        assert main(["up", "--game", f"{name}:Game"]) == 2  # `arbiter up` loads games the same way
    assert f"cannot import {name}: {error}" in up_err.getvalue()
