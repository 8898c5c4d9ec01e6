"""The plugin API's promises: kv survives recovery exactly, views hide information, events are logged."""

import json

import attrs
import pytest
import trio

from gameserver import protocol, storage
from gameserver.actor import InputMessage, JoinRequest
from gameserver.config import NodeConfig
from gameserver.game import Game, KeyValue, NoParams
from gameserver.node import Node
from gameserver.protocol import Input
from gameserver.records import step_record
from node_helpers import connection
from gameserver.recovery import create_match_file, restore
from gameserver.simulation import JOIN, Command
from gameserver.storage import MatchStore


@attrs.define
class Hands:
    cards: dict[str, list[int]] = attrs.field(factory=dict)
    played: int = 0


@attrs.frozen
class Play:
    card: int


class Cards(Game):
    """Each player sees only their own hand; the deck order lives in the key-value store."""
    name = "cards"
    tick_rate = 10
    state_type = Hands
    input_type = Play

    def init(self, params, ctx):
        deck = list(range(20))
        ctx.random.shuffle(deck)
        ctx.kv.set("deck", deck)
        return Hands()

    def join(self, state, player, ctx):
        deck = ctx.kv.get("deck")
        state.cards[player], rest = deck[:3], deck[3:]
        ctx.kv.set("deck", rest)

    def tick(self, state, inputs, ctx):
        for entry in inputs:
            if entry.data.card in state.cards[entry.player]:
                state.cards[entry.player].remove(entry.data.card)
                state.played += 1
                ctx.emit("played", {"player": entry.player, "card": entry.data.card})

    def audience(self, state, player):
        return player

    def view(self, state, audience):
        return {"mine": state.cards.get(audience, []), "played": state.played,
                "others": {p: len(c) for p, c in state.cards.items() if p != audience}}


def test_kv_writes_are_replayed_exactly(tmp_path):
    path = storage.match_path(tmp_path, "3" * 26)
    meta, sim = create_match_file(path, Cards(), match_id="3" * 26, params=NoParams(), seed=5, snapshot_every=3,
                                  now=0.0)
    # init's kv writes happen before the file exists: they must be part of the first snapshot's world
    store = MatchStore.open(path)
    for commands in ([Command(JOIN, "a")], [], [Command(JOIN, "b")], [], []):
        step = sim.step(commands)
        store.commit_step(step_record(sim, step, 3), now=0.0)
    store.close()
    store = MatchStore.open(path, read_only=True)
    rebuilt = restore(store, Cards())
    assert rebuilt.canonical() == sim.canonical()
    assert rebuilt.kv == sim.kv
    assert store.kv_at(5)["deck"] == sim.kv["deck"]
    store.close()


def test_kv_rejects_bad_keys_and_values():
    kv = KeyValue({})
    for key in ("", "k" * 300, 5):
        with pytest.raises(ValueError):
            kv.set(key, 1)
    with pytest.raises(ValueError):
        kv.set("k", None)
    with pytest.raises(ValueError):
        kv.set("k", "x" * 70_000)
    with pytest.raises(TypeError):
        kv.set("k", object())


async def test_views_hide_other_hands_and_events_reach_everyone(tmp_path, nursery, autojump_clock):
    node = Node(NodeConfig(data_dir=tmp_path), {"cards": Cards})
    await nursery.start(node.run)
    meta = await node.create_match("cards")
    actor = await node.actor(meta.match_id)
    conns = {}
    for player in ("a", "b"):
        conns[player] = connection(meta.match_id, player, "player", max_frames=64)
        await actor.submit(JoinRequest(conns[player]))
        await conns[player].admitted.wait()
    hand_a = list(actor.sim.state.cards["a"])
    await actor.submit(InputMessage(conns["a"], Input(1, {"card": hand_a[0]})))
    await trio.sleep(0.25)
    seen = {p: [json.loads(f) for f in c.take()] for p, c in conns.items()}
    last_a = [f for f in seen["a"] if f["t"] == "state"][-1]["state"]
    last_b = [f for f in seen["b"] if f["t"] == "state"][-1]["state"]
    assert last_a["mine"] == hand_a[1:] and last_a["others"] == {"b": 3}
    assert last_b["mine"] == actor.sim.state.cards["b"] and last_b["others"] == {"a": 2}
    for player in ("a", "b"):
        assert {"player": "a", "card": hand_a[0]} in [f["data"] for f in seen[player] if f.get("kind") == "played"]
    await node.shutdown()


async def test_synchronous_full_commits_off_the_event_loop(tmp_path, nursery):
    node = Node(NodeConfig(data_dir=tmp_path, synchronous="FULL"), {"cards": Cards})
    await nursery.start(node.run)
    meta = await node.create_match("cards")
    actor = await node.actor(meta.match_id)
    conn = connection(meta.match_id, "a", max_frames=64)
    with trio.fail_after(10):
        await actor.submit(JoinRequest(conn))
        await conn.admitted.wait()
    assert actor.store.conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert actor.sim.seated == ["a"]
    await node.shutdown()


