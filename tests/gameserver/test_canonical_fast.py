"""canonical_fast writes exactly the reference canonical encoding (JSON of the converter's unstructured
state) or falls back to it: for any values, of the right types or not, the bytes or the error are the same."""

from __future__ import annotations

import enum
from typing import Any, Optional

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gameserver import canonical, canonical_fast
from gameserver.games.arena import Player as ArenaPlayer
from gameserver.games.arena import State as ArenaState


@attrs.define
class Leaf:
    f: float = 0.0
    i: int = 0
    s: str = ""
    b: bool = False
    of: Optional[float] = None
    os: str | None = None


@attrs.define
class Tree:
    tick: int = 0
    leaves: dict[str, Leaf] = attrs.field(factory=dict)
    row: list[Leaf] = attrs.field(factory=list)
    grid: list[list[str]] = attrs.field(factory=list)
    scores: dict[str, int] = attrs.field(factory=dict)
    best: Leaf = attrs.field(factory=Leaf)


@attrs.frozen
class Empty:
    pass


@attrs.define
class WithAny:
    data: Any = None


@attrs.define
class Hidden:
    x: float = 0.0
    cached: int = attrs.field(default=0, init=False)


@attrs.define
class Hooked:
    x: float = 0.0


canonical.converter.register_unstructure_hook(Hooked, lambda h: {"hooked": h.x})


class Color(enum.IntEnum):
    RED = 1


class SubLeaf(Leaf):
    pass


class MyFloat(float):
    pass


def outcome(encode, state) -> tuple:
    try:
        return ("ok", encode(state))
    except Exception as error:  # the same failure, the same way
        return ("error", type(error))


SCALARS = (st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -0.0, 1e300, 5e-324, 0.1])
           | st.integers() | st.booleans() | st.none() | st.text(max_size=6)
           | st.sampled_from(["\ud800", "é\"\\\n", Color.RED, MyFloat(1.5)]))
ANYTHING = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.tuples(inner)
                        | st.dictionaries(st.text(max_size=3) | st.integers(), inner, max_size=3), max_leaves=6)


def leaves(wild: bool):
    def pick(good):  # wild: a value of the right type, or anything
        return good | ANYTHING if wild else good

    finite = st.floats(allow_nan=False, allow_infinity=False)
    return st.builds(
        (lambda f, i, s, b, of, os, sub: (SubLeaf if sub else Leaf)(f, i, s, b, of, os)),
        pick(finite), pick(st.integers()), pick(st.text(max_size=6)), pick(st.booleans()),
        pick(st.none() | finite), pick(st.none() | st.text(max_size=4)), st.booleans() if wild else st.just(False))


def trees(wild: bool):
    leaf = leaves(wild)
    maybe = (lambda s: s | ANYTHING) if wild else (lambda s: s)
    return st.builds(Tree, maybe(st.integers()), maybe(st.dictionaries(st.text(max_size=4), leaf, max_size=3)),
                     maybe(st.lists(leaf, max_size=3)), maybe(st.lists(st.lists(st.text(max_size=2), max_size=3),
                                                                       max_size=3)),
                     maybe(st.dictionaries(st.text(max_size=3), st.integers(), max_size=3)), leaf)


@given(trees(wild=False))
@settings(max_examples=300)
def test_well_typed_states_are_written_by_the_generated_code_identically(tree):
    fast = canonical_fast.compile_encoder(Tree, canonical.converter)
    assert fast is not None
    assert fast(tree).encode() == canonical.encode_state_reference(tree)
    assert canonical.encode_state(tree) == canonical.encode_state_reference(tree)


@given(trees(wild=True))
@settings(max_examples=500)
def test_any_values_give_the_same_bytes_or_the_same_error(tree):
    assert outcome(canonical.encode_state, tree) == outcome(canonical.encode_state_reference, tree)


@given(st.builds(ArenaPlayer, st.floats(allow_nan=False, allow_infinity=False) | st.integers(),
                 st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([-5.0, 0.0, -0.0, 5.0, 0]),
                 st.floats(allow_nan=False, allow_infinity=False), st.integers(min_value=0),
                 st.integers(min_value=0)),
       st.integers(min_value=0))
