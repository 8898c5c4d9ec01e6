"""Backfill (matchmaker/backfill.py): properties over generated pools and requests, then examples.

The rules are re-stated here independently of the implementation (`fits`, `reference`: the walk in
fairness order that the module docstring describes, done the slow way) and the result must be the
walk's, exactly.
"""

from __future__ import annotations

import math
import random
import time
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matchmaker import backfill
from matchmaker.backfill import BackfillFill, BackfillRequest, BackfillResult, fill_backfills
from matchmaker.tickets import PlayerCount, QueueConfig, RegionRule, SkillWindow, TeamLayout, Ticket

QUEUE = "ranked"
REGIONS = ("eu", "us", "ap")


def ticket(ticket_id: str, created_at: float = 0.0, skill: float | None = None, size: int = 1,
           regions: set[str] | None = None, latencies: dict[str, float] | None = None) -> Ticket:
    return Ticket(
        ticket_id=ticket_id, queue=QUEUE, players=[f"{ticket_id}.{k}" for k in range(size)],
        created_at=created_at,
        numbers={} if skill is None else {"skill": skill},
        string_sets={} if regions is None else {"regions": regions},
        latencies=latencies or {},
    )


def config(players: tuple[int, int] = (4, 4), teams: tuple[int, int] | None = None,
           skill: SkillWindow | None = None, region: RegionRule | None = None) -> QueueConfig:
    return QueueConfig(queue=QUEUE, players=PlayerCount(*players), max_wait_s=60.0,
                       teams=None if teams is None else TeamLayout(*teams), skill=skill, region=region)


def request(match_id: str, open_seats: int, created_at: float = 0.0, **kwargs) -> BackfillRequest:
    return BackfillRequest(match_id=match_id, queue=QUEUE, open_seats=open_seats, created_at=created_at, **kwargs)


# -- the rules, re-stated ----------------------------------------------------------------------

def wait(t: Ticket, now: float) -> float:
    return max(0.0, now - t.created_at)


def accepts(t: Ticket, region: str, wait_s: float, rule: RegionRule) -> bool:
    latency = t.latencies.get(region, math.inf)
    preferred = t.string_sets.get(rule.regions)
    listed = region in t.latencies if preferred is None else region in preferred
    if wait_s >= rule.relax_after_s:
        limit = rule.relaxed_max_latency_ms
        if rule.relaxed_any_region:
            listed = listed or region in t.latencies
    else:
        limit = rule.max_latency_ms
    return listed and (limit is None or latency <= limit)


def skill_of(t: Ticket, cfg: QueueConfig) -> float:
    return t.numbers.get("skill", cfg.skill.default) if cfg.skill else 0.0


def matches_request(t: Ticket, req: BackfillRequest, cfg: QueueConfig, now: float) -> bool:
    """Region and skill: the parts of `fits` that do not depend on the seats left."""
    w = wait(t, now)
    if cfg.region is not None and req.region is not None and not accepts(t, req.region, w, cfg.region):
        return False
    if cfg.skill is not None and req.skill is not None:
        width = min(cfg.skill.max_width, cfg.skill.initial + cfg.skill.per_second * w)
        if abs(skill_of(t, cfg) - req.skill) > width:
            return False
    return True


def largest_party(seats: int, room: list[int], cfg: QueueConfig) -> int:
    if room:
        return max(room)
    return seats if cfg.teams is None else min(seats, cfg.teams.size)


def fits(t: Ticket, req: BackfillRequest, seats: int, room: list[int], cfg: QueueConfig, now: float) -> bool:
    return t.size <= largest_party(seats, room, cfg) and matches_request(t, req, cfg, now)


def fairness(t: Ticket) -> tuple[float, str]:
    return (t.created_at, t.ticket_id)


