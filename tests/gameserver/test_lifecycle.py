"""Alarms, the match lifecycle and hibernation, on a node under MockClock (in-memory connections).

The node's wall clock is tied to trio's clock, so alarms due in "seconds since the epoch" fire on
MockClock's time, exactly and instantly.
"""

import sqlite3

import attrs
import pytest
import trio

from gameserver import protocol, storage
from gameserver.actor import InputMessage
from gameserver.config import NodeConfig
from gameserver.game import EMPTY_PAUSE, Game
from gameserver.games.arena import Arena
from gameserver.node import MatchOver, Node
from gameserver.protocol import Input
from node_helpers import EPOCH, frames, join, wall

@attrs.define
class Journal:
    fired: list = attrs.field(factory=list)  # [name, ctx.now - EPOCH, ctx.retry]
    fail_until_retry: int = 0  # handlers raise while ctx.retry is below this
    rearm: bool = False
    delete_inside: bool = False


@attrs.frozen
class Order:
    op: str  # alarm | timer | delete_alarm | cancel | fail | rearm
    name: str = ""
    after: float = 0.0
    count: int = 0


class Clockwork(Game):
    """A turn-based game that sets alarms on command and records when its handlers run."""
    name = "clockwork"
    tick_rate = 0
    min_players = 1
    max_players = 2
    state_type = Journal
    input_type = Order
    empty_timeout_s = None

    def init(self, params, ctx):
        return Journal()

    def tick(self, state, inputs, ctx):
        for entry in inputs:
            order = entry.data
            if order.op == "alarm":
                ctx.set_alarm(ctx.now + order.after)
            elif order.op == "timer":
                ctx.set_timer(order.name, ctx.now + order.after)
            elif order.op == "delete_alarm":
                ctx.delete_alarm()
            elif order.op == "cancel":
                ctx.cancel_timer(order.name)
            elif order.op == "fail":
                state.fail_until_retry = order.count
            elif order.op == "rearm":
                state.rearm = True
            elif order.op == "delete_inside":
                state.delete_inside = True

    def on_alarm(self, state, ctx):
        if state.delete_inside:
            ctx.delete_alarm()  # deleting the alarm while its handler runs: the handler goes on
        self._record(state, "alarm", ctx)
        if state.rearm:
            state.rearm = False
            ctx.set_alarm(ctx.now + 5)  # set inside the handler: must be kept

    def on_timer(self, state, name, ctx):
        self._record(state, name, ctx)

    def _record(self, state, name, ctx):
        if ctx.retry < state.fail_until_retry:
            raise RuntimeError(f"attempt {ctx.retry} fails")
        state.fired.append([name, round(ctx.now - EPOCH, 3), ctx.retry])


class QuickArena(Arena):
    name = "quick"
    reconnect_grace_s = 5.0
    empty_timeout_s = 20.0


class PausingArena(QuickArena):
    name = "pausing"
    when_empty = EMPTY_PAUSE


GAMES = {"clockwork": Clockwork, "arena": Arena, "quick": QuickArena, "pausing": PausingArena}


def make_node(tmp_path, **config):
    config.setdefault("hibernate_after_s", float("inf"))
    return Node(NodeConfig(data_dir=tmp_path, **config), GAMES, wall_clock=wall, offload=False)


@pytest.fixture
async def node(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path)
    await nursery.start(node.run)
    yield node
    await node.shutdown()


class Player:
    """A seated clockwork player sending orders."""

    def __init__(self, node, match_id, conn):
        self.node, self.match_id, self.conn, self.seq = node, match_id, conn, 0

    async def order(self, **fields):
        self.seq += 1
        assert await self.node.submit(self.match_id, InputMessage(self.conn, Input(self.seq, fields)))
        await trio.sleep(0)


async def clockwork(node):
    meta = await node.create_match("clockwork")
    return meta.match_id, Player(node, meta.match_id, await join(node, meta.match_id, "ann"))


async def journal(node, match_id):
    return (await node.actor(match_id)).sim.state


# -- alarms -----------------------------------------------------------------------------------


