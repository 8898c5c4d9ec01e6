"""Matchmaking data: tickets (a player or a party) and per-queue configuration with its rules.

Pure data, validated in the constructors so that bad data cannot enter: no clock, no I/O.
Time is an input: every rule takes `wait_s`, how long a ticket has waited (`now - created_at`,
never below 0).

Rules (`form_matches` in matchmaker/forming.py applies them; see its docstring for the search):

- **Skill.** `SkillWindow.width(wait_s) = min(max_width, initial + per_second * wait_s)`.
  A group of tickets is skill-compatible when `max(skill) - min(skill) <= width(wait of the oldest
  ticket in the group)`. The oldest ticket has the widest window, so this is the widest window
  in the group. A ticket's skill is its number `SkillWindow.number` (a party carries one number,
  e.g. its members' mean), or `default` when the ticket has none.
- **Region and latency.** A ticket accepts region `r` at `wait_s` when `r` is in its base set and
  its latency to `r` is within the limit:
    - before `relax_after_s`: base = the ticket's string set `RegionRule.regions` (if the ticket
      has no such set: the regions it has latencies for); limit = `max_latency_ms`;
    - from `relax_after_s` on: limit = `relaxed_max_latency_ms`, and if `relaxed_any_region` the
      base also takes every region the ticket has a latency for (its preference is dropped).
  A limit of `None` means no limit; an unknown latency is infinite (it fails any numeric limit).
  A group is region-compatible at `r` when every ticket accepts `r`; the match is placed in `r`.
- **Size.** A match has exactly `players.max` players, unless its oldest ticket has waited
  `max_wait_s` or more and the queue has `start_short`: then it may have fewer, at least
  `players.min` (and, with teams, a multiple of the team count).
- **Teams.** With `teams`, the players split into `teams.count` teams of equal size; a party is
  never split, so it must fit in one team.
- **Maximum wait.** A ticket that has waited `max_wait_s` or more and is not matched in a pass
  expires with reason "max_wait".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from itertools import chain
from operator import attrgetter
from typing import Any

import attrs

MAX_ID_LENGTH = 64
MAX_PARTY_SIZE = 64
MAX_PLAYERS_PER_MATCH = 1000
MAX_PROPERTIES = 64

# Ticket, player, queue, region and property ids: printable, 1 to 64 characters, no spaces,
# no path or control characters (the same alphabet as gameserver.ids player ids).
_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")


def _check_id(what: str, value: object) -> None:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise ValueError(f"{what} must be 1 to {MAX_ID_LENGTH} characters of A-Z a-z 0-9 _ . : @ -, "
                         f"got {value!r}")


def _check_finite(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")


def _id_validator(_instance: Any, attribute: attrs.Attribute, value: object) -> None:
    _check_id(attribute.name, value)


def _finite_validator(_instance: Any, attribute: attrs.Attribute, value: object) -> None:
    _check_finite(attribute.name, value)


def _non_negative(_instance: Any, attribute: attrs.Attribute, value: object) -> None:
    _check_finite(attribute.name, value)
    if value < 0:  # type: ignore[operator]
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _non_negative_or_inf(_instance: Any, attribute: attrs.Attribute, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise ValueError(f"{attribute.name} must be a number >= 0 (inf: never), got {value!r}")


def _optional_non_negative(instance: Any, attribute: attrs.Attribute, value: object) -> None:
    if value is not None:
        _non_negative(instance, attribute, value)


class FrozenDict(dict):
    """A dict that refuses changes (a plain dict's reads, at a plain dict's speed)."""

    __slots__ = ()

    def _refuse(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError("a ticket's properties cannot be changed")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple:
        return (FrozenDict, (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


def _frozen_mapping(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """A read-only copy: the caller's dict can change afterwards without changing the ticket."""
    if value is None:
        return FrozenDict()
    if not isinstance(value, Mapping):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return value if type(value) is FrozenDict else FrozenDict(value)


