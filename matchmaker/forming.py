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
import operator
from operator import itemgetter
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from itertools import chain, compress, count, islice

import attrs

from matchmaker.tickets import QueueConfig, Ticket, check_pool, preference_order

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
    check_pool(pool, config, now)
    collecting = gc.isenabled()
    gc.disable()  # see "Cost" in the module docstring
    try:
        return _Pass(list(pool), config, now).run()
    finally:
        if collecting:
            gc.enable()


class _Pass:
    """One forming pass. Tickets are numbered by fairness rank: a lower number is older."""

    def __init__(self, pool: list[Ticket], config: QueueConfig, now: float) -> None:
        # Each ticket is read once, in the caller's order (memory order), into plain lists in
        # fairness order; the search touches only those. `+ 0` makes fresh numbers that lie side
        # by side in memory: the tickets' own are scattered over the heap, and sorting or walking
        # through them costs a cache miss at nearly every step. It keeps every value and type
        # (only -0.0 becomes 0.0, which compares and computes the same here).
        ticket_count = len(pool)
        created = [ticket.created_at + 0 for ticket in pool]
        order = sorted(range(ticket_count), key=created.__getitem__)
        in_fairness_order = _picker(order)  # pool -> fairness order, in one C call per list
        in_order = in_fairness_order(created)
        if any(map(operator.eq, in_order, islice(in_order, 1, None))):  # ties: by ticket id
            order = sorted(range(ticket_count), key=[ticket.ticket_id for ticket in pool].__getitem__)
            order.sort(key=created.__getitem__)
            in_fairness_order = _picker(order)
        waits = [now - at if at < now else 0.0 for at in created]  # max(0, now - created_at)
        parties = [ticket.players for ticket in pool]
        sizes = list(map(len, parties))
        if config.skill is None:
            skills = [0.0] * ticket_count
        else:
            skills = [skill + 0 for skill in config.skill.skills_of(pool)]
        too_large = config.max_party_size
        if config.region is None:
            options: list[list] = [[] if size > too_large else [None] for size in sizes]
        else:
            options = config.region.region_sets(pool, waits)
            if ticket_count and max(sizes) > too_large:
                for index, size in enumerate(sizes):
                    if size > too_large:
                        options[index] = []  # never a candidate: it expires when its turn as a seed comes
        self.config = config
        self.pool = pool
        self.order = order  # fairness number -> position in the pool
        self.waits = in_fairness_order(waits)
        self.sizes = in_fairness_order(sizes)
        self.skills = in_fairness_order(skills)
        # The regions each ticket accepts, as a code: tickets with the same list share one (the
        # lists repeat, so the codes are few). A code is a small int: no object to fetch per ticket.
        code_of: defaultdict[tuple[str | None, ...], int] = defaultdict(count().__next__)  # a new list: the next code
        pool_codes = list(map(code_of.__getitem__, map(tuple, options)))
        self.region_lists = list(code_of)  # code -> the regions
        self.region_codes = in_fairness_order(pool_codes)  # by fairness number
        self.ids = in_fairness_order([ticket.ticket_id for ticket in pool])
        self.parties = in_fairness_order(parties)  # a match reads these, not the tickets
        self.player_waits = list(map(operator.mul, self.waits, self.sizes))  # summed for a mean wait
        self.taken = bytearray(ticket_count)  # matched, expired, or out (a seed that found no group)
        self.teams = config.team_count
        self.full = config.players.max
        self.max_wait_s = config.max_wait_s
        # match_sizes(wait) is the same tuple for every wait from max_wait_s on: made once, not per seed
        self.overdue_sizes = config.match_sizes(config.max_wait_s)
        self.width = _no_skill_window if config.skill is None else config.skill.width
        largest = max(sizes, default=1)
        self.kinds = max(1, min(largest, too_large))  # party sizes 1..kinds
        self.unit = [tuple(int(k == size - 1) for k in range(self.kinds)) for size in range(self.kinds + 1)]
        self.buckets = self._bucket_by_region()

    def _bucket_by_region(self) -> dict[str | None, _Bucket]:
        """Per region, the tickets that accept it by skill (ties: the older first)."""
        skills = self.skills
        by_skill = sorted(range(len(skills)), key=skills.__getitem__)  # stable: ties stay oldest first
        # Fresh numbers made in skill order lie side by side in memory, as a search walks them.
        in_skill_order = _picker(by_skill)
        ranked = [skill + 0 for skill in in_skill_order(skills)]
        by_skill = [index + 0 for index in by_skill]
        region_lists = self.region_lists
        regions = dict.fromkeys(chain.from_iterable(region_lists))  # every region, in a fixed order
        codes_by_skill = in_skill_order(self.region_codes)
        if len(region_lists) > 256 or len(regions) > _MASKED_REGIONS_MAX:
            return self._bucket_one_by_one(by_skill, ranked, codes_by_skill)
        skill_codes = bytes(codes_by_skill)  # one byte per ticket
        buckets = {}
        for region in regions:
            # a mask over the tickets in skill order (C loops, no Python step per ticket)
            accepts = bytes([region in listed for listed in region_lists]).ljust(256, b"\0")  # by code
            chosen = skill_codes.translate(accepts)
            buckets[region] = _Bucket(list(compress(ranked, chosen)), list(compress(by_skill, chosen)))
        return buckets

    def _bucket_one_by_one(self, by_skill: list[int], ranked: list[float], codes_by_skill: list[int],
                           ) -> dict[str | None, _Bucket]:
        """The same buckets, ticket by ticket: cheaper than a mask per region when regions are many."""
        buckets = _Buckets()
        for index, skill, regions in zip(by_skill, ranked, map(self.region_lists.__getitem__, codes_by_skill)):
            for region in regions:
                add_skill, add_index = buckets.adders[region]
                add_skill(skill)
                add_index(index)
        return buckets

    def _compact(self) -> None:
        """Drop taken tickets from every bucket (done each time half of the free ones are taken)."""
        taken = self.taken
        for bucket in self.buckets.values():
            free = bytes(_picker(bucket.indexes)(taken)).translate(_FLIP)
            bucket.indexes = list(compress(bucket.indexes, free))
            bucket.skills = list(compress(bucket.skills, free))

    def run(self) -> FormingResult:
        config, taken, sizes, waits = self.config, self.taken, self.sizes, self.waits
        max_party_size, max_wait_s = config.max_party_size, config.max_wait_s
        matches: list[FormedMatch] = []
        expired: list[tuple[str, str]] = []
        remaining: list[str] = []
        free = len(taken)
        compact_at = free // 4
        for seed in _free_in_order(taken):
            if free <= compact_at:
                self._compact()
                compact_at = free // 4
            taken[seed] = 1
            free -= 1
            if sizes[seed] > max_party_size:
                expired.append((self.ids[seed], EXPIRED_PARTY_TOO_LARGE))
                continue
            found = self._find(seed)
            if found is not None:
                group, region, players = found
                for index in group:
                    taken[index] = 1
                free -= len(group) - 1
                matches.append(self._match(group, region, players))
            elif waits[seed] >= max_wait_s:
                expired.append((self.ids[seed], EXPIRED_MAX_WAIT))
            else:
                remaining.append(self.ids[seed])
        return FormingResult(matches=matches, expired=expired, remaining=remaining)

    # -- search -----------------------------------------------------------------------------

    def _find(self, seed: int) -> tuple[list[int], str | None, int] | None:
        wait = self.waits[seed]
        width = self.width(wait)
        regions = self.region_lists[self.region_codes[seed]]
        if len(regions) > 1:
            regions = preference_order(self.pool[self.order[seed]], regions)
        full = self.full
        for players in (full,) if wait < self.max_wait_s else self.overdue_sizes:
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
        taken, sizes, teams, inf = self.taken, self.sizes, self.teams, math.inf
        skill = self.skills[seed]
        need = players - sizes[seed]
        if need == 0:
            return [seed]
        chosen = self.unit[sizes[seed]]
        counts = [0] * self.kinds
        gathered: list[int] = []
        low = high = skill
        got = 0
        # The nearest free candidate on each side and its distance (inf: that side is used up).
        # Only the side just taken from moves on.
        end = len(indexes)
        right = bisect_left(skills_sorted, skill)
        left = right - 1
        while left >= 0 and taken[indexes[left]]:
            left -= 1
        while right < end and taken[indexes[right]]:
            right += 1
        to_left = skill - skills_sorted[left] if left >= 0 else inf
        to_right = skills_sorted[right] - skill if right < end else inf
        while True:
            # the nearer side; on a tie the older ticket (with both used up, both are inf)
            if to_left < to_right or (to_left == to_right != inf and indexes[left] < indexes[right]):
                value = skills_sorted[left]
                if high - value > width:
                    return _UNKNOWN
                low = value
                index = indexes[left]
                left -= 1
                while left >= 0 and taken[indexes[left]]:
                    left -= 1
                to_left = skill - skills_sorted[left] if left >= 0 else inf
            elif to_right != inf:
                value = skills_sorted[right]
                if value - low > width:
                    return _UNKNOWN
                high = value
                index = indexes[right]
                right += 1
                while right < end and taken[indexes[right]]:
                    right += 1
                to_right = skills_sorted[right] - skill if right < end else inf
            else:
                return None  # every candidate fits the window and they are not enough
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
        members = itemgetter(*group) if len(group) > 1 else _picker(group)
        parties, skills = members(self.parties), members(self.skills)
        if self.teams == 1:
            teams = team_skill = ()
        else:
            teams, team_skill = self._teams(group, parties, players)
        # positional arguments, in field order: a keyword costs more than the rest of the call here
        quality = MatchQuality(
            max(skills) - min(skills),  # skill_spread
            self.waits[group[0]],  # max_wait_s: the oldest's
            sum(members(self.player_waits)) / players,  # mean_wait_s
            team_skill)
        return FormedMatch(
            members(self.ids),  # ticket_ids
            tuple(chain.from_iterable(parties)),  # players
            teams, region, players < self.full, quality)  # teams, region, short, quality

    def _teams(self, group: list[int], parties: tuple[tuple[str, ...], ...], players: int,
               ) -> tuple[tuple[tuple[str, ...], ...], tuple[float, ...]]:
        """Each team's players (its parties in fairness order) and the teams' skill sums.

        Parties by (size, skill) descending go, one by one, to the team with the lowest skill sum
        that has room and still lets the remaining parties fill every team exactly."""
        skills, sizes = self.skills, self.sizes
        placing = sorted(group, key=skills.__getitem__, reverse=True)  # stable: ties stay oldest first
        placing.sort(key=sizes.__getitem__, reverse=True)  # so: by size, then skill, descending
        team_size = players // self.teams
        if self.teams == 2:
            placed = self._place_in_two(placing, team_size)
        else:
            placed = self._place_greedy(placing, team_size)
        team_of, sums = placed or self._place_looking_ahead(placing, team_size)
        if len(sums) == 2:  # the common case, unrolled
            first: list[str] = []
            second: list[str] = []
            for team, party in zip(map(team_of.__getitem__, group), parties):
                if team:
                    second += party
                else:
                    first += party
            return (tuple(first), tuple(second)), tuple(sums)
        per_team: list[list[str]] = [[] for _ in sums]
        for team, party in zip(map(team_of.__getitem__, group), parties):
            per_team[team] += party
        return tuple(map(tuple, per_team)), tuple(sums)

    def _place_in_two(self, parties: list[int], team_size: int) -> tuple[dict[int, int], list[float]] | None:
        """`_place_greedy` for two teams, unrolled (the common case)."""
        skills, sizes = self.skills, self.sizes
        room_0 = room_1 = team_size
        total_0 = total_1 = 0.0
        team_of = {}
        for index in parties:
            size = sizes[index]
            if room_1 >= size and (room_0 < size or total_1 < total_0):
                room_1 -= size
                total_1 += skills[index] * size
                team_of[index] = 1
            elif room_0 >= size:
                room_0 -= size
                total_0 += skills[index] * size
                team_of[index] = 0
            else:
                return None
        return team_of, [total_0, total_1]

    def _place_greedy(self, parties: list[int], team_size: int) -> tuple[dict[int, int], list[float]] | None:
        """Each party to the team with the lowest skill sum that has room (ties: the lowest
        number); None when stuck. `_place_looking_ahead` makes the same choices whenever this
        succeeds."""
        skills, sizes, count = self.skills, self.sizes, self.teams
        room = [team_size] * count
        total = [0.0] * count
        team_of = {}
        for index in parties:
            size = sizes[index]
            team = -1
            for other in range(count):
                if room[other] >= size and (team < 0 or total[other] < total[team]):
                    team = other
            if team < 0:
                return None
            room[team] -= size
            total[team] += skills[index] * size
            team_of[index] = team
        return team_of, total

    def _place_looking_ahead(self, parties: list[int], team_size: int) -> tuple[dict[int, int], list[float]]:
        """Each party to the team with the lowest skill sum that has room and still lets the
        remaining parties fill every team exactly (slower; it never gets stuck)."""
        skills, sizes, count = self.skills, self.sizes, self.teams
        room = [team_size] * count
        total = [0.0] * count
        team_of = {}
        left = [0] * self.kinds
        for index in parties:
            left[sizes[index] - 1] += 1
        for index in parties:
            size = sizes[index]
            left[size - 1] -= 1
            rest = tuple(left)
            team = -1
            for other in sorted(range(count), key=total.__getitem__):  # stable: ties by number
                if room[other] >= size:
                    room[other] -= size
                    fits = _fill_teams(rest, tuple(sorted(room, reverse=True)))
                    room[other] += size
                    if fits:
                        team = other
                        break
            if team < 0:  # pragma: no cover
                raise AssertionError("a packable group could not be packed")
            room[team] -= size
            team_of[index] = team
            total[team] += skills[index] * size
        return team_of, total


