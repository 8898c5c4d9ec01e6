"""Damaged content that SQLite itself accepts (text that is not JSON, values of the wrong shape or
type, rows removed from the log): every reader says `CorruptFile` naming what is damaged, recovery
refuses to re-simulate past a hole in the log or a logged command of the wrong type, and a node
starts beside such a file and refuses only it."""

import hashlib
import json

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from gameserver import storage
from gameserver.config import NodeConfig
from gameserver.games.arena import Arena, Params
from gameserver.node import MatchUnavailable, Node
from gameserver.records import StepRecord
from gameserver.recovery import MissingStep, create_match_file, restore
from gameserver.simulation import INPUT, Command
from gameserver.storage import CorruptFile, MatchStore
from node_helpers import wall
from test_storage import new_file, play
from match_files import WRONG_COMMANDS, alter, wrong_command, wrong_commands

OTHER = "1" * 26


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def played(tmp_path):
    """A running arena match: 60 ticks, commands at every tick, a snapshot every 10, some events."""
    path, _meta, sim = new_file(tmp_path, snapshot_every=10)
    play(path, sim, 60)
    return path, sim


def _open(path):
    return MatchStore.open(path, read_only=True)


def _read(path, reader):
    store = MatchStore.open(path, read_only=True, check=False)
    try:
        return reader(store)
    finally:
        store.close()


def _commands(path):
    return _read(path, lambda store: list(store.commands_after(0)))


# (damage, how it is read, words the error names)
DAMAGE = [
    ("UPDATE match SET params = 'not json'", _open, "match.params is not JSON"),
    ("UPDATE match SET result = 'garbage'", _open, "match.result is not JSON"),
    ("UPDATE match SET labels = '[1, 2]'", _open, "match.labels is not a JSON object"),
    ("UPDATE match SET labels = '" + "[" * 100_000 + "'", _open, "match.labels is not JSON (RecursionError"),
    ("UPDATE match SET tick = 'lots'", _open, "match.tick is str, not int"),
    ("UPDATE match SET snapshot_every = 0", _open, "match.snapshot_every is 0"),
    ("UPDATE snapshots SET seated = 'x' WHERE tick = 10", lambda p: _read(p, lambda s: s.latest_snapshot(15)),
     "snapshots.seated at tick 10 is not JSON"),
    ("UPDATE snapshots SET last_seq = '[]' WHERE tick = 10", lambda p: _read(p, lambda s: s.latest_snapshot(15)),
     "the snapshot at tick 10 has a column of the wrong type"),
    ("UPDATE steps SET commands = 'not json' WHERE tick = 5", _commands, "steps.commands at tick 5"),
    ("UPDATE steps SET commands = '[[\"input\"]]' WHERE tick = 5", _commands, "steps.commands at tick 5"),
    ("UPDATE steps SET commands = '[[\"input\", \"a\", 4, 5]]' WHERE tick = 5",  # data that is not JSON text
     _commands, "steps.commands at tick 5"),
    ("UPDATE steps SET commands = '7' WHERE tick = 5", _commands, "steps.commands at tick 5"),
    *((f"UPDATE steps SET {change} WHERE tick = 7", lambda p: _read(p, lambda s: s.steps_after(0)),
       "steps at tick 7 has a checksum, time or ticked of the wrong type")
      for change in ("checksum = 'abc'", "checksum = 1.5", "checksum = x'00'", "at = 'noon'", "at = x'01'",
                     "ticked = 2", "ticked = 'yes'")),
    ("UPDATE events SET data = 'garbage' WHERE tick = 1", lambda p: _read(p, lambda s: s.events_after(0)),
     "events.data at tick 1 is not JSON"),
    ("UPDATE events SET data = 'garbage' WHERE tick = 1", lambda p: _read(p, lambda s: s.latest_events_after(0, 10)),
     "events.data at tick 1 is not JSON"),
    ("INSERT INTO kv (key, tick, value) VALUES ('k', 3, '{')", lambda p: _read(p, lambda s: s.kv_at(5)),
     "a kv.value at or before tick 5 is not JSON"),
    ("INSERT INTO connections VALUES (1, 'a', 'player', '{', 1.0)", lambda p: _read(p, lambda s: s.connections()),
     "a connections.attachment is not JSON"),
]


@pytest.mark.parametrize("damage, read, words", DAMAGE)
def test_damaged_content_is_a_corrupt_file_naming_what(played, damage, read, words):
    path, _sim = played
    alter(path, damage)
    before = digest(path)
    with pytest.raises(CorruptFile) as caught:
        read(path)
    assert f"{path}: damaged: {words}" in str(caught.value)
    assert digest(path) == before