def _frozen_sets(value: Mapping[str, Any] | None) -> Mapping[str, frozenset[str]]:
    value = _frozen_mapping(value)
    converted = {}
    for name, members in value.items():
        if isinstance(members, str) or not isinstance(members, (set, frozenset, list, tuple)):
            raise TypeError(f"string set {name!r} must be a set of strings, got {members!r}")
        converted[name] = frozenset(members)
    return FrozenDict(converted)


def _check_properties(ticket: Ticket) -> None:
    count = len(ticket.numbers) + len(ticket.strings) + len(ticket.string_sets)
    if count > MAX_PROPERTIES:
        raise ValueError(f"a ticket has at most {MAX_PROPERTIES} properties, got {count}")
    for name, number in ticket.numbers.items():
        _check_id("a number's name", name)
        _check_finite(f"number {name!r}", number)
    for name, text in ticket.strings.items():
        _check_id("a string's name", name)
        if not isinstance(text, str) or len(text) > MAX_ID_LENGTH:
            raise ValueError(f"string {name!r} must be a string of at most {MAX_ID_LENGTH} characters")
    for name, members in ticket.string_sets.items():
        _check_id("a string set's name", name)
        if len(members) > MAX_PROPERTIES:
            raise ValueError(f"string set {name!r} has at most {MAX_PROPERTIES} members")
        for member in members:
            _check_id(f"a member of string set {name!r}", member)
    if len(ticket.latencies) > MAX_PROPERTIES:
        raise ValueError(f"a ticket has latencies for at most {MAX_PROPERTIES} regions")
    for region, latency in ticket.latencies.items():
        _check_id("a region", region)
        _check_finite(f"latency to {region!r}", latency)
        if latency < 0:
            raise ValueError(f"latency to {region!r} must be >= 0, got {latency!r}")


@attrs.frozen
class Ticket:
    """A request to play: one player, or a party that is never split, in one queue."""

    ticket_id: str = attrs.field(validator=_id_validator)
    queue: str = attrs.field(validator=_id_validator)
    players: tuple[str, ...] = attrs.field(converter=tuple)
    created_at: float = attrs.field(validator=_finite_validator)
    numbers: Mapping[str, float] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)
    strings: Mapping[str, str] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)
    string_sets: Mapping[str, frozenset[str]] = attrs.field(factory=dict, converter=_frozen_sets, hash=False)
    latencies: Mapping[str, float] = attrs.field(factory=dict, converter=_frozen_mapping, hash=False)

    @players.validator
    def _check_players(self, _attribute: attrs.Attribute, players: tuple[str, ...]) -> None:
        if not 1 <= len(players) <= MAX_PARTY_SIZE:
            raise ValueError(f"a ticket has 1 to {MAX_PARTY_SIZE} players, got {len(players)}")
        for player in players:
            _check_id("a player id", player)
        if len(set(players)) != len(players):
            raise ValueError("a party lists each player once")

    def __attrs_post_init__(self) -> None:
        _check_properties(self)

    @property
    def size(self) -> int:
        return len(self.players)

    def wait_s(self, now: float) -> float:
        """How long the ticket has waited at `now` (never negative). The rules' clock: it knows nothing
        of the ticket's status (matchmaker/book.py `Entry.wait_s` stops when the ticket leaves the queue)."""
        return max(0.0, now - self.created_at)


@attrs.frozen
class PlayerCount:
    """Players per match: exactly `max` (or from `min` up, for a short start)."""

    min: int = attrs.field(validator=attrs.validators.in_(range(1, MAX_PLAYERS_PER_MATCH + 1)))
    max: int = attrs.field(validator=attrs.validators.in_(range(1, MAX_PLAYERS_PER_MATCH + 1)))

    @max.validator
    def _check_max(self, _attribute: attrs.Attribute, value: int) -> None:
        if value < self.min:
            raise ValueError(f"players.max ({value}) must be >= players.min ({self.min})")


