"""Game code that runs outside the simulation step (`view`, `audience`, `duration`, `lobby_timeout`)
raising or answering nonsense crashes that match only, like a raising `tick`: never the node."""

import math
import sqlite3

import pytest
import trio

from gameserver import protocol, storage
from gameserver.actor import InputMessage, JoinRequest
from gameserver.config import NodeConfig
from gameserver.game import Game, Result
from gameserver.games.arena import Arena
from gameserver.node import InvalidParams, Node
from gameserver.protocol import Input
from gameserver.replay_source import ReplayFailed, ReplaySource
from gameserver.storage import MatchStore
from node_helpers import Count, Move, connection, frames, wall
from tools.replay_open import code_check
from tools.replay_verify import verify


class Fragile(Game):
    """Turn-based; its hooks raise once `moves` reaches `limit` (or the named hook always)."""
    name = "fragile_view"
    tick_rate = 0
    max_players = 2
    state_type = Count
    input_type = Move
    limit = 2

    def init(self, params, ctx):
        return Count()

    def tick(self, state, inputs, ctx):
        state.moves += len(inputs)

    def audience(self, state, player):
        return player

    def view(self, state, audience):
        if state.moves >= self.limit:
            raise RuntimeError("view boom")
        return {"moves": state.moves}


class Unhashable(Fragile):
    name = "unhashable_audience"

    def audience(self, state, player):
        return [player] if state.moves >= self.limit else player

    def view(self, state, audience):
        return {"moves": state.moves}


class NotJSON(Fragile):
    name = "view_not_json"

    def view(self, state, audience):
        return {"moves": math.nan if state.moves >= self.limit else state.moves}


async def _node(tmp_path, nursery, *games):
    node = Node(NodeConfig(data_dir=tmp_path), {g.name: g for g in (Arena, *games)}, wall_clock=wall, offload=False)
    await nursery.start(node.run)
    return node


async def _join(actor, player, role="player"):
    conn = connection(actor.match_id, player, role)
    await actor.submit(JoinRequest(conn))
    with trio.fail_after(5):
        await conn.admitted.wait()
    return conn


@pytest.mark.parametrize("game", [Fragile, Unhashable, NotJSON])
async def test_a_raising_view_crashes_its_match_after_the_committed_step(game, tmp_path, nursery, autojump_clock):
    node = await _node(tmp_path, nursery, game)
    arena = await node.create_match("arena")
    other = await _join(await node.actor(arena.match_id), "ann")
    meta = await node.create_match(game.name)
    actor = await node.actor(meta.match_id)
    conn = await _join(actor, "fay")
    assert conn.admission_error is None
    for seq in (1, 2):
        await actor.submit(InputMessage(conn, Input(seq, {})))
    with trio.fail_after(5):
        await actor.finished.wait()
    got = frames(conn)
    assert got[-1]["t"] == "event" and got[-1]["kind"] == "end" and got[-1]["data"]["status"] == "crashed"
    assert conn.close_request[0] == protocol.CLOSE_MATCH_CRASHED
    status = await node.describe(meta.match_id)
    assert status["status"] == "crashed"
    # the step whose view raised is committed (its inputs were acknowledged in no frame, but they count);
    # the crash is the next step, with no commands and no checksum
    path = storage.match_path(node.data_dir, meta.match_id)
    rows = sqlite3.connect(path).execute("SELECT tick, checksum IS NULL, commands FROM steps ORDER BY tick").fetchall()
    crashed_at = rows[-1][0]
    assert rows[-1][1:] == (1, None)
    assert all(not no_checksum for _tick, no_checksum, _c in rows[:-1])
    store = MatchStore.open(path, read_only=True)
    try:
        assert store.meta().tick == crashed_at - 1
        result = verify(store, game(), code_check(store.meta(), game))
        assert result["ok"] and result["verified_ticks"] == crashed_at - 1
    finally:
        store.close()
    # the node goes on: the other match still ticks
    tick = (await node.actor(arena.match_id)).sim.tick
    await trio.sleep(1)
    assert (await node.actor(arena.match_id)).sim.tick >= tick + 19 and not other.closing


async def test_replaying_a_view_that_raises_fails_with_a_message(tmp_path, nursery, autojump_clock):
    node = await _node(tmp_path, nursery, Fragile)
    meta = await node.create_match(Fragile.name)
    actor = await node.actor(meta.match_id)
    conn = await _join(actor, "fay")
    for seq in (1, 2):
        await actor.submit(InputMessage(conn, Input(seq, {})))
    with trio.fail_after(5):
        await actor.finished.wait()
    source = ReplaySource.open(storage.match_path(node.data_dir, meta.match_id), {Fragile.name: Fragile()})
    try:
        source.seek(0)
        with pytest.raises(ReplayFailed, match="raised on replay"):
            source.advance(10)
    finally:
        source.close()


