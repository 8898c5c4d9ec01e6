"""Watching a replay of a file with damaged content SQLite accepts, or a hole in its log: the stream
closes with its documented code (4004 when the file cannot even start, 1011 when it fails part way)
and logs the reason, never an unexpected exception."""

import logging
import sqlite3

import pytest

from gameserver import protocol
from test_replay_watch import MATCH, Closed, arena_batches, record, streams_for, token, watching
from match_files import wrong_command


def alter(path, statement):
    conn = sqlite3.connect(path)
    try:
        conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("damage", [
    "UPDATE match SET result = 'garbage'",  # read when the file is opened
    "UPDATE snapshots SET timers = '{' WHERE tick = 0",  # read for the first state, at tick 0
    "UPDATE match SET snapshot_every = 0",
])
async def test_a_file_that_cannot_start_closes_with_4004(tmp_path, autojump_clock, caplog, damage):
    recording = record(tmp_path, arena_batches(40))
    alter(recording.path, damage)
    async with watching(streams_for(tmp_path)) as viewer:
        await viewer.send(t="auth", token=token())
        assert await viewer.closed() == Closed(protocol.CLOSE_MATCH_NOT_FOUND, f"match {MATCH} cannot be replayed")
    refused = [r for r in caplog.records if r.name == "arbiter.replay" and "refused" in r.getMessage()]
    assert len(refused) == 1 and "damaged" in refused[0].getMessage() and refused[0].exc_info is None


@pytest.mark.parametrize("damage, why", [
    ("UPDATE steps SET commands = '[[\"input\", \"p1\", 24, 5]]' WHERE tick = 25", "steps.commands at tick 25"),
    ("UPDATE steps SET commands = 'not json' WHERE tick = 25", "steps.commands at tick 25"),
    ("DELETE FROM steps WHERE tick = 25", "tick 25 is missing from the log"),  # before: played on, unchecked
    # before: "the game's code raised on replay at tick 25", with the game's traceback logged
    (wrong_command("seq a string", 25), "damaged: steps.commands at tick 25 is not "),
    # before: "the replay diverged from the recording at tick 25"
    (wrong_command("kind unknown", 25), "damaged: steps.commands at tick 25 is not "),
    (wrong_command("seq true", 25), "damaged: steps.commands at tick 25 is not "),
    (wrong_command("player a number", 25), "damaged: steps.commands at tick 25 is not "),
    ("UPDATE events SET data = '{' WHERE kind = 'end'", "events.data at tick 41"),
])
async def test_a_file_that_fails_part_way_closes_with_1011(tmp_path, autojump_clock, caplog, damage, why):
    recording = record(tmp_path, arena_batches(40))
    alter(recording.path, damage)
    caplog.set_level(logging.INFO, "arbiter.replay")
    async with watching(streams_for(tmp_path)) as viewer:
        await viewer.start()
        await viewer.send(t="speed", speed=8)
        assert await viewer.closed() == Closed(protocol.CLOSE_INTERNAL, "the match file cannot be read")
    failed = [r for r in caplog.records if r.name == "arbiter.replay" and r.levelno == logging.ERROR]
    assert len(failed) == 1 and why in failed[0].getMessage() and failed[0].exc_info is None