@attrs.frozen
class TeamLayout:
    """`count` teams of `size` players each; a party must fit in one team."""

    count: int = attrs.field(validator=attrs.validators.in_(range(2, MAX_PLAYERS_PER_MATCH + 1)))
    size: int = attrs.field(validator=attrs.validators.in_(range(1, MAX_PLAYERS_PER_MATCH + 1)))


@attrs.frozen
class SkillWindow:
    """The skill window: `min(max_width, initial + per_second * wait_s)`."""

    initial: float = attrs.field(validator=_non_negative)
    per_second: float = attrs.field(default=0.0, validator=_non_negative)
    max_width: float = attrs.field(default=math.inf)
    number: str = attrs.field(default="skill", validator=_id_validator)
    default: float = attrs.field(default=0.0, validator=_finite_validator)

    @max_width.validator
    def _check_max_width(self, _attribute: attrs.Attribute, value: float) -> None:
        if not isinstance(value, (int, float)) or math.isnan(value) or value < self.initial:
            raise ValueError(f"max_width must be a number >= initial ({self.initial}), got {value!r}")

    def width(self, wait_s: float) -> float:
        widened = self.initial + self.per_second * wait_s
        return widened if widened < self.max_width else self.max_width  # min(): the builtin costs more

    def skill_of(self, ticket: Ticket) -> float:
        return ticket.numbers.get(self.number, self.default)

    def skills_of(self, tickets: Sequence[Ticket]) -> list[float]:
        name, default = self.number, self.default
        return [ticket.numbers.get(name, default) for ticket in tickets]


@attrs.frozen
class RegionRule:
    """Which regions a ticket accepts, by its region set and its latencies; relaxes with waiting."""

    max_latency_ms: float | None = attrs.field(default=None, validator=_optional_non_negative)
    relax_after_s: float = attrs.field(default=math.inf, validator=_non_negative_or_inf)
    relaxed_max_latency_ms: float | None = attrs.field(default=None, validator=_optional_non_negative)
    relaxed_any_region: bool = attrs.field(default=True, validator=attrs.validators.instance_of(bool))
    regions: str = attrs.field(default="regions", validator=_id_validator)

    def region_sets(self, tickets: Sequence[Ticket], waits_s: Sequence[float]) -> list[list[str]]:
        """For each ticket, the regions it accepts after waiting its `wait_s`, in no particular order.

        (One loop over many tickets: match forming calls it for the whole pool.)"""
        relax_after_s, any_region, name = self.relax_after_s, self.relaxed_any_region, self.regions
        strict_limit, relaxed_limit = self.max_latency_ms, self.relaxed_max_latency_ms
        inf = math.inf
        accepted: list[list[str]] = []
        append = accepted.append
        # Plain loops inside, not comprehensions: in Python 3.11 a comprehension is a function
        # made and called each time, which costs more than its loop over a few regions.
        for ticket, wait_s in zip(tickets, waits_s):
            latencies = ticket.latencies
            preferred = ticket.string_sets.get(name)
            relaxed = wait_s >= relax_after_s
            limit = relaxed_limit if relaxed else strict_limit
            if preferred is None or (relaxed and any_region):
                if limit is None:  # every region it knows a latency for, and every region it lists
                    append(list(latencies.keys() if preferred is None else preferred | latencies.keys()))
                    continue
                # an unknown latency fails the limit: only regions with a latency can pass
                regions: list[str] = []
                for region, ms in latencies.items():
                    if ms <= limit:
                        regions.append(region)
            elif limit is None:
                regions = list(preferred)
            else:
                regions = []
                for region in preferred:
                    if latencies.get(region, inf) <= limit:
                        regions.append(region)
            append(regions)
        return accepted

    def region_set(self, ticket: Ticket, wait_s: float) -> list[str]:
        """The regions `ticket` accepts after waiting `wait_s`, in no particular order."""
        return self.region_sets((ticket,), (wait_s,))[0]

    def accepted_regions(self, ticket: Ticket, wait_s: float) -> tuple[str, ...]:
        """The regions `ticket` accepts after waiting `wait_s`, in its preference order."""
        return preference_order(ticket, self.region_set(ticket, wait_s))


