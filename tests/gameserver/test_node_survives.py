"""One bad game, file or client ends one match at most, never the node: the other matches tick on.
(Each case here took down the whole node, or left a join unanswered, before it was handled.)"""

import math

import attrs
import pytest
import trio

from gameserver import protocol
from gameserver.actor import InputMessage, JoinRequest
from gameserver.config import NodeConfig
from gameserver.games.arena import Arena
from gameserver.node import MatchOver, Node
from gameserver.protocol import Input
from node_helpers import Turns, connection, frames, wall


class Base(Turns):
    name = "base"


async def start(tmp_path, nursery, *games, **config):
    node = Node(NodeConfig(data_dir=tmp_path, **config), {g.name: g for g in (Arena, *games)}, wall_clock=wall,
                offload=False)
    await nursery.start(node.run)
    arena = await node.create_match("arena")
    watcher = await join(await node.actor(arena.match_id), "ann")
    return node, arena.match_id, watcher


async def join(actor, player, role="player", fmt=protocol.JSON):
    conn = connection(actor.match_id, player, role, fmt=fmt)
    await actor.submit(JoinRequest(conn))
    with trio.fail_after(5):
        await conn.admitted.wait()
    return conn


async def still_ticking(node, arena_id, watcher):
    actor = await node.actor(arena_id)
    tick = actor.sim.tick
    await trio.sleep(1)
    assert actor.sim.tick >= tick + 19 and not watcher.closing


async def test_a_state_that_fails_its_snapshot_at_hibernation_crashes_only_its_match(tmp_path, nursery,
                                                                                      autojump_clock):
    @attrs.define
    class Loose:
        moves: int = 0

    class Sloppy(Base):
        name = "sloppy"
        state_type = Loose

        def tick(self, state, inputs, ctx):
            state.moves = 1.5  # encodes, but does not come back from a snapshot as an int

    node, arena_id, watcher = await start(tmp_path, nursery, Sloppy, hibernate_after_s=2.0)
    meta = await node.create_match("sloppy")
    actor = await node.actor(meta.match_id)
    conn = await join(actor, "fay")
    await actor.submit(InputMessage(conn, Input(1, {})))
    with trio.fail_after(30):
        await actor.finished.wait()
    status = await node.describe(meta.match_id)
    assert status["status"] == "crashed" and "snapshot round trip" in status["status_reason"]
    assert conn.close_request[0] == protocol.CLOSE_MATCH_CRASHED
    await still_ticking(node, arena_id, watcher)


@attrs.define
class Tree:
    child: "Tree | None" = None


@attrs.define
class Deep:
    tree: Tree | None = None


def tree(depth: int) -> Tree:
    node = Tree()
    for _ in range(depth):
        node = Tree(node)
    return node


async def test_a_state_too_deep_to_encode_crashes_only_its_match(tmp_path, nursery, autojump_clock):
    class Burrow(Base):
        name = "burrow"
        state_type = Deep

        def init(self, params, ctx):
            return Deep()

        def tick(self, state, inputs, ctx):
            if inputs:
                state.tree = tree(5000)

    node, arena_id, watcher = await start(tmp_path, nursery, Burrow)
    meta = await node.create_match("burrow")
    actor = await node.actor(meta.match_id)
    conn = await join(actor, "fay")
    await actor.submit(InputMessage(conn, Input(1, {})))
    with trio.fail_after(5):
        await actor.finished.wait()
    assert (await node.describe(meta.match_id))["status"] == "crashed"
    await still_ticking(node, arena_id, watcher)


async def test_a_state_too_deep_to_copy_before_an_alarm_crashes_only_its_match(tmp_path, nursery, autojump_clock):
    class Alarmed(Base):
        name = "alarmed"
        state_type = Deep

        def init(self, params, ctx):
            ctx.set_alarm(ctx.now + 1.0)
            return Deep()

        def join(self, state, player, ctx):
            state.tree = tree(900)  # encodes here, but deepcopy needs more stack than that

        def on_alarm(self, state, ctx):
            pass

    node, arena_id, watcher = await start(tmp_path, nursery, Alarmed)
    meta = await node.create_match("alarmed")
    actor = await node.actor(meta.match_id)
    await join(actor, "fay")
    with trio.fail_after(5):
        await actor.finished.wait()
    assert (await node.describe(meta.match_id))["status"] == "crashed"
    await still_ticking(node, arena_id, watcher)


