"""Connect four: the rules on a bare Simulation, then real play on a node under MockClock."""


import pytest
import trio
from hypothesis import given, settings, strategies as st

from gameserver import protocol
from gameserver.actor import InputMessage, LeaveRequest
from gameserver.config import NodeConfig
from gameserver.games import builtin_games
from gameserver.games.connect_four import COLUMNS, ROWS, ConnectFour, Params, four_from
from gameserver.node import Node
from gameserver.protocol import Input
from gameserver.simulation import INPUT, JOIN, LEAVE, TIMER, Command, Simulation
from node_helpers import frames, join, wall

NOW = 1_800_000_000.0
EPOCH = NOW


# -- the rules, without a server --------------------------------------------------------------


def new_sim(**params):
    return Simulation.new(ConnectFour(), match_id="0" * 26, seed=7, params=Params(**params), now=NOW)


def started(**params):
    sim = new_sim(**params)
    sim.step([Command(JOIN, "ann"), Command(JOIN, "bob")], now=NOW)
    return sim


class Table:
    """Sends moves into a Simulation, one step each, with per-player sequence numbers."""

    def __init__(self, sim, now=NOW):
        self.sim, self.now, self.seq = sim, now, {}

    def move(self, player, column, *, after=1.0):
        self.now += after
        self.seq[player] = self.seq.get(player, 0) + 1
        return self.sim.step([Command(INPUT, player, self.seq[player], {"column": column})], now=self.now)

    def play(self, columns, first="ann", second="bob"):
        """Alternate moves, `first` moving first; the last step."""
        step = None
        for i, column in enumerate(columns):
            step = self.move(first if i % 2 == 0 else second, column)
        return step


def cell(sim, row, column):
    return sim.state.board[row][column]


def invalid(step):
    return [data for kind, data in step.events if kind == "invalid_move"]


def test_the_match_waits_in_its_lobby_then_starts_when_both_are_seated():
    sim = new_sim(turn_s=20, lobby_s=45)
    assert not sim.started and ConnectFour().lobby_timeout(sim.params) == 45
    step = sim.step([Command(JOIN, "ann")], now=NOW)
    assert not step.started and sim.state.turn == "" and "turn" not in sim.timers
    step = sim.step([Command(INPUT, "ann", 1, {"column": 3})], now=NOW + 1)
    assert [r.code for r in step.rejected] == ["not_started"]
    step = sim.step([Command(JOIN, "bob")], now=NOW + 2)
    assert step.started and sim.started
    assert ("start", {"players": ["ann", "bob"]}) in step.events
    assert sim.state.players == ["ann", "bob"] and sim.state.turn == "ann"
    assert sim.timers["turn"] == NOW + 2 + 20 == sim.state.turn_ends_at
    assert ("turn", NOW + 22) in step.timer_writes


def test_a_third_player_is_refused():
    sim = started()
    step = sim.step([Command(JOIN, "cat")], now=NOW)
    assert [r.code for r in step.rejected] == ["match_full"] and sim.seated == ["ann", "bob"]


def test_turns_alternate_and_each_move_rearms_the_turn_timer():
    sim = started(turn_s=30)
    table = Table(sim)
    table.move("ann", 3)
    assert cell(sim, 0, 3) == "ann" and sim.state.turn == "bob" and sim.state.moves == 1
    assert sim.state.last_move == {"player": "ann", "column": 3, "row": 0}
    assert sim.timers["turn"] == table.now + 30 == sim.state.turn_ends_at
    table.move("bob", 3)
    assert cell(sim, 1, 3) == "bob" and sim.state.turn == "ann" and sim.state.moves == 2
    assert sim.timers["turn"] == table.now + 30


def test_a_move_out_of_turn_is_refused_and_changes_nothing():
    sim = started()
    before = sim.canonical()
    timers = dict(sim.timers)
    step = Table(sim).move("bob", 0)
    assert invalid(step) == [{"player": "bob", "reason": "not your turn"}]
    assert sim.canonical() == before and sim.timers == timers and step.result is None


def test_a_move_into_a_full_column_is_refused_and_changes_nothing():
    sim = started()
    table = Table(sim)
    table.play([2] * ROWS)  # ann, bob, ann, bob, ann, bob: no four
    assert [cell(sim, r, 2) for r in range(ROWS)] == ["ann", "bob"] * 3 and sim.state.turn == "ann"
    before = sim.canonical()
    step = table.move("ann", 2)
    assert invalid(step) == [{"player": "ann", "reason": "column 2 is full"}]
    assert sim.canonical() == before and sim.state.turn == "ann"


