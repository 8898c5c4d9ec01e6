"""A digest of `form_matches` results over fixed pools: `python -m tools.forming_digest [--save F | --check F]`.

For changes to matchmaker/forming.py that must keep every result identical (same matches in the
same order, same teams, same quality figures to the last bit): save the digest before, check after.
A result is hashed through its repr (attrs classes; a float's repr is exact, and tells -0.0 from 0.0).

The pools: tools/bench_forming.make_pool at several sizes and seeds (1,000 to 100,000 tickets)
under the bench's queue and a few variants of it (no teams, three teams, no skill, no region,
integer skills, equal creation times, 20 regions); then the generated pools of tests/matchmaker/test_forming.py
(its hypothesis strategies, derandomized so that every run draws the same examples).
Prints one line per case and the overall digest.
"""

from __future__ import annotations

import hashlib
import json
import sys

import attrs
from hypothesis import HealthCheck, given, settings

from matchmaker.forming import form_matches
from matchmaker.tickets import PlayerCount, RegionRule, SkillWindow, TeamLayout
from tools.bench_forming import CONFIG, NOW, make_pool

VARIANTS = {
    "bench": CONFIG,
    "no_teams": attrs.evolve(CONFIG, teams=None, players=PlayerCount(min=3, max=6)),
    "three_teams": attrs.evolve(CONFIG, teams=TeamLayout(count=3, size=4), players=PlayerCount(min=6, max=12)),
    "no_skill": attrs.evolve(CONFIG, skill=None),
    "no_region": attrs.evolve(CONFIG, region=None),
    "strict": attrs.evolve(CONFIG, skill=SkillWindow(initial=5.0, per_second=0.5, max_width=60.0),
                           region=RegionRule(max_latency_ms=50.0), start_short=False),
}
SIZES = [(1_000, 1), (1_000, 2), (5_000, 3), (20_000, 4), (100_000, 1)]


def _digest(value: object) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def _integer_skills(pool):
    return [attrs.evolve(t, numbers={"skill": int(t.numbers["skill"])}) for t in pool]


def _same_time(pool):
    return [attrs.evolve(t, created_at=NOW - 10.0 * (k % 5)) for k, t in enumerate(pool)]


def _many_regions(pool):
    """20 regions (each ticket's 4 renamed by its number modulo 5): more than forming masks by region."""
    def renamed(mapping, k):
        return {f"{region}.{k % 5}": value for region, value in mapping.items()}
    return [attrs.evolve(t, latencies=renamed(t.latencies, k),
                         string_sets={"regions": set(renamed(dict.fromkeys(t.string_sets["regions"]), k))})
            for k, t in enumerate(pool)]


def bench_cases() -> dict[str, str]:
    cases = {}
    for tickets, seed in SIZES:
        pool = make_pool(tickets, seed)
        variants = VARIANTS if tickets <= 20_000 else {"bench": CONFIG}
        for name, config in variants.items():
            cases[f"{name}/{tickets}/{seed}"] = _digest(form_matches(pool, config, NOW))
        if tickets <= 5_000:
            cases[f"int_skills/{tickets}/{seed}"] = _digest(form_matches(_integer_skills(pool), CONFIG, NOW))
            cases[f"same_time/{tickets}/{seed}"] = _digest(form_matches(_same_time(pool), CONFIG, NOW))
            cases[f"many_regions/{tickets}/{seed}"] = _digest(form_matches(_many_regions(pool), CONFIG, NOW))
    return cases


def _canonical(pool) -> list:
    """The pool's repr without sets (a set's repr depends on the process's string hash seed)."""
    return [(t.ticket_id, t.players, t.created_at, sorted(t.numbers.items()),
             sorted((name, sorted(members)) for name, members in t.string_sets.items()),
             sorted(t.latencies.items())) for t in pool]


def hypothesis_cases(examples: int = 3000) -> dict[str, str]:
    from tests.matchmaker.test_forming import configs, now_st, pools

    hashed = hashlib.sha256()
    seen = [0]

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(cfg=configs(), pool=pools(max_tickets=12), now=now_st)
    def record(cfg, pool, now):
        hashed.update(repr((cfg, _canonical(pool), now, form_matches(pool, cfg, now))).encode())
        seen[0] += 1

    record()
    return {f"hypothesis/{seen[0]} examples": hashed.hexdigest()[:16]}


def main(argv: list[str]) -> None:
    cases = {**hypothesis_cases(), **bench_cases()}
    for name, digest in cases.items():
        print(f"{digest}  {name}")
    overall = _digest(sorted(cases.items()))
    print(f"{overall}  overall")
    if argv[:1] == ["--save"]:
        with open(argv[1], "w") as file:
            json.dump(cases, file, indent=1)
    elif argv[:1] == ["--check"]:
        with open(argv[1]) as file:
            saved = json.load(file)
        differ = [name for name in saved.keys() | cases.keys() if saved.get(name) != cases.get(name)]
        print("identical" if not differ else f"DIFFERENT: {sorted(differ)}")
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main(sys.argv[1:])