async def test_alarms_and_timers_fire_in_due_order_at_their_time(node, autojump_clock):
    match_id, ann = await clockwork(node)
    start = trio.current_time()
    await ann.order(op="timer", name="b", after=3)
    await ann.order(op="timer", name="a", after=1)
    await ann.order(op="alarm", after=2)
    await trio.sleep(10)
    fired = (await journal(node, match_id)).fired
    assert [f[0] for f in fired] == ["a", "alarm", "b"]
    assert [f[1] for f in fired] == pytest.approx([start + 1, start + 2, start + 3], abs=1e-6)


async def test_setting_again_overwrites_and_deleting_cancels(node, autojump_clock):
    match_id, ann = await clockwork(node)
    await ann.order(op="alarm", after=50)
    await ann.order(op="alarm", after=2)  # overwrites: one alarm, due in 2 s
    await ann.order(op="timer", name="gone", after=1)
    await ann.order(op="cancel", name="gone")
    await trio.sleep(100)
    assert [f[0] for f in (await journal(node, match_id)).fired] == ["alarm"]


async def test_an_alarm_in_the_past_fires_at_once_and_never_twice(node, autojump_clock):
    match_id, ann = await clockwork(node)
    before = trio.current_time()
    await ann.order(op="alarm", after=-30)
    await trio.sleep(0.001)
    fired = (await journal(node, match_id)).fired
    assert len(fired) == 1 and fired[0][1] == pytest.approx(before, abs=0.01)
    await trio.sleep(1000)
    assert len((await journal(node, match_id)).fired) == 1


async def test_an_alarm_set_inside_its_handler_is_kept(node, autojump_clock):
    match_id, ann = await clockwork(node)
    await ann.order(op="rearm")
    await ann.order(op="alarm", after=1)
    await trio.sleep(20)
    fired = (await journal(node, match_id)).fired
    assert [f[0] for f in fired] == ["alarm", "alarm"]
    assert fired[1][1] - fired[0][1] == pytest.approx(5)


async def test_deleting_the_alarm_inside_its_handler_does_not_cancel_the_handler(node, autojump_clock):
    match_id, ann = await clockwork(node)
    await ann.order(op="delete_inside")
    await ann.order(op="alarm", after=1)
    await trio.sleep(10)
    assert [f[0] for f in (await journal(node, match_id)).fired] == ["alarm"]
    assert (await node.actor(match_id)).alarms == {}


async def test_a_raising_handler_is_retried_with_backoff_and_told_the_count(node, autojump_clock):
    match_id, ann = await clockwork(node)
    await ann.order(op="fail", count=3)
    await ann.order(op="alarm", after=1)
    start = trio.current_time()
    await trio.sleep(60)
    fired = (await journal(node, match_id)).fired
    assert fired == [["alarm", pytest.approx(fired[0][1]), 3]]  # the 4th attempt, told retry 3
    waited = fired[0][1] - (start + 1)
    # 1.5, 3 and 6 s, each +-25 %
    assert (1.5 + 3 + 6) * 0.75 <= waited <= (1.5 + 3 + 6) * 1.25
    assert node.metrics.alarm_retries._value.get() == 3


async def test_an_alarm_out_of_retries_is_recorded_as_failed_and_shown(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path, alarm_max_retries=2)
    await nursery.start(node.run)
    match_id, ann = await clockwork(node)
    await ann.order(op="fail", count=99)
    await ann.order(op="timer", name="turn", after=1)
    await trio.sleep(3600)
    status = await node.describe(match_id)
    [alarm] = [a for a in status["alarms"] if a["name"] == "turn"]
    assert alarm["failed"] and alarm["retries"] == 3 and "attempt 2 fails" in alarm["last_error"]
    assert status["failed_alarms"] == 1 and "'turn' failed" in status["status_reason"]
    assert status["status"] == "running"  # the match goes on
    assert (await journal(node, match_id)).fired == []
    row = sqlite3.connect(storage.match_path(tmp_path, match_id)).execute(
        "SELECT failed, retries FROM alarms WHERE name = 'turn'").fetchone()
    assert row == (1, 3)
    await node.shutdown()