_UNKNOWN = object()


def _picker(numbers: Sequence[int]) -> Callable[[Sequence], tuple]:
    """A function that takes the values at `numbers` from a sequence, as a tuple, in one C call
    (cheaper than a map of __getitem__; itemgetter alone gives a bare value for a single number)."""
    if len(numbers) > 1:
        return itemgetter(*numbers)
    if numbers:
        number = numbers[0]
        return lambda values: (values[number],)
    return lambda values: ()


def _free_in_order(taken: bytearray) -> Iterator[int]:
    """The numbers of the tickets not taken, ascending, as `taken` changes (a C scan skips the rest)."""
    seed = taken.find(0)
    while seed >= 0:
        yield seed
        seed = taken.find(0, seed + 1)


def _no_skill_window(_wait_s: float) -> float:
    return math.inf


# Up to this many regions, a bucket is cut from the skill order by a mask (a C loop over every
# ticket per region); beyond, one Python loop over the tickets is cheaper.
_MASKED_REGIONS_MAX = 16

_FLIP = bytes.maketrans(b"\0\1", b"\1\0")  # taken flags -> free flags


class _Buckets(dict):
    """Region -> _Bucket, made on first use; `adders[region]`: its two lists' append methods."""

    def __init__(self) -> None:
        super().__init__()
        self.adders = _Adders(self)


class _Adders(dict):
    def __init__(self, buckets: _Buckets) -> None:
        super().__init__()
        self.buckets = buckets

    def __missing__(self, region: str | None):
        bucket = self.buckets[region] = _Bucket([], [])
        adders = self[region] = (bucket.skills.append, bucket.indexes.append)
        return adders


class _Bucket:
    """The tickets that accept one region, by skill; taken ones are skipped, then dropped in bulk.
    Arrays (compact in memory: a walk reads no scattered objects), or lists for exotic skills."""

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