def test_commands_read_back_whole_before_the_damaged_tick(played):
    """The rows before the damage are read as they were written; the damaged one raises."""
    path, _sim = played
    alter(path, "UPDATE steps SET commands = '[[\"input\", \"a\", 4, {}]]' WHERE tick = 30")
    store = _open(path)
    try:
        read = []
        with pytest.raises(CorruptFile, match="at tick 30"):
            for tick, batch in store.commands_after(0):
                read.append(tick)
        assert read == list(range(1, 30))
    finally:
        store.close()


# -- logged commands of the wrong type ------------------------------------------------------------------

@pytest.mark.parametrize("damage", WRONG_COMMANDS)
def test_a_command_of_the_wrong_type_is_a_corrupt_file_naming_its_tick(played, damage):
    """Before: read back as written, then re-simulated by recovery: a divergence, or the game's code
    raising (a str seq compared with an int), so the game was blamed for a damaged file."""
    path, _sim = played
    alter(path, wrong_command(damage, 33))
    before = digest(path)
    store = _open(path)
    try:
        read = []
        with pytest.raises(CorruptFile) as caught:
            for tick, _batch in store.commands_after(0):
                read.append(tick)
        assert read == list(range(1, 33))  # the rows before it, as they were written
        assert f"{path}: damaged: steps.commands at tick 33 is not " in str(caught.value)
        with pytest.raises(CorruptFile) as caught:  # from the snapshot at tick 30
            restore(store, Arena(), until=35)
        assert type(caught.value) is CorruptFile and "damaged: steps.commands at tick 33 " in str(caught.value)
        assert [t for t, _ in store.commands_after(33)] == list(range(34, 61))  # the rows after it too
    finally:
        store.close()
    assert digest(path) == before


@pytest.mark.parametrize("damage", WRONG_COMMANDS)
def test_the_logged_input_ranges_refuse_a_command_of_the_wrong_type(played, damage):
    """Before: ranges with a str seq in them, a TypeError, or the command left out as not an input."""
    path, _sim = played
    assert _read(path, lambda store: store.logged_inputs()) == {"a": [[1, 59]], "b": [[1, 59]]}
    alter(path, wrong_command(damage, 33))
    with pytest.raises(CorruptFile, match="damaged: steps.commands at tick 33 "):
        _read(path, lambda store: store.logged_inputs())


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    """A match file of 12 ticks, and its commands at tick 5 as written."""
    path, _meta, sim = new_file(tmp_path_factory.mktemp("wrong"), snapshot_every=10)
    play(path, sim, 12)
    text = _read(path, lambda store: store.conn.execute("SELECT commands FROM steps WHERE tick = 5").fetchone()[0])
    return path, json.loads(text)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_command_of_the_wrong_type_is_a_corrupt_file(one_file, data):
    path, sound = one_file
    damaged = data.draw(wrong_commands(sound))
    alter(path, ("UPDATE steps SET commands = ? WHERE tick = 5", (json.dumps(damaged),)))
    with pytest.raises(CorruptFile, match=f"{path}: damaged: steps.commands at tick 5 is not "):
        _read(path, lambda store: list(store.commands_after(4)))


def other_file(data_dir, *damage):
    """A second match's file, damaged."""
    path = storage.match_path(data_dir, OTHER)
    create_match_file(path, Arena(), match_id=OTHER, params=Params(), seed=1, snapshot_every=10, now=1000.0)
    alter(path, *damage)
    return path


def test_scan_reports_a_file_with_damaged_content_and_lists_the_others(played, tmp_path):
    bad = other_file(tmp_path, "UPDATE match SET result = 'garbage'")
    found, broken = storage.scan(tmp_path)
    assert [m.match_id for m in found] == ["0" * 26]
    assert [p for p, _ in broken] == [bad] and "match.result is not JSON" in broken[0][1]


# -- holes in the log ---------------------------------------------------------------------------------

