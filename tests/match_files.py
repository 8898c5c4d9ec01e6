"""Helpers for tests that damage match files as something outside Arbiter would."""

import sqlite3

from hypothesis import strategies as st

from gameserver.protocol import MAX_SEQ
from gameserver.simulation import KINDS


def alter(path, *statements):
    """Run SQL statements on a match file with sqlite3 (each one SQLite itself accepts), and commit.
    A statement is SQL text, or (SQL text, parameters)."""
    conn = sqlite3.connect(path)
    try:
        for statement in statements:
            conn.execute(*((statement,) if isinstance(statement, str) else statement))
        conn.commit()
    finally:
        conn.close()


# A step's commands of the wrong type, as SQL over its sound `commands` (a JSON array of
# [kind, player, seq, data]): JSON that SQLite and json.loads accept, of a shape Arbiter never writes.
# Before they were checked, each one was read back as commands and re-simulated: a divergence, or a
# crash of the game's code (a str seq compared with an int), blamed on the game.
WRONG_COMMANDS = {
    "seq a string": "json_set(commands, '$[0][2]', '5')",
    "seq negative": "json_set(commands, '$[0][2]', -1)",
    "seq true": "json_set(commands, '$[0][2]', json('true'))",
    "seq false": "json_set(commands, '$[0][2]', json('false'))",
    "seq a float": "json_set(commands, '$[0][2]', 5.0)",
    "seq past 2**53 - 1": f"json_set(commands, '$[0][2]', {MAX_SEQ + 1})",
    "seq null": "json_set(commands, '$[0][2]', json('null'))",
    "player a number": "json_set(commands, '$[0][1]', 7)",
    "player null": "json_set(commands, '$[0][1]', json('null'))",
    "player an array": "json_set(commands, '$[0][1]', json('[\"a\"]'))",
    "kind unknown": "json_set(commands, '$[0][0]', 'jump')",
    "kind a number": "json_set(commands, '$[0][0]', 1)",
    "a command that is a 4-character string": "json_set(commands, '$[0]', 'abc1')",
    "a command that is an object of 4 members":
        "json_set(commands, '$[0]', json('{\"input\":1,\"a\":2,\"b\":3,\"null\":4}'))",
    "an empty array": "'[]'",
    "an object, not an array": "'{\"abc1\": 0}'",
}


def wrong_command(damage, tick):
    """The UPDATE that gives the step at `tick` the damage WRONG_COMMANDS[damage]."""
    return f"UPDATE steps SET commands = {WRONG_COMMANDS[damage]} WHERE tick = {tick}"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=6)


def _sound_seq(value):
    return type(value) is int and 0 <= value <= MAX_SEQ


@st.composite
def wrong_commands(draw, sound):
    """A step's commands (a JSON value) with one thing of the wrong type in it, from `sound` (a list of
    commands as Arbiter writes them, [kind, player, seq, data]): one command's kind, player or seq
    replaced, the command replaced by a JSON value that is not [kind, player, seq, data], or the whole
    array replaced by what is not a non-empty array."""
    commands = [list(command) for command in sound]
    where = draw(st.sampled_from(["kind", "player", "seq", "command", "array"]))
    if where == "array":
        return draw(JSON_VALUES.filter(lambda v: type(v) is not list) | st.just([]))
    i = draw(st.integers(0, len(commands) - 1))
    if where == "kind":
        commands[i][0] = draw(JSON_VALUES.filter(lambda v: v not in KINDS))
    elif where == "player":
        commands[i][1] = draw(JSON_VALUES.filter(lambda v: type(v) is not str))
    elif where == "seq":
        commands[i][2] = draw(JSON_VALUES.filter(lambda v: not _sound_seq(v)) | st.integers(max_value=-1)
                              | st.integers(MAX_SEQ + 1, 2**70))
    else:
        commands[i] = draw(JSON_VALUES.filter(lambda v: not (type(v) is list and len(v) == 4 and v[0] in KINDS
                                                             and type(v[1]) is str and _sound_seq(v[2])))
                           | st.text(min_size=4, max_size=4)
                           | st.dictionaries(st.text(max_size=4), JSON_VALUES, min_size=4, max_size=4))
    return commands