async def test_a_joiner_whose_welcome_view_raises_is_answered(tmp_path, nursery, autojump_clock):
    class Picky(Fragile):
        name = "picky_view"

        def view(self, state, audience):
            if audience == "bob":
                raise RuntimeError("not for bob")
            return {"moves": state.moves}

    node = await _node(tmp_path, nursery, Picky)
    meta = await node.create_match(Picky.name)
    actor = await node.actor(meta.match_id)
    fay = await _join(actor, "fay")
    assert fay.admission_error is None
    bob = await _join(actor, "bob")
    assert bob.admission_error is not None and bob.admission_error[0] == protocol.CLOSE_MATCH_OVER
    with trio.fail_after(5):
        await actor.finished.wait()
    assert fay.close_request[0] == protocol.CLOSE_MATCH_CRASHED
    assert (await node.describe(meta.match_id))["status"] == "crashed"


async def test_joiners_of_a_step_whose_events_are_not_json_are_answered(tmp_path, nursery, autojump_clock):
    class BadEvent(Fragile):
        name = "bad_event"

        def join(self, state, player, ctx):
            ctx.emit("hello", {"at": math.inf})

        def view(self, state, audience):
            return {"moves": state.moves}

    node = await _node(tmp_path, nursery, BadEvent)
    meta = await node.create_match(BadEvent.name)
    actor = await node.actor(meta.match_id)
    conn = connection(meta.match_id, "fay")
    await actor.submit(JoinRequest(conn))
    with trio.fail_after(5):
        await conn.admitted.wait()
    assert conn.admission_error[0] == protocol.CLOSE_MATCH_OVER
    assert (await node.describe(meta.match_id))["status"] == "crashed"


class Timed(Game):
    """A lobby until two players are seated; then `duration` decides how long the match runs."""
    name = "timed"
    tick_rate = 10
    max_players = 2
    state_type = Count
    input_type = Move
    lobby_timeout_s = 30.0
    length: object = 10.0

    def init(self, params, ctx):
        return Count()

    def duration(self, params):
        if isinstance(self.length, Exception):
            raise self.length
        return self.length

    def time_up(self, state, ctx):
        return Result(reason="time")


@pytest.mark.parametrize("length", [RuntimeError("no clock"), math.nan, "10", True])
async def test_a_duration_that_raises_or_is_not_seconds_crashes_the_match_at_its_start(
        length, tmp_path, nursery, autojump_clock):
    game = type("TimedBad", (Timed,), {"name": "timed_bad", "length": length})
    node = await _node(tmp_path, nursery, game)
    meta = await node.create_match(game.name)
    actor = await node.actor(meta.match_id)
    fay = await _join(actor, "fay")
    bob = connection(meta.match_id, "bob")
    await actor.submit(JoinRequest(bob))  # the second player starts the match: duration is asked then
    with trio.fail_after(5):
        await bob.admitted.wait()
        await actor.finished.wait()
    assert bob.admission_error[0] == protocol.CLOSE_MATCH_OVER
    assert fay.close_request[0] == protocol.CLOSE_MATCH_CRASHED
    status = await node.describe(meta.match_id)
    assert status["status"] == "crashed"
    assert ("no clock" if isinstance(length, Exception) else "duration must return") in status["status_reason"]


async def test_a_good_duration_still_ends_the_match(tmp_path, nursery, autojump_clock):
    node = await _node(tmp_path, nursery, Timed)
    meta = await node.create_match(Timed.name)
    actor = await node.actor(meta.match_id)
    for player in ("fay", "bob"):
        await _join(actor, player)
    with trio.fail_after(15):
        await actor.finished.wait()
    assert (await node.describe(meta.match_id))["status"] == "ended"


@pytest.mark.parametrize("hook", ["lobby_timeout", "duration"])
@pytest.mark.parametrize("answer", [RuntimeError("boom"), math.inf, "soon"])
async def test_creating_a_match_whose_timing_hooks_fail_is_refused(hook, answer, tmp_path, nursery):
    def raising(self, params):
        if isinstance(answer, Exception):
            raise answer
        return answer

    overrides = {"name": "timing", hook: raising}
    if hook == "duration":
        overrides["lobby_timeout_s"] = None  # no lobby: the length is set at creation
    game = type("Timing", (Timed,), overrides)
    node = await _node(tmp_path, nursery, game)
    with pytest.raises(InvalidParams, match="could not start a match"):
        await node.create_match(game.name)
    assert list((tmp_path / "matches").glob(f"*{storage.SUFFIX}")) == []