@pytest.mark.parametrize("damage, until, tick, words", [
    ("DELETE FROM steps WHERE tick BETWEEN 41 AND 45", 45, 41, "tick 41 is missing from the log"),
    ("DELETE FROM steps WHERE tick = 33", 35, 33, "tick 33 is missing from the log"),
    ("UPDATE steps SET checksum = NULL WHERE tick = 33", 35, 33, "tick 33 has no stored checksum"),
    ("UPDATE match SET tick = 1000", None, 61, "tick 61 is missing from the log (the match completed up to "
                                              "tick 1000)"),
])
def test_recovery_refuses_to_resimulate_past_a_hole_in_the_log(played, damage, until, tick, words):
    """Before: the missing tick was stepped with no commands, no time and no check."""
    path, _sim = played
    alter(path, damage)
    store = _open(path)
    try:
        with pytest.raises(MissingStep) as caught:
            restore(store, Arena(), until=until)
    finally:
        store.close()
    assert caught.value.tick == tick and words in str(caught.value)
    assert isinstance(caught.value, CorruptFile)


def test_a_crashed_last_step_is_past_the_last_completed_tick_and_not_a_hole(played):
    """The one step with no checksum a sound file has: the one whose game code crashed, after the
    last completed tick. Recovery and the log read it as before."""
    path, sim = played
    store = MatchStore.open(path)
    try:
        store.commit_step(StepRecord(61, [Command(INPUT, "a", 61, {"dx": 1, "dy": 0})], None,
                                     [("end", {"status": storage.CRASHED})], status=storage.CRASHED,
                                     status_reason="RuntimeError: boom", at=2000.0), now=2000.0)
    finally:
        store.close()
    store = _open(path)
    try:
        assert store.meta().tick == 60 and store.meta().status == storage.CRASHED
        assert restore(store, Arena()).canonical() == sim.canonical()
        assert [t for t, _ in store.commands_after(59)] == [60, 61]  # the crashed step's command is logged
    finally:
        store.close()


# -- a node beside such files -------------------------------------------------------------------------

async def test_a_node_starts_beside_a_file_with_damaged_content_and_reports_it(played, tmp_path, nursery):
    """Before: the start-up scan raised JSONDecodeError and the node did not start at all."""
    moved = other_file(tmp_path, "UPDATE match SET result = 'garbage'")
    before = digest(moved)
    node = Node(NodeConfig(data_dir=tmp_path, snapshot_every=5), {"arena": Arena}, offload=False, wall_clock=wall)
    with trio.fail_after(10):
        await nursery.start(node.run)
    try:
        assert "match.result is not JSON" in node.broken[str(moved)].reason
        assert list(node.unfinished) == ["0" * 26]
        with pytest.raises(MatchUnavailable):
            await node.actor(OTHER)
        assert digest(moved) == before
    finally:
        await node.shutdown()


async def _refused_on_activation(played, data_dir, nursery, damage, words):
    """The match's file, damaged at tick 63 past its last snapshot, is refused when the node
    activates it, reported as unusable (naming `words`) and left as it was."""
    path, sim = played
    play(path, sim, 5)  # to tick 65: recovery starts from the snapshot at 60
    alter(path, damage)
    before = digest(path)
    node = Node(NodeConfig(data_dir=data_dir, snapshot_every=5), {"arena": Arena}, offload=False, wall_clock=wall)
    await nursery.start(node.run)
    try:
        with pytest.raises(MatchUnavailable, match=words):
            await node.actor("0" * 26)
        assert words in node.broken[str(path)].reason
        assert "0" * 26 not in node.unfinished
        assert digest(path) == before
    finally:
        await node.shutdown()


async def test_a_node_refuses_to_activate_a_match_with_a_hole_in_its_log(played, tmp_path, nursery):
    await _refused_on_activation(played, tmp_path, nursery, "DELETE FROM steps WHERE tick = 63",
                                 "tick 63 is missing from the log")


@pytest.mark.parametrize("damage", ["seq a string", "kind unknown", "player a number", "an empty array"])
async def test_a_node_refuses_to_activate_a_match_with_a_command_of_the_wrong_type(played, tmp_path, nursery, damage):
    """Before: recovery re-ran the command and the match was refused as a crash of the game's code
    (`GameCrashed ... TypeError`) or as a divergence, not as a damaged file."""
    await _refused_on_activation(played, tmp_path, nursery, wrong_command(damage, 63),
                                 "damaged: steps.commands at tick 63 ")


async def test_a_node_refuses_to_activate_a_match_with_a_step_time_of_the_wrong_type(played, tmp_path, nursery):
    """Before: the re-simulated step got a string as its time (`ctx.now`), a crash of the game's code."""
    await _refused_on_activation(played, tmp_path, nursery, "UPDATE steps SET at = 'noon' WHERE tick = 63",
                                 "damaged: steps at tick 63 has a checksum, time or ticked of the wrong type")