def reference(pool: list[Ticket], requests: list[BackfillRequest], cfg: QueueConfig, now: float) -> BackfillResult:
    free = sorted(pool, key=fairness)
    fills = []
    for req in sorted(requests, key=lambda r: (r.created_at, r.match_id)):
        seats, room = req.open_seats, list(req.team_open)
        chosen, teams = [], [[] for _ in room]
        for t in list(free):
            if seats and fits(t, req, seats, room, cfg, now):
                if room:
                    team = max(range(len(room)), key=lambda k: (room[k], -k))
                    room[team] -= t.size
                    teams[team] += t.players
                seats -= t.size
                chosen.append(t)
                free.remove(t)
        if chosen:
            fills.append(BackfillFill(match_id=req.match_id, ticket_ids=tuple(t.ticket_id for t in chosen),
                                      players=tuple(p for t in chosen for p in t.players),
                                      teams=tuple(map(tuple, teams))))
    return BackfillResult(fills=fills, remaining=[t.ticket_id for t in free])


# -- generated inputs --------------------------------------------------------------------------

@st.composite
def configs(draw) -> QueueConfig:
    if draw(st.booleans()):
        teams = (draw(st.integers(2, 3)), draw(st.integers(1, 3)))
        top = teams[0] * teams[1]
    else:
        teams = None
        top = draw(st.integers(1, 6))
    skill = draw(st.none() | st.builds(
        lambda initial, per_second, extra: SkillWindow(initial=initial, per_second=per_second,
                                                       max_width=initial + extra),
        st.integers(0, 30), st.sampled_from([0.0, 0.5, 2.0]), st.sampled_from([0, 20, 60, math.inf])))
    region = draw(st.none() | st.builds(
        RegionRule,
        max_latency_ms=st.sampled_from([None, 50.0, 100.0]),
        relax_after_s=st.sampled_from([0.0, 20.0, 50.0, math.inf]),
        relaxed_max_latency_ms=st.sampled_from([None, 100.0, 150.0]),
        relaxed_any_region=st.booleans()))
    return QueueConfig(queue=QUEUE, players=PlayerCount(1, top), teams=None if teams is None else TeamLayout(*teams),
                       skill=skill, region=region, max_wait_s=60.0)


@st.composite
def tickets_st(draw, count: int) -> Ticket:
    regions = draw(st.none() | st.frozensets(st.sampled_from(REGIONS), max_size=3))
    latencies = draw(st.dictionaries(st.sampled_from(REGIONS), st.sampled_from([10.0, 60.0, 120.0, 200.0]), max_size=3))
    return ticket(f"t{count}", created_at=float(draw(st.integers(0, 100))),
                  skill=draw(st.none() | st.integers(0, 100).map(float)),
                  size=draw(st.integers(1, 4)), regions=regions, latencies=latencies)


@st.composite
def requests_st(draw, cfg: QueueConfig, count: int) -> list[BackfillRequest]:
    made = []
    for number in range(count):
        if cfg.teams is not None and draw(st.booleans()):  # most matches say which teams lost players
            team_open = tuple(draw(st.integers(0, cfg.teams.size)) for _ in range(cfg.teams.count))
            if not sum(team_open):
                continue
            seats = sum(team_open)
        else:
            team_open = ()
            seats = draw(st.integers(1, cfg.players.max))
        made.append(request(f"m{number}", seats, created_at=float(draw(st.integers(0, 10))),
                            region=draw(st.none() | st.sampled_from(REGIONS)),
                            skill=draw(st.none() | st.integers(0, 100).map(float)), team_open=team_open))
    return made


@st.composite
def cases(draw, max_tickets: int = 12, max_requests: int = 4):
    cfg = draw(configs())
    pool = [draw(tickets_st(k)) for k in range(draw(st.integers(0, max_tickets)))]
    requests = draw(requests_st(cfg, draw(st.integers(0, max_requests))))
    now = draw(st.sampled_from([0.0, 40.0, 80.0, 130.0]))
    return cfg, pool, requests, now