def test_a_column_out_of_range_is_refused_as_invalid_input():
    sim = started()
    step = sim.step([Command(INPUT, "ann", 1, {"column": 7})], now=NOW)
    assert [r.code for r in step.rejected] == ["invalid_input"] and sim.state.moves == 0


def test_several_moves_in_one_step_are_taken_in_order():
    sim = started()
    step = sim.step([Command(INPUT, "ann", 1, {"column": 0}), Command(INPUT, "ann", 2, {"column": 1}),
                     Command(INPUT, "bob", 1, {"column": 0})], now=NOW + 1)
    assert invalid(step) == [{"player": "ann", "reason": "not your turn"}]
    assert cell(sim, 0, 0) == "ann" and cell(sim, 1, 0) == "bob" and cell(sim, 0, 1) == ""


def assert_won(step, sim, winner, moves):
    assert step.result is not None and step.status == "ended"
    assert step.result.winners == (winner,) and step.result.reason == "four"
    assert step.result.data == {"moves": moves, "board": sim.state.board}
    assert sim.state.winner == winner and sim.state.turn == "" and sim.state.turn_ends_at is None
    assert "turn" not in sim.timers


def test_a_vertical_four_wins():
    sim = started()
    table = Table(sim)
    step = table.play([0, 1, 0, 1, 0, 1])
    assert step.result is None and sim.state.turn == "ann"
    step = table.move("ann", 0)
    assert_won(step, sim, "ann", 7)
    assert [cell(sim, r, 0) for r in range(4)] == ["ann"] * 4


def test_a_horizontal_four_wins():
    sim = started()
    step = Table(sim).play([0, 0, 1, 1, 2, 2, 3])
    assert_won(step, sim, "ann", 7)
    assert sim.state.board[0][:4] == ["ann"] * 4


def test_a_rising_diagonal_four_wins():
    sim = started()
    #   row 3: . . . A
    #   row 2: . . A B
    #   row 1: . A A B
    #   row 0: A B B B   (then B's extra piece in column 6)
    step = Table(sim).play([0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3])
    assert_won(step, sim, "ann", 11)
    assert [cell(sim, i, i) for i in range(4)] == ["ann"] * 4


def test_a_falling_diagonal_four_wins_for_the_second_player():
    sim = started()
    # mirror image of the rising case, bob completing it: ann wastes moves in column 0
    step = Table(sim).play([0, 6, 5, 5, 4, 4, 0, 4, 3, 3, 3, 3], first="ann", second="bob")
    # bob: 6 (r0), 5 (r1), 4 (r2), 3 (r3)
    assert_won(step, sim, "bob", 12)
    assert [cell(sim, i, 6 - i) for i in range(4)] == ["bob"] * 4


def test_a_full_board_without_four_is_a_draw():
    sim = started()
    order = [int(c) for c in "545062455041104565311226266362030334314210"]  # a known drawn game
    assert sorted(order) == sorted(list(range(COLUMNS)) * ROWS)
    table = Table(sim)
    step = None
    for i, column in enumerate(order):
        assert step is None or step.result is None, f"ended early at move {i}"
        step = table.move("ann" if i % 2 == 0 else "bob", column)
    assert sim.state.moves == ROWS * COLUMNS and all(all(row) for row in sim.state.board)
    assert step.result.winners == () and step.result.reason == "draw" and step.status == "ended"
    assert step.result.data["moves"] == 42 and "turn" not in sim.timers


def fire_turn(sim, now):
    return sim.step([Command(TIMER, "", 0, {"name": "turn"})], now=now, ticked=False)


def test_the_turn_timer_forfeits_by_default():
    sim = started(turn_s=15)
    Table(sim).move("ann", 0)
    due = sim.timers["turn"]
    step = fire_turn(sim, due)
    assert step.result.winners == ("ann",) and step.result.reason == "timeout" and step.status == "ended"
    assert "turn" not in sim.timers


def test_the_turn_timer_skips_with_on_timeout_skip():
    sim = started(turn_s=15, on_timeout="skip")
    due = sim.timers["turn"]
    step = fire_turn(sim, due)
    assert step.result is None and ("turn_skipped", {"player": "ann"}) in step.events
    assert sim.state.turn == "bob" and sim.timers["turn"] == due + 15 == sim.state.turn_ends_at
    assert sim.state.moves == 0
    Table(sim, now=due).move("bob", 4)
    assert cell(sim, 0, 4) == "bob" and sim.state.turn == "ann"