async def test_game_exception_text_that_cannot_be_stored_is_escaped(tmp_path, nursery, autojump_clock):
    class Unreadable(Exception):
        def __str__(self):
            raise RuntimeError("no")

    class Garbled(Base):
        name = "garbled"
        error = ValueError("bad \udc80 move")

        def tick(self, state, inputs, ctx):
            if inputs:
                raise self.error

    for error, expected in ((ValueError("bad \udc80 move"), "ValueError: bad \\udc80 move"),
                            (Unreadable(), "Unreadable (its message cannot be read)")):
        game = type("G", (Garbled,), {"name": f"garbled{len(expected)}", "error": error})
        node, arena_id, watcher = await start(tmp_path / game.name, nursery, game)
        meta = await node.create_match(game.name)
        actor = await node.actor(meta.match_id)
        conn = await join(actor, "fay")
        await actor.submit(InputMessage(conn, Input(1, {})))
        with trio.fail_after(5):
            await actor.finished.wait()
        status = await node.describe(meta.match_id)
        assert status["status"] == "crashed" and status["status_reason"] == expected
        await still_ticking(node, arena_id, watcher)


@attrs.define
class Big:
    value: int = 2**70


async def test_data_msgpack_cannot_carry_closes_those_connections_only(tmp_path, nursery, autojump_clock):
    class Huge(Base):
        name = "huge"
        state_type = Big

        def init(self, params, ctx):
            return Big()

        def tick(self, state, inputs, ctx):
            ctx.emit("big", {"n": 2**70})

    node, arena_id, watcher = await start(tmp_path, nursery, Huge)
    meta = await node.create_match("huge")
    actor = await node.actor(meta.match_id)
    player = await join(actor, "fay")  # JSON: integers of any size
    spectator = connection(meta.match_id, "sam", "spectator", fmt=protocol.MSGPACK)
    await actor.submit(JoinRequest(spectator))
    with trio.fail_after(5):
        await spectator.admitted.wait()
    assert spectator.admission_error == (protocol.CLOSE_UNSENDABLE, protocol.UNSENDABLE_REASON)
    await actor.submit(InputMessage(player, Input(1, {})))
    await trio.sleep(0.5)
    got = frames(player)
    assert any(f["t"] == "event" and f["data"] == {"n": 2**70} for f in got)
    assert got[-1]["t"] == "state" and got[-1]["state"] == {"value": 2**70}
    assert actor.status == "running" and not player.closing
    await still_ticking(node, arena_id, watcher)


async def test_an_event_msgpack_cannot_carry_closes_a_msgpack_player_and_the_match_goes_on(
        tmp_path, nursery, autojump_clock):
    class Loud(Base):
        name = "loud"

        def tick(self, state, inputs, ctx):
            state.moves += len(inputs)
            if state.moves >= 2:
                ctx.emit("big", {"n": -2**70})

    node, arena_id, watcher = await start(tmp_path, nursery, Loud)
    meta = await node.create_match("loud")
    actor = await node.actor(meta.match_id)
    fay = await join(actor, "fay", fmt=protocol.MSGPACK)
    bob = await join(actor, "bob")
    await actor.submit(InputMessage(fay, Input(1, {})))
    await trio.sleep(0.1)
    await actor.submit(InputMessage(bob, Input(1, {})))
    await trio.sleep(0.1)
    assert fay.close_request == (protocol.CLOSE_UNSENDABLE, protocol.UNSENDABLE_REASON)
    assert any(f["t"] == "event" and f["kind"] == "big" for f in frames(bob)) and not bob.closing
    assert actor.status == "running"
    await still_ticking(node, arena_id, watcher)


