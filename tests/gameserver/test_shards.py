"""Which worker owns a match, and where placement puts a new one (gameserver/shards.py)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gameserver.ids import match_id_from_name, new_match_id
from gameserver.shards import MAX_WORKERS, Load, least_loaded, new_match_id_for, owner

workers = st.integers(min_value=1, max_value=MAX_WORKERS)


@given(st.text(min_size=1, max_size=64), workers)
def test_every_id_has_exactly_one_owner_that_never_changes(name, n):
    match_id = match_id_from_name(name)
    assert 0 <= owner(match_id, n) < n
    assert owner(match_id, n) == owner(match_id, n)


def test_the_owner_is_a_fixed_function_of_the_id_not_of_the_process():
    # pinned: files written under N workers must be found by the same workers after any restart
    assert [owner(match_id_from_name(f"m{i}"), 4) for i in range(8)] == [
        owner(match_id_from_name(f"m{i}"), 4) for i in range(8)]
    assert owner("01mx8aas21jzbsdfqqxewbwg7t", 2) == 0 and owner("0pr6fn5k2gar22arr9ny48qq6x", 2) == 1


def test_one_worker_owns_everything():
    assert {owner(new_match_id(), 1) for _ in range(100)} == {0}


def test_ids_spread_over_the_workers():
    counts = [0] * 4
    for i in range(4000):
        counts[owner(match_id_from_name(str(i)), 4)] += 1
    assert all(800 < c < 1200 for c in counts), counts


@given(workers.filter(lambda n: n <= 16), st.data())
def test_a_new_id_for_a_worker_is_owned_by_it(n, data):
    worker = data.draw(st.integers(min_value=0, max_value=n - 1))
    assert owner(new_match_id_for(worker, n), n) == worker


def test_a_worker_outside_the_pool_is_refused():
    with pytest.raises(ValueError):
        new_match_id_for(2, 2)


loads = st.lists(st.none() | st.builds(Load, st.integers(0, 50), st.integers(0, 50)), max_size=8)


@given(loads)
def test_placement_picks_the_least_loaded_running_worker(given_loads):
    chosen = least_loaded(given_loads)
    running = [i for i, load in enumerate(given_loads) if load is not None]
    if not running:
        assert chosen is None
        return
    assert chosen in running
    best = given_loads[chosen]
    for i in running:
        other = given_loads[i]
        assert (best.matches, best.connections, chosen) <= (other.matches, other.connections, i)


def test_placing_one_after_another_alternates_between_equal_workers():
    loads = [Load(0, 0), Load(0, 0), None]
    placed = []
    for _ in range(6):
        k = least_loaded(loads)
        placed.append(k)
        loads[k] = Load(loads[k].matches + 1, 0)
    assert placed == [0, 1, 0, 1, 0, 1]