def test_a_cancelled_turn_timer_does_not_fire():
    sim = started()
    Table(sim).play([0, 1, 0, 1, 0, 1, 0])  # ann wins: the timer is cancelled
    step = fire_turn(sim, NOW + 1000)
    assert step.applied == []


def test_a_player_who_leaves_loses():
    sim = started()
    Table(sim).move("ann", 0)
    step = sim.step([Command(LEAVE, "ann")], now=NOW + 5)
    assert step.result.winners == ("bob",) and step.result.reason == "left"
    assert step.result.data["moves"] == 1


def test_leaving_the_lobby_gives_the_seat_back():
    sim = new_sim()
    sim.step([Command(JOIN, "ann")], now=NOW)
    step = sim.step([Command(LEAVE, "ann")], now=NOW + 1)
    assert step.result is None and sim.state.players == []
    sim.step([Command(JOIN, "bob"), Command(JOIN, "cat")], now=NOW + 2)
    assert sim.started and sim.state.turn == "bob"


def test_the_lobby_timeout_cancels_a_half_empty_match():
    sim = new_sim()
    sim.step([Command(JOIN, "ann")], now=NOW)
    step = sim.step([Command(TIMER, "", 0, {"name": "arbiter:lobby"})], now=NOW + 60, ticked=False)
    assert step.status == "cancelled"


def test_params_are_validated():
    for bad in ({"turn_s": 0.5}, {"turn_s": 4000}, {"lobby_s": 0}, {"on_timeout": "pass"}):
        with pytest.raises((ValueError, TypeError)):
            Params(**bad)


def test_four_from_checks_every_direction_through_the_piece():
    board = [[""] * COLUMNS for _ in range(ROWS)]
    for c in (1, 2, 4):
        board[0][c] = "x"
    assert not four_from(board, 0, 4)
    board[0][3] = "x"  # the middle piece joins both halves
    assert four_from(board, 0, 3) and four_from(board, 0, 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["ann", "bob"]), st.integers(0, COLUMNS - 1)), max_size=80))