def test_arena_states(player, tick):
    state = ArenaState(tick=tick, players={"p1": player, "p2": ArenaPlayer(x=player.y, y=player.x)})
    assert canonical_fast.compile_encoder(ArenaState, canonical.converter) is not None
    assert canonical.encode_state(state) == canonical.encode_state_reference(state)


def test_the_float_texts_keep_zero_and_minus_zero_apart():
    leaf = Leaf(f=-0.0)
    assert canonical.encode_state(Leaf(f=0.0)).startswith(b'{"f":0.0,')
    assert canonical.encode_state(leaf).startswith(b'{"f":-0.0,')
    assert canonical.encode_state(Leaf(f=5)).startswith(b'{"f":5,')  # an int in a float field stays an int
    canonical.encode_state(Leaf(f=5.0))
    assert canonical.encode_state(Leaf(f=5)).startswith(b'{"f":5,')  # even with 5.0's text kept


@pytest.mark.parametrize("cls", [WithAny, Hidden, Hooked])
def test_classes_outside_the_generated_code_use_the_reference(cls):
    assert canonical_fast.compile_encoder(cls, canonical.converter) is None
    state = cls()
    assert canonical.encode_state(state) == canonical.encode_state_reference(state)


def test_an_empty_class_and_a_cycle():
    assert canonical.encode_state(Empty()) == b"{}" == canonical.encode_state_reference(Empty())
    tree = Tree(row=[])
    tree.row.append(tree)  # not a Leaf: the reference's error
    assert outcome(canonical.encode_state, tree) == outcome(canonical.encode_state_reference, tree)


@attrs.define
class Node:
    name: str = ""
    w: float = 0.0
    children: list["Node"] = attrs.field(factory=list)


@attrs.define
class Forest:
    trees: dict[str, Tree] = attrs.field(factory=dict)
    nodes: list[Node] = attrs.field(factory=list)


nodes = st.recursive(st.builds(Node, st.text(max_size=3), st.floats(allow_nan=False, allow_infinity=False)),
                     lambda inner: st.builds(Node, st.text(max_size=3), st.sampled_from([0.0, -0.0, 1.5]),
                                             st.lists(inner, max_size=3)), max_leaves=8)


@given(nodes)
@settings(max_examples=200)
def test_a_recursive_class_is_written_identically(node):
    assert canonical_fast.compile_encoder(Node, canonical.converter) is not None
    assert canonical.encode_state(node) == canonical.encode_state_reference(node)


@given(st.dictionaries(st.text(max_size=2), trees(wild=False), max_size=2), st.lists(nodes, max_size=2))
@settings(max_examples=100)
def test_dicts_and_lists_of_classes_with_containers_are_written_identically(trees_by_name, node_list):
    forest = Forest(trees_by_name, node_list)
    assert canonical.encode_state(forest) == canonical.encode_state_reference(forest)


def test_elements_of_a_class_of_scalars_are_written_inline_others_by_a_call_each():
    compiler = canonical_fast._Compiler(canonical.converter)
    compiler.klass(Forest)
    source = "\n".join(compiler.lines)
    # Tree.leaves (dict[str, Leaf]) and Tree.row (list[Leaf]): Leaf has only scalar fields, written in the loop
    assert "for k, e in v.items():" in source and "for e in v:" in source
    # Forest.trees (dict[str, Tree]) and Node.children (list[Node], Node being compiled): a call per element
    assert source.count("for k, e in v.items()]") >= 1 and source.count("for e in v]") >= 1


def test_ints_and_zeros_in_the_loop_of_a_dict_of_leaves():
    tree = Tree(leaves={"a": Leaf(f=0.0, i=7), "b": Leaf(f=-0.0, i=True), "c": Leaf(f=3, i=2 ** 70)})
    assert canonical.encode_state(tree) == canonical.encode_state_reference(tree)
    assert b'"a":{"f":0.0,"i":7,' in canonical.encode_state(tree)
    assert b'"b":{"f":-0.0,"i":true,' in canonical.encode_state(tree)
    assert b'"c":{"f":3,"i":1180591620717411303424,' in canonical.encode_state(tree)
