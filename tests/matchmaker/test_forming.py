"""Match forming (matchmaker/forming.py): properties over generated pools, then examples.

The rules are re-stated here independently of the implementation (`valid_group`) and checked by
brute force over small pools: every formed match obeys them, and no group that obeys them is
left over.
"""

from __future__ import annotations

import itertools
import math
import random
import time

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from matchmaker.forming import EXPIRED_MAX_WAIT, EXPIRED_PARTY_TOO_LARGE, FormingResult, form_matches
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


def config(players: tuple[int, int] = (2, 2), teams: tuple[int, int] | None = None,
           skill: SkillWindow | None = None, region: RegionRule | None = None,
           max_wait_s: float = 1000.0, start_short: bool = False) -> QueueConfig:
    return QueueConfig(queue=QUEUE, players=PlayerCount(*players), max_wait_s=max_wait_s,
                       teams=None if teams is None else TeamLayout(*teams), skill=skill, region=region,
                       start_short=start_short)


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


def packable(sizes: list[int], teams: int, team_size: int) -> bool:
    for assignment in itertools.product(range(teams), repeat=len(sizes)):
        fill = [0] * teams
        for size, team in zip(sizes, assignment):
            fill[team] += size
        if all(f == team_size for f in fill):
            return True
    return False


def valid_group(group: list[Ticket], cfg: QueueConfig, now: float, region: str | None = None) -> bool:
    """Does `group` make a valid match at `now` (in `region`, or in some region)?"""
    oldest = min(group, key=lambda t: (t.created_at, t.ticket_id))
    oldest_wait = wait(oldest, now)
    players = sum(t.size for t in group)
    sizes_ok = {cfg.players.max}
    if cfg.start_short and oldest_wait >= cfg.max_wait_s:
        sizes_ok |= {n for n in range(cfg.players.min, cfg.players.max + 1) if n % cfg.team_count == 0}
    if players not in sizes_ok:
        return False
    if cfg.skill is not None:
        skills = [t.numbers.get("skill", cfg.skill.default) for t in group]
        if max(skills) - min(skills) > min(cfg.skill.max_width,
                                           cfg.skill.initial + cfg.skill.per_second * oldest_wait):
            return False
    if cfg.region is not None:
        candidates = [region] if region is not None else REGIONS
        if not any(all(accepts(t, r, wait(t, now), cfg.region) for t in group) for r in candidates):
            return False
    return cfg.teams is None or packable([t.size for t in group], cfg.teams.count, players // cfg.teams.count)


def any_valid_group(tickets: list[Ticket], cfg: QueueConfig, now: float, containing: Ticket | None = None) -> bool:
    others = [t for t in tickets if t is not containing]
    for n in range(0 if containing else 1, len(others) + 1):
        for combo in itertools.combinations(others, n):
            group = list(combo) + ([containing] if containing else [])
            if sum(t.size for t in group) <= cfg.players.max and valid_group(group, cfg, now):
                return True
    return False


# -- generated pools ---------------------------------------------------------------------------

@st.composite
def configs(draw) -> QueueConfig:
    with_teams = draw(st.booleans())
    if with_teams:
        teams = (2, draw(st.integers(1, 3)))
        top = teams[0] * teams[1]
    else:
        teams = None
        top = draw(st.integers(1, 5))
    low = draw(st.integers(teams[0] if teams else 1, top))
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
    return QueueConfig(queue=QUEUE, players=PlayerCount(low, top), teams=None if teams is None else TeamLayout(*teams),
                       skill=skill, region=region, max_wait_s=draw(st.sampled_from([30.0, 60.0, math.inf])),
                       start_short=draw(st.booleans()))


@st.composite
def tickets_st(draw, count: int) -> Ticket:
    regions = draw(st.none() | st.frozensets(st.sampled_from(REGIONS), max_size=3))
    latencies = draw(st.dictionaries(st.sampled_from(REGIONS), st.sampled_from([10.0, 60.0, 120.0, 200.0]), max_size=3))
    return ticket(f"t{count}", created_at=float(draw(st.integers(0, 100))),
                  skill=draw(st.none() | st.integers(0, 100).map(float)),
                  size=draw(st.integers(1, 3)), regions=regions, latencies=latencies)


@st.composite
def pools(draw, max_tickets: int = 8) -> list[Ticket]:
    n = draw(st.integers(0, max_tickets))
    return [draw(tickets_st(k)) for k in range(n)]


now_st = st.sampled_from([0.0, 40.0, 80.0, 100.0, 130.0, 200.0])


def outcome_ids(result: FormingResult) -> list[str]:
    matched = [tid for match in result.matches for tid in match.ticket_ids]
    return matched + [tid for tid, _ in result.expired] + result.remaining


@settings(max_examples=300, deadline=None)
@given(cfg=configs(), pool=pools(), now=now_st)
def test_every_ticket_has_one_outcome_and_every_match_obeys_the_rules(cfg, pool, now):
    result = form_matches(pool, cfg, now)
    by_id = {t.ticket_id: t for t in pool}
    ids = outcome_ids(result)
    assert sorted(ids) == sorted(by_id)  # no double booking, nothing lost
    for match in result.matches:
        group = [by_id[tid] for tid in match.ticket_ids]
        assert valid_group(group, cfg, now, match.region)
        assert match.players == tuple(p for t in group for p in t.players)  # parties intact, in order
        players = len(match.players)
        assert cfg.players.min <= players <= cfg.players.max
        assert match.short == (players < cfg.players.max)
        if match.short:
            oldest = min(group, key=lambda t: (t.created_at, t.ticket_id))
            assert cfg.start_short and wait(oldest, now) >= cfg.max_wait_s
        if cfg.region is None:
            assert match.region is None
        if cfg.teams is None:
            assert match.teams == ()
        else:
            assert len(match.teams) == cfg.teams.count
            assert {len(team) for team in match.teams} == {players // cfg.teams.count}
            assert sorted(p for team in match.teams for p in team) == sorted(match.players)
            for t in group:  # a party is in one team
                assert any(set(t.players) <= set(team) for team in match.teams)
        skills = [t.numbers.get("skill", cfg.skill.default if cfg.skill else 0.0) for t in group]
        assert match.quality.skill_spread == (max(skills) - min(skills) if cfg.skill else 0.0)
        assert match.quality.max_wait_s == max(wait(t, now) for t in group)


@settings(max_examples=300, deadline=None)
@given(cfg=configs(), pool=pools(), now=now_st)
def test_no_valid_group_is_left_over_and_the_oldest_is_served_first(cfg, pool, now):
    result = form_matches(pool, cfg, now)
    by_id = {t.ticket_id: t for t in pool}
    left_over = [by_id[tid] for tid in result.remaining] + [by_id[tid] for tid, _ in result.expired]
    assert not any_valid_group(left_over, cfg, now)
    if pool:
        oldest = min(pool, key=lambda t: (t.created_at, t.ticket_id))
        matched = {tid for match in result.matches for tid in match.ticket_ids}
        if oldest.ticket_id not in matched:  # fairness: it had no valid group in the whole pool
            assert not any_valid_group(pool, cfg, now, containing=oldest)
        elif result.matches:
            assert result.matches[0].ticket_ids[0] == oldest.ticket_id  # it seeded the first match


@settings(max_examples=150, deadline=None)
@given(cfg=configs(), pool=pools(), now=now_st, shuffle_seed=st.integers(0, 2**32))
def test_deterministic_and_independent_of_pool_order(cfg, pool, now, shuffle_seed):
    before = list(pool)
    first = form_matches(pool, cfg, now)
    assert pool == before  # the input is not changed
    assert form_matches(pool, cfg, now) == first
    shuffled = list(pool)
    random.Random(shuffle_seed).shuffle(shuffled)
    assert form_matches(shuffled, cfg, now) == first


@settings(max_examples=150, deadline=None)
@given(cfg=configs(), pool=pools(), now=now_st)
def test_expiry_by_max_wait(cfg, pool, now):
    result = form_matches(pool, cfg, now)
    by_id = {t.ticket_id: t for t in pool}
    for tid, reason in result.expired:
        if reason == EXPIRED_MAX_WAIT:
            assert wait(by_id[tid], now) >= cfg.max_wait_s
        else:
            assert reason == EXPIRED_PARTY_TOO_LARGE and by_id[tid].size > cfg.max_party_size
    for tid in result.remaining:
        assert wait(by_id[tid], now) < cfg.max_wait_s
        assert by_id[tid].size <= cfg.max_party_size
    assert [tid for tid, _ in result.expired] == sorted(
        (tid for tid, _ in result.expired), key=lambda tid: (by_id[tid].created_at, tid))
    assert result.remaining == sorted(result.remaining, key=lambda tid: (by_id[tid].created_at, tid))


@settings(max_examples=100, deadline=None)
@given(skills=st.lists(st.integers(0, 1000), max_size=40), pairs=st.integers(0, 10),
       created=st.integers(0, 50))
def test_a_pool_compatible_after_relaxing_is_fully_matched(skills, pairs, created):
    # Every ticket accepts "eu" only after relaxing; the skill window covers 0..1000 by then.
    cfg = config(players=(4, 4), teams=(2, 2),
                 skill=SkillWindow(initial=0.0, per_second=10.0, max_width=1000.0),
                 region=RegionRule(max_latency_ms=50.0, relax_after_s=100.0, relaxed_max_latency_ms=150.0))
    pool = [ticket(f"s{k}", created_at=float(created + k % 7), skill=float(s), latencies={"eu": 120.0})
            for k, s in enumerate(skills)]
    pool += [ticket(f"p{k}", created_at=float(k), skill=500.0, size=2, latencies={"eu": 100.0})
             for k in range(pairs)]
    total = sum(t.size for t in pool)
    early = form_matches(pool, cfg, now=float(created))  # nobody has relaxed yet
    assert early.matches == []
    late = form_matches(pool, cfg, now=created + 200.0)
    matched = sum(len(m.players) for m in late.matches)
    assert matched == total - total % 4
    assert all(m.region == "eu" for m in late.matches)


# -- examples ----------------------------------------------------------------------------------

def test_skill_window_widens_with_the_oldest_tickets_wait():
    cfg = config(skill=SkillWindow(initial=10.0, per_second=1.0, max_width=80.0))
    pool = [ticket("old", created_at=0.0, skill=0.0), ticket("young", created_at=45.0, skill=60.0)]
    assert form_matches(pool, cfg, now=49.0).remaining == ["old", "young"]  # window of "old": 59
    assert form_matches(pool, cfg, now=50.0).matches != []  # 60: "young" (window 15) rides on "old"
    cfg_tight = config(skill=SkillWindow(initial=10.0, per_second=1.0, max_width=55.0))
    assert form_matches(pool, cfg_tight, now=1000.0).matches == []  # 60 > max width 55
    window = SkillWindow(initial=10.0, per_second=1.0, max_width=80.0)
    assert [window.width(w) for w in (0, 30, 70, 500)] == [10.0, 40.0, 80.0, 80.0]


def test_skill_window_boundary_is_inclusive():
    cfg = config(skill=SkillWindow(initial=10.0, per_second=1.0))
    pool = [ticket("a", created_at=0.0, skill=100.0), ticket("b", created_at=10.0, skill=130.0)]
    assert form_matches(pool, cfg, now=19.0).matches == []  # oldest waited 19: window 29 < 30
    result = form_matches(pool, cfg, now=20.0)  # window 30
    assert [m.ticket_ids for m in result.matches] == [("a", "b")]
    assert result.matches[0].quality.skill_spread == 30.0


def test_the_group_is_the_nearest_in_skill_and_the_spread_holds_both_ways():
    cfg = config(players=(3, 3), skill=SkillWindow(initial=10.0))
    pool = [ticket("seed", 0.0, skill=50.0), ticket("low", 1.0, skill=41.0), ticket("high", 2.0, skill=59.0),
            ticket("near", 3.0, skill=52.0)]
    # low and high are each 9 from the seed; low with near spans 11 > 10, high with the seed spans 9
    (match,) = form_matches(pool, cfg, now=5.0).matches
    assert match.quality.skill_spread == 9.0
    assert set(match.ticket_ids) == {"seed", "near", "high"}


def test_exact_search_finds_a_group_the_nearest_first_walk_misses():
    # Seed at 5, window 10: nearest first takes 9.5, then 0 (spread 9.5), then 14 breaks the window;
    # the only valid group is {5, 9.5, 14, 15}.
    cfg = config(players=(4, 4), skill=SkillWindow(initial=10.0))
    pool = [ticket("seed", 0.0, skill=5.0), ticket("a", 1.0, skill=0.0), ticket("b", 2.0, skill=9.5),
            ticket("c", 3.0, skill=14.0), ticket("d", 4.0, skill=15.0)]
    (match,) = form_matches(pool, cfg, now=5.0).matches
    assert set(match.ticket_ids) == {"seed", "b", "c", "d"}


def test_regions_relax_after_waiting():
    rule = RegionRule(max_latency_ms=100.0, relax_after_s=30.0, relaxed_max_latency_ms=100.0)
    cfg = config(region=rule)
    eu = ticket("eu", created_at=0.0, regions={"eu"}, latencies={"eu": 20.0, "us": 80.0})
    us = ticket("us", created_at=10.0, regions={"us"}, latencies={"us": 20.0, "eu": 90.0})
    assert form_matches([eu, us], cfg, now=29.0).matches == []
    # at 30 only "eu" has relaxed: it now accepts "us" (80 ms), "us" still wants "us"
    (match,) = form_matches([eu, us], cfg, now=30.0).matches
    assert match.region == "us"
    # both relaxed: both accept both; the seed ("eu", the oldest) prefers its lowest latency
    (match,) = form_matches([eu, us], cfg, now=45.0).matches
    assert match.region == "eu"
    assert rule.accepted_regions(us, 45.0) == ("us", "eu")
    assert rule.accepted_regions(us, 0.0) == ("us",)


def test_latency_limit_and_its_relaxation():
    rule = RegionRule(max_latency_ms=100.0, relax_after_s=60.0, relaxed_max_latency_ms=200.0,
                      relaxed_any_region=False)
    cfg = config(region=rule)
    near = ticket("near", created_at=0.0, regions={"eu"}, latencies={"eu": 30.0})
    far = ticket("far", created_at=0.0, regions={"eu"}, latencies={"eu": 150.0})
    unknown = ticket("unknown", created_at=0.0, regions={"eu"})
    assert form_matches([near, far], cfg, now=59.0).matches == []
    assert [m.region for m in form_matches([near, far], cfg, now=60.0).matches] == ["eu"]
    # an unknown latency fails any numeric limit
    assert form_matches([near, unknown], cfg, now=500.0).matches == []
    no_limit = RegionRule(max_latency_ms=None)
    assert form_matches([near, unknown], config(region=no_limit), now=0.0).matches != []
    # without relaxed_any_region the preference stays: a region not listed is never accepted
    other = ticket("other", created_at=0.0, regions={"us"}, latencies={"eu": 10.0, "us": 10.0})
    assert form_matches([near, other], cfg, now=500.0).matches == []


def test_teams_are_equal_in_size_and_balanced_in_skill():
    cfg = config(players=(4, 4), teams=(2, 2), skill=SkillWindow(initial=100.0))
    pool = [ticket(f"s{k}", created_at=float(k), skill=skill) for k, skill in enumerate([10.0, 20.0, 30.0, 40.0])]
    (match,) = form_matches(pool, cfg, now=10.0).matches
    assert sorted(map(sorted, match.teams)) == [["s0.0", "s3.0"], ["s1.0", "s2.0"]]
    assert sorted(match.quality.team_skill) == [50.0, 50.0]


def test_teams_keep_parties_whole_even_when_greedy_would_split_them():
    # 2 teams of 6 from parties 3, 3, 2, 2, 2: only {3, 3} + {2, 2, 2} works.
    cfg = config(players=(12, 12), teams=(2, 6))
    sizes = [3, 3, 2, 2, 2]
    pool = [ticket(f"p{k}", created_at=float(k), size=size) for k, size in enumerate(sizes)]
    (match,) = form_matches(pool, cfg, now=10.0).matches
    assert sorted(len(team) for team in match.teams) == [6, 6]
    for t in pool:
        assert any(set(t.players) <= set(team) for team in match.teams)


def test_a_party_larger_than_a_team_expires_at_once():
    cfg = config(players=(4, 4), teams=(2, 2))
    pool = [ticket("trio", created_at=0.0, size=3), ticket("solo", created_at=1.0)]
    result = form_matches(pool, cfg, now=2.0)
    assert result.expired == [("trio", EXPIRED_PARTY_TOO_LARGE)]
    assert result.remaining == ["solo"]


def test_max_wait_expires_and_start_short_starts_with_fewer():
    plain = config(players=(2, 4), max_wait_s=60.0)
    pool = [ticket("a", created_at=0.0), ticket("b", created_at=10.0), ticket("c", created_at=50.0)]
    waiting = form_matches(pool, plain, now=59.0)
    assert waiting.remaining == ["a", "b", "c"] and waiting.matches == []
    expired = form_matches(pool, plain, now=65.0)
    assert expired.expired == [("a", EXPIRED_MAX_WAIT)]  # b has waited 55 s
    assert expired.remaining == ["b", "c"]

    short = attrs.evolve(plain, start_short=True)
    assert form_matches(pool, short, now=59.0).matches == []
    (match,) = form_matches(pool, short, now=65.0).matches
    assert match.ticket_ids == ("a", "b", "c") and match.short

    # with teams a short match has equal teams: 3 players in 2 teams cannot be; 2 can
    short_teams = config(players=(2, 4), teams=(2, 2), max_wait_s=60.0, start_short=True)
    result = form_matches(pool, short_teams, now=65.0)
    assert [m.ticket_ids for m in result.matches] == [("a", "b")]
    assert [len(team) for team in result.matches[0].teams] == [1, 1]
    assert result.remaining == ["c"]


def test_the_oldest_ticket_seeds_the_match():
    cfg = config(players=(2, 2))
    pool = [ticket("c", created_at=3.0), ticket("a", created_at=1.0), ticket("b", created_at=2.0),
            ticket("a2", created_at=1.0)]
    result = form_matches(pool, cfg, now=5.0)
    assert [m.ticket_ids for m in result.matches] == [("a", "a2"), ("b", "c")]


def test_quality_figures():
    cfg = config(players=(3, 3), skill=SkillWindow(initial=50.0))
    pool = [ticket("a", created_at=0.0, skill=10.0, size=2), ticket("b", created_at=6.0, skill=40.0)]
    (match,) = form_matches(pool, cfg, now=9.0).matches
    assert match.quality.skill_spread == 30.0
    assert match.quality.max_wait_s == 9.0
    assert match.quality.mean_wait_s == pytest.approx((9.0 * 2 + 3.0) / 3)


def test_reads_no_clock(monkeypatch):
    def no_clock(*_args):
        raise AssertionError("form_matches read the clock")
    pool = [ticket(f"t{k}", created_at=float(k), skill=float(k)) for k in range(10)]
    for name in ("time", "monotonic", "perf_counter", "time_ns", "monotonic_ns"):
        monkeypatch.setattr(time, name, no_clock)
    result = form_matches(pool, config(skill=SkillWindow(initial=5.0)), now=20.0)
    assert len(result.matches) == 5


@pytest.mark.parametrize("make", [
    lambda: ticket("", 0.0),
    lambda: ticket("x" * 65, 0.0),
    lambda: ticket("bad id", 0.0),
    lambda: ticket("t", math.nan),
    lambda: ticket("t", 0.0, skill=math.inf),
    lambda: ticket("t", 0.0, latencies={"eu": -1.0}),
    lambda: Ticket(ticket_id="t", queue=QUEUE, players=[], created_at=0.0),
    lambda: Ticket(ticket_id="t", queue=QUEUE, players=["a", "a"], created_at=0.0),
    lambda: Ticket(ticket_id="t", queue=QUEUE, players=["a"], created_at=0.0, string_sets={"regions": "eu"}),
    lambda: PlayerCount(3, 2),
    lambda: PlayerCount(0, 2),
    lambda: config(players=(2, 4), teams=(2, 3)),
    lambda: SkillWindow(initial=10.0, max_width=5.0),
    lambda: SkillWindow(initial=-1.0),
    lambda: RegionRule(max_latency_ms=math.nan),
    lambda: config(max_wait_s=-1.0),
])
def test_bad_data_is_refused(make):
    with pytest.raises((ValueError, TypeError)):
        make()


def test_bad_pools_are_refused():
    cfg = config()
    with pytest.raises(ValueError, match="twice"):
        form_matches([ticket("a"), ticket("a")], cfg, now=0.0)
    with pytest.raises(ValueError, match="two tickets"):
        form_matches([Ticket(ticket_id="a", queue=QUEUE, players=["p"], created_at=0.0),
                      Ticket(ticket_id="b", queue=QUEUE, players=["p"], created_at=0.0)], cfg, now=0.0)
    with pytest.raises(ValueError, match="queue"):
        form_matches([Ticket(ticket_id="a", queue="casual", players=["p"], created_at=0.0)], cfg, now=0.0)
    with pytest.raises(ValueError, match="now"):
        form_matches([], cfg, now=math.nan)


def test_tickets_are_immutable_copies():
    numbers = {"skill": 1.0}
    t = Ticket(ticket_id="a", queue=QUEUE, players=["p"], created_at=0.0, numbers=numbers)
    numbers["skill"] = 99.0
    assert t.numbers["skill"] == 1.0
    with pytest.raises(TypeError):
        t.numbers["skill"] = 5.0  # type: ignore[index]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        t.created_at = 5.0  # type: ignore[misc]


def test_bench_runs_and_reports():
    from tools.bench_forming import run
    report = run(2000, seed=7)
    assert set(report) >= {"tickets", "form_pass_s", "matches_formed", "tickets_matched",
                           "mean_skill_spread", "max_wait_s"}
    assert report["tickets"] == 2000 and report["matches_formed"] > 100
