"""Input ordering and dedup, the arena rules, and the step's handling of bad commands."""

import attrs
import pytest
from hypothesis import given, strategies as st

from gameserver.game import Context, Game, Refuse, Result
from gameserver.games.arena import Arena, Params
from gameserver.alarms import END, LOBBY
from gameserver.simulation import INPUT, JOIN, LEAVE, TIMER, Command, GameCrashed, Simulation


def arena(players=("a", "b")):
    sim = Simulation.new(Arena(), match_id="0" * 26, seed=42, params=Params())
    sim.step([Command(JOIN, p) for p in players])
    return sim


@attrs.define
class LogState:
    seen: list = attrs.field(factory=list)


@attrs.frozen
class Payload:
    v: int


class Recorder(Game):
    """Records the inputs each tick receives, in order."""
    name = "recorder"
    state_type = LogState
    input_type = Payload
    max_players = 4

    def init(self, params, ctx):
        return LogState()

    def tick(self, state, inputs, ctx):
        state.seen.append([(i.player, i.seq, i.data.v) for i in inputs])


inputs_strategy = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 8)), max_size=40)


@given(st.lists(inputs_strategy, min_size=1, max_size=5))
def test_inputs_arrive_in_order_and_each_seq_counts_once(ticks):
    sim = Simulation.new(Recorder(), match_id="0" * 26, seed=1, params=None)
    sim.step([Command(JOIN, p) for p in "abc"])
    applied_per_player = {p: set() for p in "abc"}
    last = {p: 0 for p in "abc"}
    for batch in ticks:
        commands = [Command(INPUT, p, seq, {"v": i}) for i, (p, seq) in enumerate(batch)]
        step = sim.step(commands)
        seen = sim.state.seen[-1]
        # order: what the game saw is the arrival order, filtered
        expected = []
        for i, (p, seq) in enumerate(batch):
            if seq > last[p]:
                expected.append((p, seq, i))
                last[p] = seq
        assert seen == expected
        assert [c for c in step.applied if c.kind == INPUT] == [Command(INPUT, p, s, {"v": v}) for p, s, v in expected]
        for p, seq, _ in seen:
            assert seq not in applied_per_player[p]  # no seq applied twice
            applied_per_player[p].add(seq)
        assert sim.last_seq == last


def test_arena_tick_follows_the_workload():
    sim = arena(("a",))
    p = sim.state.players["a"]
    assert 0 <= p.x < 1000 and 0 <= p.y < 1000 and (p.vx, p.vy, p.score, p.last_seq) == (0, 0, 0, 0)
    x0, y0 = p.x, p.y
    sim.step([Command(INPUT, "a", 1, {"dx": 0.5, "dy": -3}), Command(INPUT, "a", 2, {"dx": 1, "dy": 5})])
    p = sim.state.players["a"]
    # the last input of the tick wins; dy is clamped to 1
    assert (p.vx, p.vy, p.last_seq) == (5.0, 5.0, 2)
    assert (p.x, p.y) == (min(x0 + 5, 1000), min(y0 + 5, 1000))
    assert sim.state.tick == 2


def test_arena_scores_in_the_hill_and_clamps_at_the_edge():
    sim = arena(("a",))
    p = sim.state.players["a"]
    p.x, p.y = 500.0, 500.0
    sim.step([])
    assert sim.state.players["a"].score == 1
    p.x, p.y, p.vx = 998.0, 10.0, 5.0
    sim.step([])
    assert sim.state.players["a"].x == 1000.0
    assert sim.state.players["a"].score == 1


def test_arena_ends_with_the_highest_score_when_its_time_is_up():
    sim = Simulation.new(Arena(), match_id="0" * 26, seed=1, params=Params(duration_s=60))
    step = sim.step([Command(JOIN, "a"), Command(JOIN, "b")])
    assert step.result is None and Arena().duration(Params(duration_s=60)) == 60
    sim.state.players["b"].score = 3
    step = sim.step([Command(TIMER, "", 0, {"name": END})], ticked=False)
    assert step.status == "ended"
    assert step.result == Result(winners=("b",), reason="time", data={"scores": {"a": 0, "b": 3}})


