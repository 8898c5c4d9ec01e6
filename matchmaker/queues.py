"""Game modes: what a queue matches (its `QueueConfig`) and what it starts (a game with parameters).

The embedded defaults give each demo game a queue of its own name. `--queues FILE` replaces them
with a TOML file (see docs/matchmaking.md):

    [queues.arena]
    game = "arena"
    params = { duration_s = 120 }
    players = { min = 2, max = 4 }
    max_wait_s = 60
    start_short = true
    seat_hold_s = 30
    party_accept_s = 60
    skill = { initial = 100, per_second = 10, max_width = 1000 }
    region = { max_latency_ms = 80, relax_after_s = 15, relaxed_max_latency_ms = 200 }

Pure: parsing and validation only, no I/O beyond the text it is given.
"""

from __future__ import annotations

import math
import tomllib
from typing import Any

import attrs
import cattrs

from matchmaker.book import DEFAULT_ACCEPT_S
from matchmaker.tickets import PlayerCount, QueueConfig, RegionRule, SkillWindow, TeamLayout

MAX_QUEUES = 256
DEFAULT_SEAT_HOLD_S = 30.0


class QueueFileError(ValueError):
    """A queue file that cannot be used; the message says where and why."""


@attrs.frozen
class Mode:
    """One queue: its matching rules, and the match it starts for the players it groups."""

    config: QueueConfig
    game: str
    params: dict[str, Any] = attrs.field(factory=dict)
    # How long a formed match holds its players' seats: whoever has not joined by then is a no-show,
    # the match is cancelled and the others' tickets go back to the queue with their waiting time.
    seat_hold_s: float = DEFAULT_SEAT_HOLD_S
    backfill_hold_s: float = DEFAULT_SEAT_HOLD_S  # the same for a player matched into a running match
    # How long a party ticket waits for every member to accept it before it expires (not_accepted).
    party_accept_s: float = DEFAULT_ACCEPT_S

    @property
    def queue(self) -> str:
        return self.config.queue


def default_modes() -> dict[str, Mode]:
    """The embedded defaults: one queue per demo game."""
    arena = QueueConfig(
        queue="arena", players=PlayerCount(min=2, max=4), max_wait_s=60.0, start_short=True,
        skill=SkillWindow(initial=100.0, per_second=10.0, max_width=1000.0),
        region=RegionRule(max_latency_ms=100.0, relax_after_s=15.0, relaxed_max_latency_ms=250.0))
    connect_four = QueueConfig(
        queue="connect_four", players=PlayerCount(min=2, max=2), max_wait_s=120.0,
        skill=SkillWindow(initial=100.0, per_second=10.0, max_width=1000.0))
    return {"arena": Mode(arena, "arena", {"duration_s": 300.0}),
            "connect_four": Mode(connect_four, "connect_four", {"lobby_s": 60.0})}


_converter = cattrs.Converter(forbid_extra_keys=True)


def _number(value: Any, _type: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _integer(value: Any, _type: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _boolean(value: Any, _type: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _string(value: Any, _type: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


_converter.register_structure_hook(float, _number)
_converter.register_structure_hook(int, _integer)
_converter.register_structure_hook(bool, _boolean)
_converter.register_structure_hook(str, _string)


@attrs.frozen
class _ModeFile:
    """One `[queues.NAME]` table, as written."""

    game: str
    players: PlayerCount
    max_wait_s: float = math.inf
    params: dict[str, Any] = attrs.field(factory=dict)
    start_short: bool = False
    seat_hold_s: float = DEFAULT_SEAT_HOLD_S
    backfill_hold_s: float = DEFAULT_SEAT_HOLD_S
    party_accept_s: float = DEFAULT_ACCEPT_S
    teams: TeamLayout | None = None
    skill: SkillWindow | None = None
    region: RegionRule | None = None


def parse_modes(text: str, games: set[str]) -> dict[str, Mode]:
    """The modes of a TOML queue file, checked against the games the node has."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise QueueFileError(f"not valid TOML: {error}") from None
    if set(document) != {"queues"} or not isinstance(document["queues"], dict) or not document["queues"]:
        raise QueueFileError("the file has one table, [queues.NAME], at least once, and nothing else")
    if len(document["queues"]) > MAX_QUEUES:
        raise QueueFileError(f"at most {MAX_QUEUES} queues")
    modes = {}
    for name, table in document["queues"].items():
        try:
            written = _converter.structure(table, _ModeFile)
            config = QueueConfig(queue=name, players=written.players, max_wait_s=written.max_wait_s,
                                 teams=written.teams, skill=written.skill, region=written.region,
                                 start_short=written.start_short)
            for what, seconds in (("seat_hold_s", written.seat_hold_s), ("backfill_hold_s", written.backfill_hold_s),
                                  ("party_accept_s", written.party_accept_s)):
                if not 1.0 <= seconds <= 3600.0:
                    raise ValueError(f"{what} must be 1 to 3600 seconds, got {seconds}")
        except Exception as error:
            raise QueueFileError(f"[queues.{name}]: {_describe(error)}") from None
        if written.game not in games:
            raise QueueFileError(f"[queues.{name}]: no game {written.game!r} on this node "
                                 f"(it has {', '.join(sorted(games))})")
        modes[name] = Mode(config, written.game, dict(written.params), written.seat_hold_s, written.backfill_hold_s,
                           written.party_accept_s)
    return modes


def _describe(error: BaseException) -> str:
    if isinstance(error, cattrs.ClassValidationError):
        messages = cattrs.transform_error(error, format_exception=_leaf)
        return "; ".join(messages[:5])
    return str(error)


def _leaf(error: BaseException, _type: Any) -> str:
    if isinstance(error, KeyError):
        return "required field missing"
    if isinstance(error, cattrs.ForbiddenExtraKeysError):
        return f"unknown fields: {', '.join(sorted(error.extra_fields))}"
    return str(error) or type(error).__name__
