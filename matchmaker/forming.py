"""Match forming: a pure function of the queued tickets, the queue's configuration and the time.

`form_matches(pool, config, now)` never reads the clock, never changes its inputs, and gives the
same result (order included) for the same pool in any order. The rules are defined in
matchmaker/tickets.py; this module searches for groups that satisfy them.

The pass
1. Fairness order: tickets sorted by (created_at, ticket_id), the longest-waiting first.
2. Each ticket in that order that is still free seeds a search (like PlayFab, the longest-waiting
   ticket seeds the next match). The seed is the oldest ticket of any group it can form, so the
   group's skill window is the seed's window and the allowed match sizes are the seed's.
3. The seed's accepted regions are tried in its order (lowest latency, then name); within one
   region, the match sizes largest first (a short match only when nothing full exists in any region).
   Candidates are the free tickets that accept the region, kept per region sorted by skill, so a
   search starts with a bisect at the seed's skill and walks outwards, skipping taken tickets.
   - Near search: take the nearest candidate in skill (ties: the older) while the group's spread
     stays within the window; stop as soon as the gathered parties can make a valid match.
   - Exact search, when the near search hits the window edge first: for each side of the seed
     and each party size k, only the nearest `(size - seed's size) // k` candidates can matter
     (a farther one can always be swapped for a nearer one); every window [lo, lo + width] that
     holds the seed is then checked. This finds a group whenever one exists.
   The group is chosen nearest-first: a candidate is kept when a valid match can still be
   completed with it (an exact check over party-size counts, memoised).
4. A seed that finds no group is out for the rest of the pass: the pool only shrinks during a pass
   and the seed would be the oldest of any group holding it, so no later seed can take it. It
   expires ("max_wait") if it has waited `config.max_wait_s`, else it remains.
   Hence: a ticket is left over only if no compatible group of left-over tickets contains it.
5. Teams: parties sorted by (size, skill) descending go, one by one, to the team with the lowest
   skill sum that has room, provided the other parties can still fill the teams exactly. A team's
   skill sum counts a party's skill once per member.

Quality per match: the skill spread (max - min), the maximum and the mean wait (mean over
players), and the teams' skill sums.

Cost: O(N log N) to sort and bucket the pool, then per match a bisect and a walk over about as
many candidates as the match needs (taken tickets are skipped, and dropped from the buckets each
time half of the free tickets are gone). The pass makes no reference cycles, so the cyclic garbage
collector is paused while it runs (and restored after): with 100,000 tickets a collection that
walks the whole pool would otherwise cost a third of the pass. tools/bench_forming.py measures it.
"""

from __future__ import annotations

import functools
import gc
import math
from bisect import bisect_left
from collections.abc import Sequence
from itertools import filterfalse

import attrs

from matchmaker.tickets import QueueConfig, Ticket, preference_order

EXPIRED_MAX_WAIT = "max_wait"
EXPIRED_PARTY_TOO_LARGE = "party_too_large"


@attrs.frozen
class MatchQuality:
    skill_spread: float
    max_wait_s: float
    mean_wait_s: float
    team_skill: tuple[float, ...]


@attrs.frozen
class FormedMatch:
    ticket_ids: tuple[str, ...]  # fairness order: the seed first
    players: tuple[str, ...]
    teams: tuple[tuple[str, ...], ...]  # player ids per team; () when the queue has no teams
    region: str | None  # None when the queue has no region rule
    short: bool  # started with fewer than players.max (start_short)
    quality: MatchQuality


@attrs.frozen
class FormingResult:
    matches: list[FormedMatch]
    expired: list[tuple[str, str]]  # (ticket_id, reason), fairness order
    remaining: list[str]  # ticket ids still queued, fairness order


def form_matches(pool: Sequence[Ticket], config: QueueConfig, now: float) -> FormingResult:
    """Form as many matches as the rules allow at `now`; see the module docstring."""
    _check_inputs(pool, config, now)
    collecting = gc.isenabled()
    gc.disable()  # see "Cost" in the module docstring
    try:
        return _Pass(list(pool), config, now).run()
    finally:
        if collecting:
            gc.enable()