def test_a_lobby_starts_when_full_or_is_cancelled_at_its_timeout():
    sim = Simulation.new(Arena(), match_id="0" * 26, seed=1, params=Params(lobby_s=30))
    assert not sim.started
    step = sim.step([Command(JOIN, "a"), Command(INPUT, "a", 1, {"dx": 1, "dy": 0})], ticked=False)
    assert [r.code for r in step.rejected] == ["not_started"]
    step = sim.step([Command(TIMER, "", 0, {"name": LOBBY})], ticked=False)
    assert step.status == "cancelled" and "not enough players" in step.result.reason
    full = Simulation.new(Arena(), match_id="0" * 26, seed=1, params=Params(lobby_s=30))
    step = full.step([Command(JOIN, p) for p in "abcd"], ticked=False)
    assert step.started and full.started and ("start", {"players": list("abcd")}) in step.events
    enough = Simulation.new(Arena(), match_id="0" * 26, seed=1, params=Params(lobby_s=30))
    enough.step([Command(JOIN, p) for p in "ab"], ticked=False)
    step = enough.step([Command(TIMER, "", 0, {"name": LOBBY})], ticked=False)
    assert step.started and step.status is None


def test_same_seed_same_match():
    one, two = arena(), arena()
    assert one.canonical() == two.canonical()


@pytest.mark.parametrize("data, code", [
    ({"dx": "1", "dy": 0}, "invalid_input"),
    ({"dx": 1}, "invalid_input"),
    ({"dx": 1, "dy": 0, "dz": 0}, "invalid_input"),
    ([1, 2], "invalid_input"),
    (None, "invalid_input"),
])
def test_invalid_inputs_are_rejected_and_the_match_goes_on(data, code):
    sim = arena()
    before = sim.last_seq["a"]
    step = sim.step([Command(INPUT, "a", 1, data), Command(INPUT, "b", 1, {"dx": 1, "dy": 1})])
    assert [r.code for r in step.rejected] == [code]
    assert sim.last_seq == {"a": before, "b": 1}
    assert [c.player for c in step.applied] == ["b"]


@pytest.mark.parametrize("data, message", [
    ({"dx": "1", "dy": 0}, "expected a number, got str @ $.dx"),
    ({"dx": 1, "dy": 0, "dz": 0}, "unknown fields dz @ $"),
    ({"dx": 1}, "required field missing @ $.dy"),
])
def test_invalid_inputs_are_told_what_is_wrong(data, message):
    step = arena().step([Command(INPUT, "a", 1, data)])
    assert [(r.code, r.message) for r in step.rejected] == [("invalid_input", message)]


def test_an_attrs_validator_refusal_is_told_in_its_own_words_only():
    @attrs.frozen
    class Step:
        dx: int = attrs.field(validator=attrs.validators.in_((-1, 0, 1)))

    class Stepper(Recorder):
        input_type = Step

    sim = Simulation.new(Stepper(), match_id="0" * 26, seed=1, params=None)
    sim.step([Command(JOIN, "a")])
    step = sim.step([Command(INPUT, "a", 1, {"dx": 5})])
    [(code, message)] = [(r.code, r.message) for r in step.rejected]
    assert code == "invalid_input" and message.startswith("'dx' must be in (-1, 0, 1) (got 5)")
    assert "Attribute(" not in message  # not the validator's other arguments


def test_unseated_players_cannot_send_inputs():
    sim = arena(("a",))
    step = sim.step([Command(INPUT, "z", 1, {"dx": 1, "dy": 1})])
    assert [r.code for r in step.rejected] == ["not_seated"]