async def test_alarms_due_while_the_node_was_down_fire_after_a_restart(tmp_path, autojump_clock):
    async with trio.open_nursery() as nursery:
        first = make_node(tmp_path)
        await nursery.start(first.run)
        match_id, ann = await clockwork(first)
        await ann.order(op="alarm", after=10)
        await ann.order(op="timer", name="later", after=100)
        await trio.sleep(1)
        nursery.cancel_scope.cancel()  # the process dies: nothing more is written
    await trio.sleep(60)  # down for a minute: the alarm came due meanwhile
    restarted = trio.current_time()
    async with trio.open_nursery() as nursery:
        second = make_node(tmp_path)
        await nursery.start(second.run)  # no connection: the scheduler alone activates the match
        await trio.sleep(0.001)
        fired = (await journal(second, match_id)).fired
        assert [f[0] for f in fired] == ["alarm"]
        assert fired[0][1] - restarted < 0.001  # at once
        await trio.sleep(100)
        assert [f[0] for f in (await journal(second, match_id)).fired] == ["alarm", "later"]
        await second.shutdown()
        nursery.cancel_scope.cancel()


# -- the lifecycle ---------------------------------------------------------------------------


async def test_a_lobby_without_enough_players_is_cancelled_and_they_are_told(node, autojump_clock):
    meta = await node.create_match("arena", {"lobby_s": 5})
    assert meta.status == "lobby"
    ann = await join(node, meta.match_id, "ann")
    await trio.sleep(6)
    got = frames(ann)
    end = [f for f in got if f.get("kind") == "end"][-1]
    assert end["data"]["status"] == "cancelled" and "not enough players" in end["data"]["result"]["reason"]
    assert ann.close_request[0] == protocol.CLOSE_NORMAL
    assert (await node.describe(meta.match_id))["status"] == "cancelled"
    with pytest.raises(MatchOver):
        await node.actor(meta.match_id)


async def test_a_lobby_starts_at_its_timeout_and_the_match_ends_on_schedule(node, autojump_clock):
    meta = await node.create_match("arena", {"lobby_s": 5, "duration_s": 30})
    ann, bob = await join(node, meta.match_id, "ann"), await join(node, meta.match_id, "bob")
    actor = await node.actor(meta.match_id)
    await trio.sleep(4)
    assert actor.status == "lobby" and actor.sim.state.tick == 0  # no ticks in the lobby
    await trio.sleep(2)
    assert actor.status == "running"
    started = trio.current_time()
    actor.sim.state.players["bob"].score = 7
    await actor.finished.wait()
    assert trio.current_time() - started == pytest.approx(30 - 1, abs=1.1)
    status = await node.describe(meta.match_id)
    assert status["status"] == "ended" and status["result"]["winners"] == ["bob"]
    assert 580 <= actor.sim.state.tick <= 601  # ticked at 20 Hz while running
    assert [f for f in frames(ann) if f.get("kind") == "end"][0]["data"]["result"]["reason"] == "time"
    assert bob.close_request == (protocol.CLOSE_NORMAL, "match ended")


async def test_a_dropped_player_keeps_the_seat_for_the_grace_period(node, autojump_clock):
    meta = await node.create_match("quick")
    ann, bob = await join(node, meta.match_id, "ann"), await join(node, meta.match_id, "bob")
    actor = await node.actor(meta.match_id)
    node.disconnected(meta.match_id, bob)
    await trio.sleep(3)
    assert "bob" in actor.sim.seated
    bob_again = await join(node, meta.match_id, "bob")  # back within 5 s: the seat is kept
    await trio.sleep(10)
    assert actor.sim.seated == ["ann", "bob"]
    node.disconnected(meta.match_id, bob_again)
    await trio.sleep(6)
    assert actor.sim.seated == ["ann"]  # past the grace: the leave hook ran
    assert "bob" not in actor.sim.state.players
    assert {"player": "bob"} in [f["data"] for f in frames(ann) if f.get("kind") == "leave"]


async def test_an_empty_match_ends_after_its_timeout(node, autojump_clock):
    meta = await node.create_match("quick")
    ann = await join(node, meta.match_id, "ann")
    actor = await node.actor(meta.match_id)
    node.disconnected(meta.match_id, ann)
    await actor.finished.wait()
    status = await node.describe(meta.match_id)
    assert status["status"] == "ended" and status["result"]["reason"] == "abandoned"