# -- properties --------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(case=cases(), first_chunk=st.sampled_from([1, 2, 5, 1024]))
def test_the_result_is_the_walk_in_fairness_order(case, first_chunk):
    cfg, pool, requests, now = case
    with mock.patch.object(backfill, "_FIRST_CHUNK", first_chunk):  # 1024: one chunk; else several
        assert fill_backfills(pool, requests, cfg, now) == reference(pool, requests, cfg, now)


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_seats_parties_region_and_skill(case):
    cfg, pool, requests, now = case
    result = fill_backfills(pool, requests, cfg, now)
    by_id = {t.ticket_id: t for t in pool}
    by_match = {r.match_id: r for r in requests}
    used = [tid for fill in result.fills for tid in fill.ticket_ids]
    assert len(used) == len(set(used))  # no ticket twice
    assert sorted(used + result.remaining) == sorted(by_id)  # nothing lost
    assert result.remaining == sorted(result.remaining, key=lambda tid: fairness(by_id[tid]))
    for fill in result.fills:
        req = by_match[fill.match_id]
        group = [by_id[tid] for tid in fill.ticket_ids]
        assert group and fill.ticket_ids == tuple(sorted(fill.ticket_ids, key=lambda tid: fairness(by_id[tid])))
        assert fill.players == tuple(p for t in group for p in t.players)  # parties intact, in order
        assert len(fill.players) <= req.open_seats
        if req.team_open:
            assert len(fill.teams) == len(req.team_open)
            for added, open_seats in zip(fill.teams, req.team_open):
                assert len(added) <= open_seats
            for t in group:  # a party is in one team
                assert sum(set(t.players) <= set(team) for team in fill.teams) == 1
        else:
            assert fill.teams == ()
            if cfg.teams is not None:
                assert max(t.size for t in group) <= cfg.teams.size
        for t in group:
            assert matches_request(t, req, cfg, now)  # region and skill


@settings(max_examples=300, deadline=None)
@given(case=cases())
def test_a_fitting_older_ticket_is_never_passed_over(case):
    """Replays each fill: before each ticket taken, no older ticket still free fitted."""
    cfg, pool, requests, now = case
    result = fill_backfills(pool, requests, cfg, now)
    by_id = {t.ticket_id: t for t in pool}
    filled = {fill.match_id: fill for fill in result.fills}
    free = sorted(pool, key=fairness)
    for req in sorted(requests, key=lambda r: (r.created_at, r.match_id)):
        fill = filled.get(req.match_id)
        seats, room = req.open_seats, list(req.team_open)
        for tid in fill.ticket_ids if fill else ():
            t = by_id[tid]
            for older in free:
                if fairness(older) >= fairness(t):
                    break
                assert not fits(older, req, seats, room, cfg, now)
            assert fits(t, req, seats, room, cfg, now)
            if room:  # the team with the most open seats, ties the lowest number
                team = next(k for k, added in enumerate(fill.teams) if t.players[0] in added)
                assert room[team] == max(room) and room.index(max(room)) == team
                room[team] -= t.size
            seats -= t.size
            free.remove(t)
        for t in free:  # and nothing left fits what the request still has open
            assert not (seats and fits(t, req, seats, room, cfg, now))


@settings(max_examples=200, deadline=None)
@given(case=cases(), shuffle_seed=st.integers(0, 2**32))
def test_deterministic_and_independent_of_input_order(case, shuffle_seed):
    cfg, pool, requests, now = case
    pool_before, requests_before = list(pool), list(requests)
    first = fill_backfills(pool, requests, cfg, now)
    assert pool == pool_before and requests == requests_before  # the inputs are not changed
    assert fill_backfills(pool, requests, cfg, now) == first
    rng = random.Random(shuffle_seed)
    pool, requests = list(pool), list(requests)
    rng.shuffle(pool)
    rng.shuffle(requests)
    assert fill_backfills(pool, requests, cfg, now) == first


@settings(max_examples=50, deadline=None)
@given(skills=st.lists(st.integers(0, 1000).map(float), min_size=1, max_size=300),
       targets=st.lists(st.integers(-100, 1100).map(float), min_size=1, max_size=30),
       per_second=st.sampled_from([0.0, 0.1, 1.0]), first_chunk=st.sampled_from([16, 1024]))