async def test_joiners_and_roster_changes_of_a_step_whose_commit_fails_are_answered(tmp_path, nursery,
                                                                                     autojump_clock):
    node, arena_id, watcher = await start(tmp_path, nursery, Base)
    meta = await node.create_match("base", roster=["fay", "bob", "cy"])
    actor = await node.actor(meta.match_id)
    await join(actor, "fay")
    actor.store.conn.execute("PRAGMA query_only = ON")  # the storage refuses every write from here on
    bob = connection(meta.match_id, "bob")
    await actor.submit(JoinRequest(bob))
    with trio.fail_after(5):
        await bob.admitted.wait()
    assert bob.admission_error is not None and bob.admission_error[0] == protocol.CLOSE_MATCH_OVER
    with trio.fail_after(5):
        await actor.finished.wait()
    assert actor.status == "failed"
    meta2 = await node.create_match("base", roster=["a", "b"])
    actor2 = await node.actor(meta2.match_id)
    actor2.store.conn.execute("PRAGMA query_only = ON")
    with trio.fail_after(5), pytest.raises(MatchOver):  # answered (not applied), not left waiting
        await node.change_roster(meta2.match_id, ["c"])
    await still_ticking(node, arena_id, watcher)


async def test_an_unexpected_error_in_an_actor_fails_that_match_only(tmp_path, nursery, autojump_clock, monkeypatch):
    node, arena_id, watcher = await start(tmp_path, nursery, Base)
    meta = await node.create_match("base")
    actor = await node.actor(meta.match_id)
    conn = await join(actor, "fay")

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(actor, "_send_step", broken)
    await actor.submit(InputMessage(conn, Input(1, {})))
    with trio.fail_after(5):
        await actor.finished.wait()
    assert actor.status == "failed" and "RuntimeError: a bug" in actor.status_reason
    assert conn.close_request[0] == protocol.CLOSE_INTERNAL
    await still_ticking(node, arena_id, watcher)


@pytest.mark.parametrize("attribute, value", [
    ("reconnect_grace_s", None), ("reconnect_grace_s", "30"), ("reconnect_grace_s", math.nan),
    ("empty_timeout_s", "300"), ("empty_timeout_s", -1.0), ("lobby_timeout_s", math.inf),
    ("tick_rate", 20.0), ("max_players", "4"), ("backfill", 1), ("version", 2),
])
def test_nonsense_class_attributes_are_refused_when_the_node_is_made(tmp_path, attribute, value):
    game = type("Odd", (Base,), {"name": "odd", attribute: value})
    with pytest.raises(TypeError, match=attribute.split("_s")[0] if attribute != "version" else "version"):
        Node(NodeConfig(data_dir=tmp_path), {"odd": game})


def test_a_game_registered_under_another_name_is_refused(tmp_path):
    with pytest.raises(TypeError, match="named 'base', not 'other'"):
        Node(NodeConfig(data_dir=tmp_path), {"other": Base})


async def test_a_stale_game_alarm_leaves_no_hole_in_the_log(tmp_path, nursery, autojump_clock):
    """An alarm the actor still had but the game had deleted runs a step that applies nothing: that
    step must not count, or the next committed tick leaves a hole, which recovery refuses as damage."""
    from gameserver import storage
    from gameserver.alarms import ALARM
    from gameserver.recovery import restore
    from gameserver.storage import MatchStore

    node, _arena_id, _watcher = await start(tmp_path, nursery, Base)
    meta = await node.create_match("base")
    actor = await node.actor(meta.match_id)
    conn = await join(actor, "fay")
    tick = actor.sim.tick
    actor._set_alarm(ALARM, wall())  # not among the game's timers: stale
    actor._flush_alarms()
    actor.poke()
    await trio.sleep(0.1)
    assert ALARM not in actor.alarms and actor.sim.tick == tick
    await actor.submit(InputMessage(conn, Input(1, {})))
    await trio.sleep(0.1)
    assert actor.sim.tick == tick + 1
    store = MatchStore.open(storage.match_path(node.data_dir, meta.match_id), read_only=True)
    try:
        assert restore(store, Base()).canonical() == actor.sim.canonical()
    finally:
        store.close()