async def test_a_second_connection_replaces_the_first(tmp_path, nursery, autojump_clock):
    node = Node(NodeConfig(data_dir=tmp_path), {"cards": Cards})
    await nursery.start(node.run)
    meta = await node.create_match("cards")
    actor = await node.actor(meta.match_id)
    first, second = (connection(meta.match_id, "a", "player", max_frames=64) for _ in range(2))
    for conn in (first, second):
        await actor.submit(JoinRequest(conn))
        await conn.admitted.wait()
    assert first.close_request[0] == protocol.CLOSE_REPLACED
    assert actor.by_player["a"] is second and actor.sim.seated == ["a"]
    await node.shutdown()


def test_outbox_keeps_only_the_newest_state_and_bounds_the_rest():
    slow = []
    conn = connection("m", "p", max_frames=3)
    conn.on_slow = lambda: slow.append(True)
    for tick in range(100):
        conn.offer_state(f"state {tick}")
    conn.send("event 1")
    assert conn.take() == ["event 1", "state 99"]
    for i in range(3):
        conn.send(f"e{i}")
    assert not conn.closing
    conn.send("one too many")
    assert conn.close_request[0] == protocol.CLOSE_SLOW_CONSUMER and slow == [True]
    assert conn.take() == ["e0", "e1", "e2"]


@attrs.define
class Loose:
    x: float = 0  # an int default in a float field: encodes as 0, restores as 0.0
    n: int = 0


@attrs.frozen
class Step1:
    pass


class LooseGame(Game):
    name = "loose"
    state_type = Loose
    input_type = Step1

    def init(self, params, ctx):
        return Loose()

    def tick(self, state, inputs, ctx):
        state.n += 1
        if state.n % 7 == 0:
            state.x = 0  # an int again


def test_states_with_ints_in_float_fields_recover_exactly(tmp_path):
    path = storage.match_path(tmp_path, "4" * 26)
    meta, sim = create_match_file(path, LooseGame(), match_id="4" * 26, params=NoParams(), seed=1,
                                  snapshot_every=5, now=0.0)
    store = MatchStore.open(path)
    for _ in range(23):
        step = sim.step([])
        store.commit_step(step_record(sim, step, 5), now=0.0)
    store.close()
    for until in (None, 3, 14, 21):
        store = MatchStore.open(path, read_only=True)
        rebuilt = restore(store, LooseGame(), until=until)
        store.close()
        assert rebuilt.tick == (until or 23)
    assert rebuilt.canonical() != b"" and restore(MatchStore.open(path, read_only=True), LooseGame()).canonical() \
        == sim.canonical()


async def test_a_spectator_leaving_does_not_unseat_the_player(tmp_path, nursery, autojump_clock):
    from gameserver.actor import LeaveRequest

    node = Node(NodeConfig(data_dir=tmp_path), {"cards": Cards})
    await nursery.start(node.run)
    meta = await node.create_match("cards")
    actor = await node.actor(meta.match_id)
    player, watcher = (connection(meta.match_id, "a", role, max_frames=64) for role in ("player", "spectator"))
    for conn in (player, watcher):
        await actor.submit(JoinRequest(conn))
        await conn.admitted.wait()
    await actor.submit(LeaveRequest(watcher))
    await trio.sleep(0.3)
    assert actor.sim.seated == ["a"] and actor.by_player["a"] is player
    await node.shutdown()


async def test_joiners_of_a_crashing_tick_are_answered(tmp_path, nursery, autojump_clock):
    class Doomed(Cards):
        name = "doomed"

        def join(self, state, player, ctx):
            raise RuntimeError("no seats here")

    node = Node(NodeConfig(data_dir=tmp_path), {"doomed": Doomed})
    await nursery.start(node.run)
    meta = await node.create_match("doomed")
    actor = await node.actor(meta.match_id)
    conn = connection(meta.match_id, "a", max_frames=64)
    await actor.submit(JoinRequest(conn))
    with trio.fail_after(5):
        await conn.admitted.wait()
    assert conn.admission_error[0] == protocol.CLOSE_MATCH_OVER
    assert (await node.describe(meta.match_id))["status"] == "crashed"


def test_games_cannot_emit_the_runtime_events():
    from gameserver.game import Context

    ctx = Context(tick=1, match_id="m", seed=1, params=None, kv=KeyValue({}))
    for kind in ("join", "leave", "end"):
        with pytest.raises(ValueError):
            ctx.emit(kind)
    ctx.emit("goal", {"by": "a"})
    assert ctx.events == [("goal", {"by": "a"})]