def test_larger_pools_match_the_walk(skills, targets, per_second, first_chunk):
    # Many tickets per index, so the segment tree has depth and the skill ranges shrink often.
    cfg = config(players=(6, 6), skill=SkillWindow(initial=5.0, per_second=per_second, max_width=200.0))
    pool = [ticket(f"t{k}", created_at=float(k % 97), skill=s, size=1 + k % 3) for k, s in enumerate(skills)]
    requests = [request(f"m{k}", 1 + k % 6, created_at=float(k), skill=target) for k, target in enumerate(targets)]
    with mock.patch.object(backfill, "_FIRST_CHUNK", first_chunk):
        assert fill_backfills(pool, requests, cfg, now=100.0) == reference(pool, requests, cfg, now=100.0)


# -- examples ----------------------------------------------------------------------------------

def test_the_oldest_request_is_served_first_with_the_longest_waiting_tickets():
    pool = [ticket("young", created_at=5.0), ticket("old", created_at=1.0), ticket("middle", created_at=3.0)]
    requests = [request("later", 2, created_at=2.0), request("first", 2, created_at=1.0)]
    result = fill_backfills(pool, requests, config(), now=10.0)
    assert [(f.match_id, f.ticket_ids) for f in result.fills] == [("first", ("old", "middle")), ("later", ("young",))]
    assert result.remaining == []


def test_a_party_that_does_not_fit_is_passed_over_not_split():
    pool = [ticket("trio", created_at=0.0, size=3), ticket("duo", created_at=1.0, size=2),
            ticket("solo", created_at=2.0)]
    (fill,) = fill_backfills(pool, [request("m", 2)], config(), now=5.0).fills
    assert fill.ticket_ids == ("duo",)  # the trio is too large; the duo fills the match; the solo waits
    assert fill.players == ("duo.0", "duo.1")


def test_teams_take_whole_parties_into_the_team_with_most_open_seats():
    cfg = config(players=(6, 6), teams=(2, 3))
    pool = [ticket("a", created_at=0.0), ticket("duo", created_at=1.0, size=2), ticket("b", created_at=2.0),
            ticket("c", created_at=3.0)]
    # team 0 lacks 1 player, team 1 lacks 2: "a" goes to team 1 (most open), then the duo fits no
    # team (1 and 1 left), "b" goes to team 0 (tie: the lowest number), "c" to team 1.
    (fill,) = fill_backfills(pool, [request("m", 3, team_open=(1, 2))], cfg, now=5.0).fills
    assert fill.ticket_ids == ("a", "b", "c")
    assert fill.teams == (("b.0",), ("a.0", "c.0"))
    # without team_open the teams are not tracked: a party fits when it fits one team and the seats
    (fill,) = fill_backfills(pool, [request("m", 3)], cfg, now=5.0).fills
    assert fill.ticket_ids == ("a", "duo") and fill.teams == ()


def test_skill_window_of_the_ticket_widens_with_its_wait():
    cfg = config(skill=SkillWindow(initial=10.0, per_second=1.0, max_width=50.0))
    pool = [ticket("far-old", created_at=0.0, skill=140.0), ticket("far-young", created_at=90.0, skill=140.0),
            ticket("near", created_at=95.0, skill=105.0)]
    # at 100: far-old waited 100 s (window 50: 40 away fits), far-young 10 s (window 20: no), near 5 s (15: yes)
    (fill,) = fill_backfills(pool, [request("m", 3, skill=100.0)], cfg, now=100.0).fills
    assert fill.ticket_ids == ("far-old", "near")
    # without a skill in the request, or without a skill rule, skill does not matter
    assert len(fill_backfills(pool, [request("m", 3)], cfg, now=100.0).fills[0].ticket_ids) == 3
    assert len(fill_backfills(pool, [request("m", 3, skill=100.0)], config(), now=100.0).fills[0].ticket_ids) == 3


