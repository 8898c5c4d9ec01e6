"""Backfill: queued tickets into running matches that have open seats; a pure function.

`fill_backfills(pool, requests, config, now)` never reads the clock, never changes its inputs, and
gives the same result for the same pool and the same requests in any order. It refuses what
`form_matches` refuses (`check_pool` in matchmaker/tickets.py), a request of another queue, a match
id twice, and `team_open` with a length other than the queue's team count.

Rules
1. Requests are served one after the other, oldest first: by (created_at, match_id).
2. For a request, the tickets that no earlier request took are considered in fairness order,
   (created_at, ticket_id): the longest-waiting first. A ticket fits when
   - seats: its party is no larger than the seats the request still has open. With teams, a party
     is never split: it goes into the team with the most seats still open (ties: the lowest team
     number) and must fit there. A request without `team_open` in a queue with teams does not
     track its teams: a party then fits when it is no larger than the open seats and a team.
   - region: when the queue has a region rule and the request names its match's region, the
     ticket accepts that region after its wait (`RegionRule.region_set`);
   - skill: when the queue has a skill window and the request gives its match's skill,
     `abs(ticket's skill - request's skill) <= config.skill.width(ticket's wait)`.
   Every ticket that fits when its turn comes is taken, until the request is full or no ticket
   is left. A request may get fewer players than it asked for (a partial fill); one that gets
   none is not in `fills`.
3. Nothing else applies here: no minimum, no expiry (`form_matches`, run on what remains, does
   that).

A request's open seats only shrink while it is served, so a ticket that did not fit when its turn
came fits no later: a fitting older ticket is never passed over for a younger one, and no ticket
in `remaining` fits what any request had left open at its end.

The search. Going through the pool in order would cost O(pool) per request. Instead, the free
tickets sit in one index per (region, party size) - a region for each region that a request
names, and "any" for the requests without one - sorted by skill, with a segment tree that gives
the oldest free ticket in a skill range in O(log n). A request asks the index of each party size
that fits for its oldest ticket within reach of the request's skill; one outside its own window
is set aside for that question and the range shrinks to its window (no younger ticket has a wider
window). The oldest answer over the party sizes is the next ticket taken: the same one the walk in
fairness order would take. Cost: O(N log N) to sort the pool and build the indexes, then
O(log N) per question.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Sequence

import attrs

from matchmaker.tickets import (
    MAX_PLAYERS_PER_MATCH, QueueConfig, SkillWindow, Ticket, _finite_validator, _id_validator,
    check_pool, fairness_order)


def _open_seats(_instance: object, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PLAYERS_PER_MATCH:
        raise ValueError(f"{attribute.name} must be an integer from 1 to {MAX_PLAYERS_PER_MATCH}, got {value!r}")


@attrs.frozen
class BackfillRequest:
    """A running match that wants `open_seats` more players."""

    match_id: str = attrs.field(validator=_id_validator)
    queue: str = attrs.field(validator=_id_validator)
    open_seats: int = attrs.field(validator=_open_seats)  # players wanted
    created_at: float = attrs.field(validator=_finite_validator)  # older requests are served first
    region: str | None = attrs.field(  # the match's region (None: any)
        default=None, validator=attrs.validators.optional(_id_validator))
    skill: float | None = attrs.field(  # the mean skill of the match's players (None: any)
        default=None, validator=attrs.validators.optional(_finite_validator))
    team_open: tuple[int, ...] = attrs.field(default=(), converter=tuple)  # open seats per team

    @team_open.validator
    def _check_team_open(self, _attribute: attrs.Attribute, value: tuple[int, ...]) -> None:
        if not value:
            return
        if len(value) > MAX_PLAYERS_PER_MATCH or any(
                isinstance(seats, bool) or not isinstance(seats, int) or seats < 0 for seats in value):
            raise ValueError(f"team_open holds at most {MAX_PLAYERS_PER_MATCH} integers >= 0, got {value!r}")
        if sum(value) != self.open_seats:
            raise ValueError(f"team_open {value!r} must add up to open_seats ({self.open_seats})")


@attrs.frozen
class BackfillFill:
    match_id: str
    ticket_ids: tuple[str, ...]  # fairness order
    players: tuple[str, ...]
    teams: tuple[tuple[str, ...], ...]  # players added per team number; () when teams are not tracked


@attrs.frozen
class BackfillResult:
    fills: list[BackfillFill]  # in the order the requests were served
    remaining: list[str]  # ticket ids not used, fairness order


def fill_backfills(pool: Sequence[Ticket], requests: Sequence[BackfillRequest], config: QueueConfig,
                   now: float) -> BackfillResult:
    """Seat queued tickets in running matches; see the module docstring."""
    check_pool(pool, config, now)
    _check_requests(requests, config)
    served = sorted(requests, key=lambda request: (request.created_at, request.match_id))
    return _Backfill(list(pool), served, config, now).serve()


def _check_requests(requests: Sequence[BackfillRequest], config: QueueConfig) -> None:
    seen: set[str] = set()
    teams = config.teams
    for request in requests:
        if not isinstance(request, BackfillRequest):
            raise TypeError(f"requests are BackfillRequests, got {type(request).__name__}")
        if request.queue != config.queue:
            raise ValueError(f"backfill of {request.match_id!r} is for queue {request.queue!r}, "
                             f"not {config.queue!r}")
        if request.match_id in seen:
            raise ValueError(f"match {request.match_id!r} asks for backfill twice")
        seen.add(request.match_id)
        if request.team_open and (teams is None or len(request.team_open) != teams.count):
            raise ValueError(f"backfill of {request.match_id!r}: team_open has {len(request.team_open)} "
                             f"entries, the queue has {0 if teams is None else teams.count} teams")


_ANY = None  # the index key of requests without a region
_ROUNDING = 2.0 ** -40  # a skill range this much (relative) wider holds every fitting ticket
_FIRST_CHUNK = 1024  # tickets in the first chunk; each next one holds as many as all before it


class _Backfill:
    """One backfill pass. Tickets are numbered by fairness rank: a lower number is older."""

    def __init__(self, pool: list[Ticket], requests: list[BackfillRequest], config: QueueConfig,
                 now: float) -> None:
        self.pool = pool
        self.requests = requests  # in the order they are served
        self.config = config
        self.now = now
        self.order = fairness_order(pool)  # ticket number -> position in the pool
        self.empty = len(pool)  # "no ticket"
        self.keys = {self._key(request) for request in requests}  # the indexes' regions (_ANY: all)
        self.named = self.keys - {_ANY}
        self.largest = max(map(self._cap, requests), default=0)  # the largest party any request takes
        self.by_skill = config.skill is not None and any(request.skill is not None for request in requests)
        # Per ticket number, filled chunk by chunk:
        self.waits: list[float] = []
        self.sizes: list[int] = []
        self.skills: list[float] = []
        self.regions: list[list[str]] = []  # the regions each ticket accepts (when a request names one)
        self.chunks: list[_Chunk] = []
        self.taken = bytearray(len(pool))

    def serve(self) -> BackfillResult:
        fills = [fill for fill in map(self._serve_one, self.requests) if fill is not None]
        pool, order, taken = self.pool, self.order, self.taken
        remaining = [pool[order[ticket]].ticket_id for ticket in range(len(order)) if not taken[ticket]]
        return BackfillResult(fills=fills, remaining=remaining)

    def _key(self, request: BackfillRequest) -> str | None:
        return _ANY if self.config.region is None or request.region is None else request.region

    def _cap(self, request: BackfillRequest) -> int:
        """The largest party that could fit the request."""
        teams = self.config.teams
        if teams is None:
            return request.open_seats
        return max(request.team_open) if request.team_open else min(request.open_seats, teams.size)

    def _serve_one(self, request: BackfillRequest) -> BackfillFill | None:
        key = self._key(request)
        target = None if self.config.skill is None else request.skill
        seats = request.open_seats
        room = list(request.team_open)  # [] when teams are not tracked
        cap = self._cap(request)
        team_of: list[int] = []
        chosen: list[int] = []
        while seats:
            ticket = self._next_ticket(key, target, cap)
            if ticket == self.empty:
                break
            chosen.append(ticket)
            size = self.sizes[ticket]
            seats -= size
            if room:
                team = room.index(max(room))  # the most open seats, ties the lowest number
                room[team] -= size
                team_of.append(team)
                cap = max(room)
            else:
                cap = min(cap, seats)
            self._take(ticket)
        if not chosen:
            return None
        pool, order = self.pool, self.order
        tickets = [pool[order[ticket]] for ticket in chosen]
        players: list[str] = []
        for ticket in tickets:
            players += ticket.players
        teams: tuple[tuple[str, ...], ...] = ()
        if request.team_open:
            per_team: list[list[str]] = [[] for _ in request.team_open]
            for ticket, team in zip(tickets, team_of):
                per_team[team] += ticket.players
            teams = tuple(map(tuple, per_team))
        return BackfillFill(match_id=request.match_id, ticket_ids=tuple(ticket.ticket_id for ticket in tickets),
                            players=tuple(players), teams=teams)

    def _next_ticket(self, key: str | None, target: float | None, cap: int) -> int:
        """The oldest free ticket that fits (self.empty: none). The chunks are searched oldest
        first, and built only when the ones before cannot answer."""
        number = 0
        while True:
            if number == len(self.chunks) and not self._add_chunk():
                return self.empty
            indexes = self.chunks[number].indexes
            best = self.empty
            for size in range(1, cap + 1):
                index = indexes.get((key, size))
                if index is not None:
                    found = self._oldest_fitting(index, target)
                    if found < best:
                        best = found
            if best != self.empty:
                return best
            number += 1

    def _oldest_fitting(self, index: _Index, target: float | None) -> int:
        """The oldest free ticket of `index` whose skill window holds `target` (empty: none)."""
        if target is None:
            return index.nodes[1]
        window: SkillWindow = self.config.skill  # type: ignore[assignment]
        skills, waits, sorted_skills = self.skills, self.waits, index.skills
        low, high = 0, len(sorted_skills)
        set_aside = []
        while True:
            found = index.oldest(low, high)
            if found == index.empty:
                break
            width = window.width(waits[found])
            if abs(skills[found] - target) <= width:
                break
            index.set(found, index.empty)  # for this question only
            set_aside.append(found)
            reach = width + (abs(target) + width) * _ROUNDING
            low = bisect_left(sorted_skills, target - reach, low, high)
            high = bisect_right(sorted_skills, target + reach, low, high)
        for other in set_aside:
            index.set(other, other)
        return found

    def _add_chunk(self) -> bool:
        """Index the next tickets in fairness order (False: there are none)."""
        start = self.chunks[-1].end if self.chunks else 0
        end = min(len(self.order), max(_FIRST_CHUNK, 2 * start))
        if start >= end:
            return False
        config, pool = self.config, self.pool
        tickets = [pool[position] for position in self.order[start:end]]
        waits = [ticket.wait_s(self.now) for ticket in tickets]
        self.waits += waits
        self.sizes += [len(ticket.players) for ticket in tickets]
        self.skills += [0.0] * len(tickets) if config.skill is None else config.skill.skills_of(tickets)
        if self.named:
            self.regions += config.region.region_sets(tickets, waits)  # type: ignore[union-attr]
        numbers: Sequence[int] = range(start, end)
        skills, sizes, regions, largest, named = self.skills, self.sizes, self.regions, self.largest, self.named
        if self.by_skill:
            numbers = sorted(numbers, key=skills.__getitem__)  # stable: ties stay oldest first
        members: defaultdict[tuple[str | None, int], list[int]] = defaultdict(list)
        for ticket in numbers:
            size = sizes[ticket]
            if size > largest:
                continue
            if _ANY in self.keys:
                members[_ANY, size].append(ticket)
            if named:
                for region in regions[ticket]:
                    if region in named:
                        members[region, size].append(ticket)
        self.chunks.append(_Chunk(start, end, {
            key: _Index(numbers, list(map(skills.__getitem__, numbers)), self.empty)
            for key, numbers in members.items()}))
        return True

    def _take(self, ticket: int) -> None:
        self.taken[ticket] = 1
        chunk = next(chunk for chunk in self.chunks if ticket < chunk.end)
        size = self.sizes[ticket]
        keys = [_ANY] if _ANY in self.keys else []
        if self.named:
            keys += [region for region in self.regions[ticket] if region in self.named]
        for key in keys:
            index = chunk.indexes.get((key, size))
            if index is not None:
                index.set(ticket, index.empty)


@attrs.define
class _Chunk:
    """The tickets numbered start..end - 1, in an index per (region or _ANY, party size)."""

    start: int
    end: int
    indexes: dict[tuple[str | None, int], _Index]


class _Index:
    """The free tickets of one (region, party size), ascending by skill, in a segment tree that
    keeps the lowest ticket number (the oldest) of every range; `empty` marks a taken ticket."""

    __slots__ = ("skills", "nodes", "base", "leaf", "empty")

    def __init__(self, indexes: list[int], skills: list[float], empty: int) -> None:
        base = 1 << (len(indexes) - 1).bit_length()
        level = indexes + [empty] * (base - len(indexes))
        levels = [level]
        while len(level) > 1:
            level = list(map(min, level[::2], level[1::2]))
            levels.append(level)
        nodes = [empty]  # node 1 is the root, node k's children are 2k and 2k + 1
        for level in reversed(levels):
            nodes += level
        self.skills = skills
        self.nodes = nodes
        self.base = base
        self.leaf = {index: base + position for position, index in enumerate(indexes)}
        self.empty = empty

    def oldest(self, low: int, high: int) -> int:
        """The lowest ticket number at positions low..high - 1 (empty: none)."""
        nodes = self.nodes
        best = self.empty
        low += self.base
        high += self.base
        while low < high:
            if low & 1:
                if nodes[low] < best:
                    best = nodes[low]
                low += 1
            if high & 1:
                high -= 1
                if nodes[high] < best:
                    best = nodes[high]
            low >>= 1
            high >>= 1
        return best

    def set(self, ticket: int, value: int) -> None:
        """Mark `ticket` free (value = ticket) or not (value = empty)."""
        nodes = self.nodes
        node = self.leaf[ticket]
        nodes[node] = value
        node >>= 1
        while node:
            left, right = nodes[2 * node], nodes[2 * node + 1]
            smaller = left if left < right else right
            if nodes[node] == smaller:
                break
            nodes[node] = smaller
            node >>= 1