def test_a_full_match_refuses_and_a_game_can_refuse():
    sim = arena(("a", "b", "c", "d"))
    step = sim.step([Command(JOIN, "e")])
    assert [r.code for r in step.rejected] == ["match_full"]

    class Picky(Recorder):
        def join_attempt(self, state, player, ctx):
            return Refuse("no bobs") if player == "bob" else super().join_attempt(state, player, ctx)

    sim = Simulation.new(Picky(), match_id="0" * 26, seed=1, params=None)
    step = sim.step([Command(JOIN, "bob"), Command(JOIN, "al")])
    assert [(r.code, r.message) for r in step.rejected] == [("join_refused", "no bobs")]
    assert sim.seated == ["al"]


def test_leave_runs_the_hook_and_frees_the_seat():
    sim = arena(("a", "b"))
    step = sim.step([Command(LEAVE, "a")])
    assert sim.seated == ["b"] and "a" not in sim.state.players
    assert ("leave", {"player": "a"}) in step.events


def test_game_exceptions_become_game_crashed_with_the_applied_commands():
    class Boom(Recorder):
        def tick(self, state, inputs, ctx):
            if inputs:
                raise ZeroDivisionError("boom")

    sim = Simulation.new(Boom(), match_id="0" * 26, seed=1, params=None)
    sim.step([Command(JOIN, "a")])
    with pytest.raises(GameCrashed) as caught:
        sim.step([Command(INPUT, "a", 1, {"v": 1})])
    assert caught.value.tick == 2
    assert caught.value.applied == [Command(INPUT, "a", 1, {"v": 1})]
    assert sim.tick == 1  # the crashed tick did not complete


def test_context_random_is_per_match_and_tick():
    def numbers(seed, tick):
        return Context(tick=tick, match_id="m", seed=seed, params=None, kv=None).random.random()

    assert numbers(1, 5) == numbers(1, 5)
    assert numbers(1, 5) != numbers(1, 6)
    assert numbers(1, 5) != numbers(2, 5)


def test_the_input_cache_shares_only_frozen_inputs_and_keeps_types_apart():
    import attrs as _attrs

    from gameserver.canonical import InputCache

    @_attrs.frozen
    class Frozen:
        x: float

    @_attrs.define
    class Mutable:
        x: float

    frozen = InputCache(Frozen)
    assert frozen.enabled and frozen.structure({"x": 1}) is frozen.structure({"x": 1})
    assert frozen.structure({"x": 1.5}) == Frozen(1.5)
    mutable = InputCache(Mutable)
    assert not mutable.enabled and mutable.structure({"x": 1}) is not mutable.structure({"x": 1})

    @_attrs.frozen
    class Flag:
        on: bool

    flags = InputCache(Flag)
    assert flags.structure({"on": True}) == Flag(True)
    with pytest.raises(Exception):
        flags.structure({"on": 1})  # 1 == True, but an int is not a bool: never served from the cache