def _check_inputs(pool: Sequence[Ticket], config: QueueConfig, now: float) -> None:
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise ValueError(f"now must be a finite number, got {now!r}")
    if not all(type(ticket) is Ticket for ticket in pool):
        wrong = next(ticket for ticket in pool if not isinstance(ticket, Ticket))
        raise TypeError(f"the pool holds Tickets, got {type(wrong).__name__}")
    queue = config.queue
    for ticket in pool:
        if ticket.queue != queue:
            raise ValueError(f"ticket {ticket.ticket_id!r} is for queue {ticket.queue!r}, not {queue!r}")
    _check_unique("ticket", [ticket.ticket_id for ticket in pool], "appears twice")
    _check_unique("player", [player for ticket in pool for player in ticket.players], "is in two tickets")


def _check_unique(what: str, ids: list[str], problem: str) -> None:
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(item for item in ids if item in seen or seen.add(item))  # type: ignore[func-returns-value]
        raise ValueError(f"{what} {duplicate!r} {problem}")


class _Pass:
    """One forming pass. Tickets are numbered by fairness rank: a lower number is older."""

    def __init__(self, pool: list[Ticket], config: QueueConfig, now: float) -> None:
        # Read the tickets in the caller's order (memory order, kind to caches), then renumber.
        created = [ticket.created_at for ticket in pool]
        if len(set(created)) == len(created):
            order = sorted(range(len(pool)), key=created.__getitem__)
        else:  # ties: by ticket id, then (stable) by created_at
            order = sorted(range(len(pool)), key=[ticket.ticket_id for ticket in pool].__getitem__)
            order.sort(key=created.__getitem__)
        waits = [max(0.0, now - at) for at in created]
        sizes = [len(ticket.players) for ticket in pool]
        skills = [0.0] * len(pool) if config.skill is None else config.skill.skills_of(pool)
        too_large = config.max_party_size
        if config.region is None:
            options: list[list] = [[] if size > too_large else [None] for size in sizes]
        else:
            options = config.region.region_sets(pool, waits)
            for index, size in enumerate(sizes):
                if size > too_large:
                    options[index] = []  # never a candidate: it expires when its turn as a seed comes
        self.config = config
        self.tickets = list(map(pool.__getitem__, order))
        self.waits = list(map(waits.__getitem__, order))
        self.sizes = list(map(sizes.__getitem__, order))
        self.skills = list(map(skills.__getitem__, order))
        self.options = list(map(options.__getitem__, order))
        self.taken = bytearray(len(pool))  # matched, expired, or out (a seed that found no group)
        self.teams = config.team_count
        largest = max(sizes, default=1)
        self.kinds = max(1, min(largest, too_large))  # party sizes 1..kinds
        self.unit = [tuple(int(k == size - 1) for k in range(self.kinds)) for size in range(self.kinds + 1)]
        self.buckets = self._bucket_by_region()

    def _bucket_by_region(self) -> dict[str | None, _Bucket]:
        skills, options = self.skills, self.options
        by_skill = sorted(range(len(skills)), key=skills.__getitem__)  # stable: ties stay oldest first
        members: dict[str | None, list[int]] = {region: [] for region in set().union(*options)}
        for index in by_skill:
            for region in options[index]:
                members[region].append(index)
        return {region: _Bucket(list(map(skills.__getitem__, indexes)), indexes)
                for region, indexes in members.items()}

    def _compact(self) -> None:
        """Drop taken tickets from every bucket (done each time half of the free ones are taken)."""
        taken, skills = self.taken, self.skills
        for bucket in self.buckets.values():
            bucket.indexes = list(filterfalse(taken.__getitem__, bucket.indexes))
            bucket.skills = list(map(skills.__getitem__, bucket.indexes))

    def run(self) -> FormingResult:
        config, taken = self.config, self.taken
        matches: list[FormedMatch] = []
        expired: list[tuple[str, str]] = []
        remaining: list[str] = []
        free = len(self.tickets)
        compact_at = free // 2
        for seed in range(len(self.tickets)):
            if taken[seed]:
                continue
            if free <= compact_at:
                self._compact()
                compact_at = free // 2
            taken[seed] = 1
            free -= 1
            if self.sizes[seed] > config.max_party_size:
                expired.append((self.tickets[seed].ticket_id, EXPIRED_PARTY_TOO_LARGE))
                continue
            found = self._find(seed)
            if found is not None:
                group, region, players = found
                for index in group:
                    taken[index] = 1
                free -= len(group) - 1
                matches.append(self._match(group, region, players))
            elif self.waits[seed] >= config.max_wait_s:
                expired.append((self.tickets[seed].ticket_id, EXPIRED_MAX_WAIT))
            else:
                remaining.append(self.tickets[seed].ticket_id)
        return FormingResult(matches=matches, expired=expired, remaining=remaining)

    # -- search -----------------------------------------------------------------------------

    def _find(self, seed: int) -> tuple[list[int], str | None, int] | None:
        config = self.config
        wait = self.waits[seed]
        width = math.inf if config.skill is None else config.skill.width(wait)
        regions = self.options[seed]
        if len(regions) > 1:
            regions = preference_order(self.tickets[seed], regions)
        full = config.players.max
        for players in (full,) if wait < config.max_wait_s else config.match_sizes(wait):
            if self.sizes[seed] > players // self.teams:
                continue
            for region in regions:
                bucket = self.buckets[region]
                group = self._near(seed, bucket, width, players) if players == full else _UNKNOWN
                if group is _UNKNOWN:
                    group = self._exact(seed, bucket, width, players)
                if group is not None and group is not _UNKNOWN:
                    return group, region, players
        return None

    def _near(self, seed: int, bucket: _Bucket, width: float, players: int):
        """Nearest-first: a group, None (no group in this bucket), or _UNKNOWN (window edge hit)."""
        skills_sorted, indexes = bucket.skills, bucket.indexes
        taken, sizes, teams = self.taken, self.sizes, self.teams
        skill = self.skills[seed]
        need = players - sizes[seed]
        if need == 0:
            return [seed]
        chosen = self.unit[sizes[seed]]
        counts = [0] * self.kinds
        gathered: list[int] = []
        low = high = skill
        got = 0
        end = len(indexes)
        right = bisect_left(skills_sorted, skill)
        left = right - 1
        while True:
            while left >= 0 and taken[indexes[left]]:
                left -= 1
            while right < end and taken[indexes[right]]:
                right += 1
            if left >= 0 and right < end:
                to_left = skill - skills_sorted[left]
                to_right = skills_sorted[right] - skill
                go_left = to_left < to_right or (to_left == to_right and indexes[left] < indexes[right])
            elif left >= 0:
                go_left = True
            elif right < end:
                go_left = False
            else:
                return None  # every candidate fits the window and they are not enough
            if go_left:
                value = skills_sorted[left]
                if high - value > width:
                    return _UNKNOWN
                low = value
                index = indexes[left]
                left -= 1
            else:
                value = skills_sorted[right]
                if value - low > width:
                    return _UNKNOWN
                high = value
                index = indexes[right]
                right += 1
            gathered.append(index)
            size = sizes[index]
            counts[size - 1] += 1
            got += size
            if got >= need and _completable(chosen, tuple(counts), players, teams):
                break
        if got == need:
            return [seed, *gathered]
        return self._select(seed, gathered, counts, players)

    def _exact(self, seed: int, bucket: _Bucket, width: float, players: int) -> list[int] | None:
        """Every window [lo, lo + width] holding the seed, over the candidates that can matter."""
        skills_sorted, indexes = bucket.skills, bucket.indexes
        skills, sizes = self.skills, self.sizes
        skill, own = skills[seed], sizes[seed]
        quota = [(players - own) // size for size in range(1, self.kinds + 1)]
        start = bisect_left(skills_sorted, skill)
        below = self._nearest(indexes, range(start - 1, -1, -1),
                              lambda position: skill - skills_sorted[position] <= width, quota)
        above = self._nearest(indexes, range(start, len(indexes)),
                              lambda position: skills_sorted[position] - skill <= width, quota)
        chosen = self.unit[own]
        below_counts = [0] * self.kinds
        above_counts = [0] * self.kinds
        for index in above:
            above_counts[sizes[index] - 1] += 1
        in_above = len(above)
        for in_below in range(len(below) + 1):
            low = skill
            if in_below:
                newest = below[in_below - 1]
                below_counts[sizes[newest] - 1] += 1
                low = skills[newest]
            while in_above and skills[above[in_above - 1]] - low > width:
                in_above -= 1
                above_counts[sizes[above[in_above]] - 1] -= 1
            counts = [b + a for b, a in zip(below_counts, above_counts)]
            if _completable(chosen, tuple(counts), players, self.teams):
                window = sorted(below[:in_below] + above[:in_above],
                                key=lambda index: (abs(skills[index] - skill), index))
                return self._select(seed, window, counts, players)
        return None

    def _nearest(self, indexes: list[int], positions: range, within, quota: list[int]) -> list[int]:
        """Free candidates walking `positions` while `within`, at most quota[k] of party size k + 1.

        Once the solos' quota is full, farther tickets cannot matter: a farther party of k players
        in a group can be swapped for k of those solos (the group uses at most quota[0] - k of them),
        which keeps the size and lets the teams be filled the same way."""
        taken, sizes = self.taken, self.sizes
        counts = [0] * len(quota)
        wanted = sum(1 for limit in quota if limit)
        found: list[int] = []
        for position in positions:
            if not wanted or (quota[0] and counts[0] == quota[0]) or not within(position):
                break
            index = indexes[position]
            if taken[index]:
                continue
            kind = sizes[index] - 1
            if kind < len(quota) and counts[kind] < quota[kind]:
                counts[kind] += 1
                found.append(index)
                if counts[kind] == quota[kind]:
                    wanted -= 1
        return found

    def _select(self, seed: int, candidates: list[int], counts: list[int], players: int) -> list[int]:
        """Keep each candidate (in order) when a valid match can still be completed with it."""
        sizes, teams = self.sizes, self.teams
        chosen = list(self.unit[sizes[seed]])
        available = list(counts)
        group = [seed]
        got = sizes[seed]
        if got == players:
            return group
        for index in candidates:
            kind = sizes[index] - 1
            available[kind] -= 1
            chosen[kind] += 1
            if _completable(tuple(chosen), tuple(available), players, teams):
                group.append(index)
                got += kind + 1
                if got == players:
                    return group
            else:
                chosen[kind] -= 1
        raise AssertionError("a completable group was not completed")  # pragma: no cover

    # -- result -----------------------------------------------------------------------------

    def _match(self, group: list[int], region: str | None, players: int) -> FormedMatch:
        group.sort()  # fairness order: the seed first
        skills, sizes, waits = self.skills, self.sizes, self.waits
        members = [self.tickets[index] for index in group]
        player_ids: list[str] = []
        for ticket in members:
            player_ids += ticket.players
        member_skills = [skills[index] for index in group]
        teams: tuple[tuple[str, ...], ...] = ()
        team_skill: tuple[float, ...] = ()
        if self.config.teams is not None:
            assignment, sums = self._assign_teams(group, players)
            teams = tuple(self._players_of(team) for team in assignment)
            team_skill = tuple(sums)
        return FormedMatch(
            ticket_ids=tuple([ticket.ticket_id for ticket in members]),
            players=tuple(player_ids),
            teams=teams,
            region=region,
            short=players < self.config.players.max,
            quality=MatchQuality(
                skill_spread=max(member_skills) - min(member_skills),
                max_wait_s=waits[group[0]],  # the oldest
                mean_wait_s=sum([waits[index] * sizes[index] for index in group]) / players,
                team_skill=team_skill,
            ),
        )

    def _players_of(self, team: list[int]) -> tuple[str, ...]:
        team.sort()
        tickets = self.tickets
        player_ids: list[str] = []
        for index in team:
            player_ids += tickets[index].players
        return tuple(player_ids)

    def _assign_teams(self, group: list[int], players: int) -> tuple[list[list[int]], list[float]]:
        """Parties by (size, skill) descending, each to the team with the lowest skill sum that has
        room and still lets the remaining parties fill every team exactly."""
        skills, sizes = self.skills, self.sizes
        parties = sorted(group, key=skills.__getitem__, reverse=True)  # stable: ties stay oldest first
        parties.sort(key=sizes.__getitem__, reverse=True)  # so: by size, then skill, descending
        placed = self._place(parties, players // self.teams, look_ahead=False)
        return placed if placed is not None else self._place(parties, players // self.teams, look_ahead=True)

    def _place(self, parties: list[int], team_size: int, look_ahead: bool):
        """Without look-ahead, None when the greedy gets stuck; with it (slower), it never does.
        Both make the same choices whenever the greedy succeeds."""
        skills, sizes, count = self.skills, self.sizes, self.teams
        room = [team_size] * count
        total = [0.0] * count
        teams: list[list[int]] = [[] for _ in range(count)]
        left = [0] * self.kinds
        for index in parties:
            left[sizes[index] - 1] += 1
        for index in parties:
            size = sizes[index]
            left[size - 1] -= 1
            team = -1
            if look_ahead:
                rest = tuple(left)
                for other in sorted(range(count), key=total.__getitem__):  # stable: ties by number
                    if room[other] >= size:
                        room[other] -= size
                        fits = _fill_teams(rest, tuple(sorted(room, reverse=True)))
                        room[other] += size
                        if fits:
                            team = other
                            break
            else:
                for other in range(count):
                    if room[other] >= size and (team < 0 or total[other] < total[team]):
                        team = other
            if team < 0:
                if look_ahead:  # pragma: no cover
                    raise AssertionError("a packable group could not be packed")
                return None
            room[team] -= size
            teams[team].append(index)
            total[team] += skills[index] * size
        return teams, total


_UNKNOWN = object()


class _Bucket:
    """The tickets that accept one region, by skill; taken ones are skipped, then dropped in bulk."""

    __slots__ = ("indexes", "skills")

    def __init__(self, skills: list[float], indexes: list[int]) -> None:
        self.skills = skills
        self.indexes = indexes


@functools.lru_cache(maxsize=1 << 16)
def _completable(chosen: tuple[int, ...], available: tuple[int, ...], players: int, teams: int) -> bool:
    """Can parties from `available` (counts by size 1..k) complete `chosen` into a valid match:
    exactly `players` players that fill `teams` teams of `players // teams` exactly?"""
    need = players - sum((kind + 1) * count for kind, count in enumerate(chosen))
    if need < 0:
        return False
    team_size = players // teams
    extra = [0] * len(available)

    def fill(kind: int, need: int) -> bool:
        if kind == 0:  # solos: exactly `need` of them
            if need > available[0]:
                return False
            extra[0] = need
            if teams == 1:
                return True
            return _fill_teams(tuple(c + e for c, e in zip(chosen, extra)), (team_size,) * teams)
        size = kind + 1
        for count in range(min(available[kind], need // size), -1, -1):
            extra[kind] = count
            if fill(kind - 1, need - count * size):
                return True
        extra[kind] = 0
        return False

    return fill(len(available) - 1, need)


@functools.lru_cache(maxsize=1 << 16)
def _fill_teams(counts: tuple[int, ...], room: tuple[int, ...]) -> bool:
    """Can parties (counts by size 1..k) fill teams with this room left (descending) exactly?"""
    largest = len(counts) - 1
    while largest >= 0 and not counts[largest]:
        largest -= 1
    if largest <= 0:  # solos (or nothing) left: they fill any room
        return sum(room) == (counts[0] if counts else 0)
    size = largest + 1
    rest = counts[:largest] + (counts[largest] - 1,) + counts[largest + 1:]
    tried = set()
    for position, space in enumerate(room):
        if space >= size and space not in tried:
            tried.add(space)
            after = sorted(room[:position] + (space - size,) + room[position + 1:], reverse=True)
            if _fill_teams(rest, tuple(after)):
                return True
    return False
