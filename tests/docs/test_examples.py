"""The example game in docs/examples/tag.py follows the rules docs/games.md gives for it."""

import importlib.util
import sys
from pathlib import Path

import pytest

from gameserver.game import Result, check_game_class
from gameserver.simulation import INPUT, JOIN, LEAVE, Command, Simulation

TAG_PATH = Path(__file__).resolve().parents[2] / "docs" / "examples" / "tag.py"


def load_tag():
    name = "docs_examples_tag"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TAG_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # attrs/cattrs resolve the annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]


tag = load_tag()


def new_match(seed=7, **params):
    return Simulation.new(tag.Tag(), match_id="0" * 26, seed=seed, params=tag.Params(**params))


def move(player, seq, dx, dy):
    return Command(INPUT, player, seq, {"dx": dx, "dy": dy})


def where(sim, player):
    p = sim.state.players[player]
    return p.x, p.y


def test_the_class_is_a_valid_game():
    check_game_class(tag.Tag)


def test_a_chase_a_tag_and_the_end():
    sim = new_match(size=5, duration_ticks=8, freeze_ticks=2)
    step = sim.step([Command(JOIN, "alice"), Command(JOIN, "bob")])
    assert step.tick == 1
    assert sim.state.it == "alice" and sim.state.frozen_until == 3  # the first to join is it, frozen to tick 3
    assert step.events == [("it", {"player": "alice", "tagged_by": None}), ("join", {"player": "alice"}),
                           ("join", {"player": "bob"})]
    sim.state.players["alice"] = tag.Pos(0, 0)
    sim.state.players["bob"] = tag.Pos(2, 0)

    # ticks 2 and 3: "it" is frozen; bob's bad inputs are refused and change nothing
    step = sim.step([move("alice", 1, 1, 0), move("bob", 1, 2, 0), move("bob", 2, True, 0),
                     move("bob", 3, 1.0, 0), Command(INPUT, "bob", 4, {"dx": 0, "dy": 0, "run": 1})])
    assert [(r.command.seq, r.code) for r in step.rejected] == [(1, "invalid_input"), (2, "invalid_input"),
                                                                (3, "invalid_input"), (4, "invalid_input")]
    assert sim.last_seq == {"alice": 1, "bob": 0}
    sim.step([move("alice", 2, 1, 0), move("alice", 2, 1, 0)])  # the second seq 2 is a duplicate
    assert where(sim, "alice") == (0, 0) and where(sim, "bob") == (2, 0)
    assert sim.last_seq["alice"] == 2

    sim.step([move("alice", 3, 1, 0)])  # tick 4: free to move
    assert where(sim, "alice") == (1, 0) and sim.state.it == "alice"
    step = sim.step([move("alice", 4, 1, 0)])  # tick 5: onto bob's cell: bob is it
    assert where(sim, "alice") == (2, 0)
    assert sim.state.it == "bob" and sim.state.frozen_until == 7
    assert step.events == [("it", {"player": "bob", "tagged_by": "alice"})]
    assert sim.state.it_ticks == {"alice": 5, "bob": 0}

    sim.step([move("alice", 5, -1, 0), move("bob", 1, -1, 0)])  # tick 6: bob is frozen, alice runs
    assert where(sim, "alice") == (1, 0) and where(sim, "bob") == (2, 0)
    step = sim.step([])  # tick 7
    assert step.result is None
    step = sim.step([move("bob", 2, -1, 0)])  # tick 8: bob catches alice, and time is up
    assert sim.state.it == "alice"
    assert sim.state.it_ticks == {"alice": 5, "bob": 3}
    assert step.result == Result(winners=("bob",), reason="time", data={"it_ticks": {"alice": 5, "bob": 3}})


def test_moves_stop_at_the_edge_and_the_last_input_of_a_tick_wins():
    sim = new_match(size=3, freeze_ticks=0)
    sim.step([Command(JOIN, "alice")])
    sim.state.players["alice"] = tag.Pos(2, 0)
    sim.step([move("alice", 1, 1, -1)])
    assert where(sim, "alice") == (2, 0)
    sim.step([move("alice", 2, -1, 0), move("alice", 3, 0, 1)])
    assert where(sim, "alice") == (2, 1)


def test_when_it_leaves_the_longest_seated_player_is_it():
    sim = new_match()
    sim.step([Command(JOIN, p) for p in ("alice", "bob", "carol")])
    step = sim.step([Command(LEAVE, "alice")])
    assert sim.state.it == "bob" and sim.state.frozen_until == 2 + 10
    assert list(sim.state.players) == ["bob", "carol"] and "alice" not in sim.state.it_ticks
    assert step.events == [("it", {"player": "bob", "tagged_by": None}), ("leave", {"player": "alice"})]


def test_same_seed_same_match_and_positions_on_the_grid():
    one, two, other = new_match(seed=1, size=4), new_match(seed=1, size=4), new_match(seed=2, size=4)
    for sim in (one, two, other):
        sim.step([Command(JOIN, p) for p in ("a", "b", "c", "d", "e", "f")])
    assert one.canonical() == two.canonical()
    assert one.canonical() != other.canonical()
    assert all(0 <= p.x < 4 and 0 <= p.y < 4 for p in one.state.players.values())


@pytest.mark.parametrize("params", [{"size": 1}, {"duration_ticks": 0}, {"freeze_ticks": -1}])
def test_bad_params_are_refused(params):
    with pytest.raises(ValueError):
        tag.Params(**params)