@given(st.integers(), st.text(max_size=4), st.integers(), st.none() | st.integers(), st.floats(allow_nan=False),
       st.none() | st.dictionaries(st.text(max_size=3), st.floats(allow_nan=False), max_size=2),
       st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
def test_the_context_a_step_builds_is_the_one_the_class_builds(tick, match_id, seed, params, now, timers, kv):
    from gameserver.game import KeyValue
    from gameserver.simulation import _make_context

    built = _make_context(tick, match_id, seed, params, kv, now, timers)
    made = Context(tick=tick, match_id=match_id, seed=seed, params=params, kv=KeyValue(kv), now=now, timers=timers)
    assert type(built) is Context
    for name in Context.__slots__:  # a slot the class's __init__ sets and the builder forgets fails here
        if name == "kv":
            assert vars(built.kv) == vars(made.kv) and built.kv._values is kv
        else:
            assert getattr(built, name) == getattr(made, name), name
    assert built.random.random() == made.random.random()


def reference_refusal(sim, command):
    """What the step answered an input before its checks moved inline: in this order."""
    if command.player not in sim.seated:
        return "not_seated"
    if not sim.started:
        return "not_started"
    if command.seq <= sim.last_seq.get(command.player, 0):
        return "duplicate"
    if not isinstance(command.data, dict):
        return "invalid_input"
    try:
        sim._inputs.structure(command.data)
    except Exception:
        return "invalid_input"
    return None


INPUT_DATA = st.sampled_from([{"dx": 1, "dy": 0}, {"dx": -1, "dy": 1}, {"dx": "1", "dy": 0}, {"dx": 1}, [1], None, 3])


@given(st.booleans(), st.lists(st.lists(st.tuples(st.sampled_from(["a", "b", "z"]), st.integers(-1, 6), INPUT_DATA),
                                        max_size=6), max_size=6))
def test_inputs_are_refused_for_the_first_failed_check_in_order(lobby, ticks):
    sim = Simulation.new(Arena(), match_id="0" * 26, seed=3, params=Params(lobby_s=30 if lobby else 0))
    sim.step([Command(JOIN, "a"), Command(JOIN, "b")], ticked=False)
    for batch in ticks:
        commands = [Command(INPUT, p, seq, data) for p, seq, data in batch]
        expected, last_seq = [], dict(sim.last_seq)
        for command in commands:
            code = reference_refusal(sim, command)
            if code is None:
                sim.last_seq[command.player] = command.seq  # what the step does for an applied input
            expected.append(code)
        sim.last_seq = last_seq
        step = sim.step(commands)
        assert [(r.command, r.code) for r in step.rejected] == [(c, code) for c, code in zip(commands, expected)
                                                                if code is not None]
        assert step.applied == [c for c, code in zip(commands, expected) if code is None]


def test_re_simulating_with_shared_input_objects_gives_the_same_steps():
    shared = [{"dx": 1, "dy": 0}, {"dx": -1, "dy": 1}, {"dx": 0.5, "dy": -1}]
    batches = [[Command(INPUT, p, t, shared[(t + i) % 3]) for i, p in enumerate("ab")] for t in range(1, 200)]
    live, replayed = arena(), arena()
    with replayed.reading_log():
        cache = replayed._inputs
        assert cache.known is not None and cache.known(id(shared[0])) is None
        for batch in batches:
            assert replayed.step(batch) == live.step(batch)
            assert replayed.canonical() == live.canonical()
        for data in shared:  # each object structured once, then found by its identity
            assert cache.known(id(data)) == Arena.input_type(**data) and cache.structure(data) is cache.known(id(data))
    assert live._inputs.known is None and replayed._inputs.known is None  # let go after the block


def test_the_identity_cache_holds_what_it_keys_and_forgets_both_together():
    from gameserver.canonical import InputCache

    cache = InputCache(Arena.input_type, size=3, by_identity=True)
    objects = [{"dx": i, "dy": 0} for i in range(-1, 2)]
    found = [cache.structure(o) for o in objects]
    assert [cache.known(id(o)) for o in objects] == found and cache._held == objects  # held: ids stay unique
    extra = {"dx": 0.5, "dy": 0}
    cache.structure(extra)  # full: emptied, then this one kept
    assert [cache.known(id(o)) for o in objects] == [None, None, None] and cache._held == [extra]


def test_a_game_s_end_condition_is_asked_after_every_step_and_the_base_one_is_not():
    asked = []

    class Ends(Recorder):
        def result(self, state, ctx):
            asked.append(ctx.tick)
            return Result(reason="enough") if ctx.tick == 3 else None

    sim = Simulation.new(Ends(), match_id="0" * 26, seed=1, params=None)
    assert sim._ends_itself and not Simulation.new(Recorder(), match_id="0" * 26, seed=1, params=None)._ends_itself
    steps = [sim.step([Command(JOIN, "a")] if t == 0 else []) for t in range(3)]
    assert asked == [1, 2, 3] and steps[-1].status == "ended" and steps[-1].result.reason == "enough"
    instance = Recorder()
    instance.result = lambda state, ctx: Result(reason="set on the instance")
    step = Simulation.new(instance, match_id="0" * 26, seed=1, params=None).step([Command(JOIN, "a")])
    assert step.status == "ended" and step.result.reason == "set on the instance"