def test_region_must_be_accepted_at_the_tickets_wait():
    rule = RegionRule(max_latency_ms=100.0, relax_after_s=30.0, relaxed_max_latency_ms=150.0)
    cfg = config(region=rule)
    eu = ticket("eu", created_at=0.0, regions={"eu"}, latencies={"eu": 20.0, "us": 120.0})
    us = ticket("us", created_at=0.0, regions={"us"}, latencies={"us": 20.0})
    assert fill_backfills([eu, us], [request("m", 2, region="us")], cfg, now=10.0).fills[0].ticket_ids == ("us",)
    # relaxed after 30 s: "eu" now accepts "us" at 120 ms
    assert fill_backfills([eu, us], [request("m", 2, region="us")], cfg, now=30.0).fills[0].ticket_ids == ("eu", "us")
    # a request without a region, or a queue without a region rule, takes any region
    assert fill_backfills([eu, us], [request("m", 2)], cfg, now=10.0).fills[0].ticket_ids == ("eu", "us")
    assert fill_backfills([eu, us], [request("m", 2, region="ap")], config(), now=0.0).fills[0].ticket_ids == ("eu", "us")


def test_a_request_nothing_fits_is_not_in_the_fills():
    result = fill_backfills([ticket("duo", size=2)], [request("m", 1)], config(), now=0.0)
    assert result == BackfillResult(fills=[], remaining=["duo"])
    assert fill_backfills([], [request("m", 1)], config(), now=0.0) == BackfillResult(fills=[], remaining=[])
    assert fill_backfills([ticket("a")], [], config(), now=0.0) == BackfillResult(fills=[], remaining=["a"])


def test_reads_no_clock(monkeypatch):
    def no_clock(*_args):
        raise AssertionError("fill_backfills read the clock")
    pool = [ticket(f"t{k}", created_at=float(k), skill=float(k)) for k in range(10)]
    for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, name, no_clock)
    result = fill_backfills(pool, [request("m", 3, skill=5.0)], config(skill=SkillWindow(initial=2.0)), now=20.0)
    assert result.fills[0].ticket_ids == ("t3", "t4", "t5")


@pytest.mark.parametrize("make", [
    lambda: request("m", 0),
    lambda: request("m", True),
    lambda: request("m", 1.5),
    lambda: request("bad id", 1),
    lambda: request("m", 1, created_at=math.inf),
    lambda: request("m", 1, skill=math.nan),
    lambda: request("m", 1, region=""),
    lambda: request("m", 3, team_open=(1, 1)),
    lambda: request("m", 2, team_open=(3, -1)),
])
def test_bad_requests_are_refused(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_bad_inputs_are_refused():
    cfg = config()
    with pytest.raises(ValueError, match="twice"):
        fill_backfills([ticket("a"), ticket("a")], [], cfg, now=0.0)
    with pytest.raises(ValueError, match="queue"):
        fill_backfills([Ticket(ticket_id="a", queue="casual", players=["p"], created_at=0.0)], [], cfg, now=0.0)
    with pytest.raises(ValueError, match="now"):
        fill_backfills([], [], cfg, now=math.nan)
    with pytest.raises(TypeError):
        fill_backfills(["a"], [], cfg, now=0.0)  # type: ignore[list-item]
    with pytest.raises(TypeError):
        fill_backfills([], ["m"], cfg, now=0.0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="queue"):
        fill_backfills([], [BackfillRequest(match_id="m", queue="casual", open_seats=1, created_at=0.0)], cfg, now=0.0)
    with pytest.raises(ValueError, match="twice"):
        fill_backfills([], [request("m", 1), request("m", 2)], cfg, now=0.0)
    with pytest.raises(ValueError, match="teams"):
        fill_backfills([], [request("m", 2, team_open=(1, 1))], cfg, now=0.0)  # the queue has no teams
    with pytest.raises(ValueError, match="teams"):
        fill_backfills([], [request("m", 2, team_open=(1, 1))], config(players=(6, 6), teams=(3, 2)), now=0.0)