async def test_an_empty_match_with_the_pause_policy_pauses_hibernates_and_resumes(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path, hibernate_after_s=10)
    await nursery.start(node.run)
    meta = await node.create_match("pausing")
    ann = await join(node, meta.match_id, "ann")
    actor = await node.actor(meta.match_id)
    node.disconnected(meta.match_id, ann)
    await trio.sleep(21)
    assert actor.paused
    tick = actor.sim.state.tick
    await trio.sleep(15)
    assert meta.match_id not in node.actors and meta.match_id in node.hibernated  # a paused match hibernates
    revived = await node.actor(meta.match_id)  # woken with nobody connected: it stays paused
    assert revived.paused
    await trio.sleep(30)
    assert revived.sim.state.tick == tick and revived.status == "running"
    ann = await join(node, meta.match_id, "ann")  # coming back wakes it and resumes the ticks
    revived = await node.actor(meta.match_id)
    await trio.sleep(1)
    assert not revived.paused and revived.sim.state.tick >= tick + 18
    assert (await node.describe(meta.match_id))["status"] == "running"
    await node.shutdown()


async def test_a_finished_match_is_deleted_when_its_retention_is_over(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path, retention_days=1)
    await nursery.start(node.run)
    meta = await node.create_match("quick")
    ann = await join(node, meta.match_id, "ann")
    node.disconnected(meta.match_id, ann)
    path = storage.match_path(tmp_path, meta.match_id)
    await trio.sleep(60)
    assert (await node.describe(meta.match_id))["status"] == "ended" and path.exists()
    await trio.sleep(86400)
    assert not path.exists()
    await node.shutdown()


# -- hibernation ------------------------------------------------------------------------------


async def test_an_idle_match_hibernates_and_wakes_on_a_message(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path, hibernate_after_s=10)
    await nursery.start(node.run)
    match_id, ann = await clockwork(node)
    await ann.order(op="timer", name="x", after=1000)
    await trio.sleep(11)
    assert match_id not in node.actors and node.hibernated[match_id] == [ann.conn]
    assert not ann.conn.closing
    frames(ann.conn)
    await ann.order(op="timer", name="y", after=1)  # a message wakes it, transparently
    await trio.sleep(0.01)
    got = frames(ann.conn)
    assert got[-1]["t"] == "state" and got[-1]["acks"]["ann"] == ann.seq
    assert match_id in node.actors
    await node.shutdown()
    assert ann.conn.close_request[0] == protocol.CLOSE_GOING_AWAY


async def test_an_alarm_wakes_a_hibernated_match(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path, hibernate_after_s=10)
    await nursery.start(node.run)
    match_id, ann = await clockwork(node)
    await ann.order(op="alarm", after=100)
    await trio.sleep(50)
    assert match_id in node.hibernated
    frames(ann.conn)
    await trio.sleep(51)
    fired = (await journal(node, match_id)).fired
    assert [f[0] for f in fired] == ["alarm"]
    assert [f for f in frames(ann.conn) if f["t"] == "state"]  # the connection saw the alarm's step
    await node.shutdown()


async def test_a_match_woken_by_a_message_receives_it_however_late_its_loop_runs(tmp_path, nursery, autojump_clock):
    """A message en route keeps its match awake: it never hibernates again before delivery."""
    node = make_node(tmp_path, hibernate_after_s=1)
    await nursery.start(node.run)
    match_id, ann = await clockwork(node)
    await trio.sleep(2)
    assert match_id in node.hibernated
    original = Node.actor

    async def sluggish_actor(self, match_id_):
        actor = await original(self, match_id_)
        await trio.sleep(5)  # the node is busy: the woken actor's idle time passes before delivery
        return actor

    node.actor = sluggish_actor.__get__(node)
    ann.seq += 1
    assert await node.submit(match_id, InputMessage(ann.conn, Input(ann.seq, {"op": "timer", "name": "x", "after": 1})))
    await trio.sleep(0.01)
    assert (await original(node, match_id)).sim.last_seq["ann"] == ann.seq  # delivered and applied