def preference_order(ticket: Ticket, regions: list[str]) -> tuple[str, ...]:
    """`regions` by the ticket's latency (unknown last), then by name."""
    get = ticket.latencies.get
    return tuple(sorted(regions, key=lambda region: (get(region, math.inf), region)))


@attrs.frozen
class QueueConfig:
    """One queue (game mode): match size, teams, rules and the maximum wait."""

    queue: str = attrs.field(validator=_id_validator)
    players: PlayerCount = attrs.field(validator=attrs.validators.instance_of(PlayerCount))
    max_wait_s: float = attrs.field(validator=_non_negative_or_inf)
    teams: TeamLayout | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(TeamLayout)))
    skill: SkillWindow | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(SkillWindow)))
    region: RegionRule | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(RegionRule)))
    start_short: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))

    def __attrs_post_init__(self) -> None:
        if self.teams is not None and self.teams.count * self.teams.size != self.players.max:
            raise ValueError(f"teams ({self.teams.count} x {self.teams.size}) must hold exactly "
                             f"players.max ({self.players.max}) players")
        if self.start_short and self.teams is not None and self.players.min < self.teams.count:
            raise ValueError("with teams, a short match needs at least one player per team: "
                             f"players.min ({self.players.min}) < teams.count ({self.teams.count})")

    @property
    def team_count(self) -> int:
        """Teams per match (1 when the queue has no teams)."""
        return 1 if self.teams is None else self.teams.count

    @property
    def max_party_size(self) -> int:
        """The largest party that can ever be matched: one team, or the whole match."""
        return self.players.max if self.teams is None else self.teams.size

    def match_sizes(self, oldest_wait_s: float) -> tuple[int, ...]:
        """The allowed player counts of a match whose oldest ticket waited `oldest_wait_s`, largest first."""
        top = self.players.max
        if not (self.start_short and oldest_wait_s >= self.max_wait_s):
            return (top,)
        return tuple(size for size in range(top, self.players.min - 1, -1) if size % self.team_count == 0)


def check_pool(pool: Sequence[Ticket], config: QueueConfig, now: float) -> None:
    """Refuse a pool that a pass cannot take as it is (match forming and backfill check it first):
    `now` not a finite number, an item that is not a Ticket, a ticket of another queue, the same
    ticket id twice, or a player in two tickets."""
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise ValueError(f"now must be a finite number, got {now!r}")
    if not set(map(type, pool)) <= {Ticket}:  # the common case, fast; then subclasses are fine too
        for item in pool:
            if not isinstance(item, Ticket):
                raise TypeError(f"the pool holds Tickets, got {type(item).__name__}")
    queue = config.queue
    if not set(map(attrgetter("queue"), pool)) <= {queue}:
        wrong = next(ticket for ticket in pool if ticket.queue != queue)
        raise ValueError(f"ticket {wrong.ticket_id!r} is for queue {wrong.queue!r}, not {queue!r}")
    _check_unique("ticket", list(map(attrgetter("ticket_id"), pool)), "appears twice")
    _check_unique("player", list(chain.from_iterable(map(attrgetter("players"), pool))), "is in two tickets")


def _check_unique(what: str, ids: list[str], problem: str) -> None:
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        duplicate = next(item for item in ids if item in seen or seen.add(item))  # type: ignore[func-returns-value]
        raise ValueError(f"{what} {duplicate!r} {problem}")


def fairness_order(pool: Sequence[Ticket]) -> list[int]:
    """Positions in `pool` by (created_at, ticket_id): the longest-waiting ticket first."""
    created = [ticket.created_at for ticket in pool]
    if len(set(created)) == len(created):
        return sorted(range(len(pool)), key=created.__getitem__)
    order = sorted(range(len(pool)), key=[ticket.ticket_id for ticket in pool].__getitem__)
    order.sort(key=created.__getitem__)  # stable: ties stay by ticket id
    return order