def test_any_sequence_of_moves_keeps_the_board_sound(moves):
    sim = started()
    table = Table(sim)
    played = []
    for player, column in moves:
        before = sim.state.moves
        step = table.move(player, column)
        sim.normalize()  # the state survives the snapshot round trip
        if sim.state.moves > before:
            played.append(sim.state.last_move)
        board = sim.state.board
        for c in range(COLUMNS):
            stack = [board[r][c] for r in range(ROWS)]
            height = sum(1 for x in stack if x)
            assert height <= ROWS and all(stack[:height]) and not any(stack[height:])  # no gaps
        if step.result is not None:
            break
    assert [m["player"] for m in played] == ["ann", "bob"] * (len(played) // 2) + ["ann"] * (len(played) % 2)
    pieces = sum(1 for row in sim.state.board for x in row if x)
    assert pieces == sim.state.moves == len(played)


def test_the_same_moves_give_the_same_state():
    columns = [3, 3, 4, 2, 5, 6, 1, 0, 0]
    first, second = started(), started()
    Table(first).play(columns)
    Table(second).play(columns)
    assert first.canonical() == second.canonical()
    third = started()
    Table(third).play(columns[:-1] + [1])
    assert third.canonical() != first.canonical()


# -- on a node, under MockClock ---------------------------------------------------------------


def make_node(tmp_path, **config):
    config.setdefault("hibernate_after_s", float("inf"))
    return Node(NodeConfig(data_dir=tmp_path, **config), builtin_games(), wall_clock=wall, offload=False)


class Seat:
    def __init__(self, node, match_id, conn):
        self.node, self.match_id, self.conn, self.seq = node, match_id, conn, 0

    async def drop(self, column):
        self.seq += 1
        assert await self.node.submit(self.match_id, InputMessage(self.conn, Input(self.seq, {"column": column})))
        await trio.sleep(0.01)


async def two_players(node, **params):
    meta = await node.create_match("connect_four", params)
    assert meta.status == "lobby"
    ann = Seat(node, meta.match_id, await join(node, meta.match_id, "ann"))
    bob = Seat(node, meta.match_id, await join(node, meta.match_id, "bob"))
    await trio.sleep(0.01)
    return meta.match_id, ann, bob


async def test_two_players_play_a_game_to_a_win(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path)
    await nursery.start(node.run)
    match_id, ann, bob = await two_players(node)
    assert (await node.describe(match_id))["status"] == "running"
    await bob.drop(0)  # out of turn: refused, the match goes on
    for column, seat in zip([0, 1, 0, 1, 0, 1], [ann, bob] * 3):
        await seat.drop(column)
    got = frames(bob.conn)
    assert {"player": "bob", "reason": "not your turn"} in [f["data"] for f in got if f.get("kind") == "invalid_move"]
    state = [f for f in got if f["t"] == "state"][-1]
    assert state["state"]["turn"] == "ann" and state["state"]["moves"] == 6 and state["acks"] == {"ann": 3, "bob": 4}
    await ann.drop(0)
    status = await node.describe(match_id)
    assert status["status"] == "ended"
    assert status["result"]["winners"] == ["ann"] and status["result"]["reason"] == "four"
    assert status["result"]["data"]["moves"] == 7
    end = [f for f in frames(bob.conn) if f.get("kind") == "end"]
    assert end and end[0]["data"]["result"]["winners"] == ["ann"]
    assert ann.conn.close_request == bob.conn.close_request == (protocol.CLOSE_NORMAL, "match ended")
    await node.shutdown()


async def test_a_player_who_does_not_move_in_time_forfeits(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path)
    await nursery.start(node.run)
    match_id, ann, bob = await two_players(node, turn_s=10)
    await ann.drop(3)
    moved = trio.current_time()
    await trio.sleep(9)
    assert (await node.describe(match_id))["status"] == "running"
    await trio.sleep(1.5)
    status = await node.describe(match_id)
    assert status["status"] == "ended"
    assert status["result"]["reason"] == "timeout" and status["result"]["winners"] == ["ann"]
    assert status["ended_at"] == pytest.approx(EPOCH + moved + 10, abs=0.05)
    await node.shutdown()


async def test_a_player_who_leaves_loses_on_the_node(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path)
    await nursery.start(node.run)
    match_id, ann, bob = await two_players(node)
    assert await node.submit(match_id, LeaveRequest(bob.conn))
    await trio.sleep(0.01)
    status = await node.describe(match_id)
    assert status["status"] == "ended" and status["result"] == {
        "winners": ["ann"], "reason": "left", "data": {"moves": 0, "board": [[""] * COLUMNS] * ROWS}}
    await node.shutdown()


async def test_the_match_hibernates_between_moves_and_a_move_wakes_it(tmp_path, nursery, autojump_clock):
    node = make_node(tmp_path, hibernate_after_s=5)
    await nursery.start(node.run)
    match_id, ann, bob = await two_players(node, turn_s=60)
    await ann.drop(2)
    await trio.sleep(6)
    assert match_id in node.hibernated and match_id not in node.actors
    assert not ann.conn.closing and not bob.conn.closing
    frames(ann.conn)
    await bob.drop(2)  # wakes the match; the move is applied
    assert match_id in node.actors
    actor = await node.actor(match_id)
    assert actor.sim.state.board[1][2] == "bob" and actor.sim.state.turn == "ann"
    state = [f for f in frames(ann.conn) if f["t"] == "state"][-1]
    assert state["state"]["last_move"] == {"player": "bob", "column": 2, "row": 1}
    assert state["acks"]["bob"] == 1
    await trio.sleep(6)
    assert match_id in node.hibernated  # asleep again, until ann moves or her turn runs out
    await trio.sleep(60)  # the turn timer wakes it: ann forfeits
    status = await node.describe(match_id)
    assert status["status"] == "ended" and status["result"]["reason"] == "timeout"
    assert status["result"]["winners"] == ["bob"]
    assert ann.conn.close_request == (protocol.CLOSE_NORMAL, "match ended")
    await node.shutdown()


async def test_a_move_queued_before_the_deadline_beats_the_turn_timer(tmp_path, nursery, autojump_clock):
    """A move and the turn timer handled in the same round: the move, which arrived first, counts."""
    node = make_node(tmp_path)
    await nursery.start(node.run)
    match_id, ann, bob = await two_players(node, turn_s=30)
    actor = await node.actor(match_id)
    await trio.sleep(29.5)
    ann.seq += 1
    # Into the inbox without waking the actor: it finds the move when the timer wakes it at 30 s.
    actor._send.send_nowait(InputMessage(ann.conn, Input(ann.seq, {"column": 3})))
    await trio.sleep(0.6)
    assert actor.status == "running" and actor.sim.state.turn == "bob"
    assert actor.sim.state.moves == 1
