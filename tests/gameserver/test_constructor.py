"""simulation.constructor builds the same objects as the class does, or is the class itself."""

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gameserver.game import PlayerInput
from gameserver.simulation import Command, Step, constructor, make_command


@given(st.text(max_size=5), st.text(max_size=5), st.integers(), st.none() | st.dictionaries(st.text(max_size=3),
                                                                                           st.integers(), max_size=2))
def test_the_same_command(kind, player, seq, data):
    built = make_command(kind, player, seq, data)
    assert built == Command(kind, player, seq, data)
    assert type(built) is Command and repr(built) == repr(Command(kind, player, seq, data))
    assert attrs.asdict(built, recurse=False) == {"kind": kind, "player": player, "seq": seq, "data": data}


@given(st.text(max_size=5), st.integers(), st.integers())
def test_a_frozen_class_is_built_the_same_and_stays_frozen(player, seq, value):
    built = constructor(PlayerInput)(player, seq, value)
    assert built == PlayerInput(player, seq, value) and hash(built) == hash(PlayerInput(player, seq, value))
    assert type(built) is PlayerInput
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        built.seq = 0


def test_the_same_step_and_input():
    step = constructor(Step)(tick=3, applied=[], rejected=[], events=[("e", 1)], kv_writes=[], result=None,
                             status=None, started=True, timer_writes=[], at=1.5, ticked=False)
    assert step == Step(3, [], [], [("e", 1)], [], None, started=True, at=1.5, ticked=False)
    assert type(step) is Step and repr(step) == repr(Step(3, [], [], [("e", 1)], [], None, started=True, at=1.5,
                                                           ticked=False))
    assert constructor(PlayerInput)("p", 2, {"x": 1}) == PlayerInput("p", 2, {"x": 1})


def test_plain_classes_are_built_with_attribute_stores_frozen_ones_with_their_slots_setters():
    # Command and Step are not frozen: building one sets its attributes; a frozen class's setattr
    # refuses that, so its slots' own setters are called
    assert "_set_kind" not in make_command.__code__.co_names
    assert "_set_tick" not in constructor(Step).__code__.co_names
    assert "_set_seq" in constructor(PlayerInput).__code__.co_names


@attrs.frozen
class Checked:
    n: int = attrs.field(validator=attrs.validators.ge(0))


@attrs.frozen
class Converted:
    n: int = attrs.field(converter=int)


@attrs.frozen(slots=False)
class NoSlots:
    n: int


@pytest.mark.parametrize("cls", [Checked, Converted, NoSlots])
def test_classes_whose_init_does_more_are_built_by_it(cls):
    assert constructor(cls) is cls
