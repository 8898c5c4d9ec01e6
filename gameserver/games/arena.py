"""Demo game "arena": the reference real-time workload (../shared/workloads/arena.md), exactly.

Four players move on a 1000 x 1000 field at 20 Hz; standing within 50 of the centre scores one
point a tick. With `lobby_s` > 0 the match waits that long for four players (it starts early when
four are in, and is cancelled at the timeout with fewer than two). A match-length alarm ends it
`duration_s` seconds after it started (0: never); the highest score wins.
"""

from __future__ import annotations

import attrs

from ..game import Context, Game, PlayerInput, Result

FIELD = 1000.0
SPEED = 5.0
CENTRE = 500.0
HILL_RADIUS_SQUARED = 50.0 ** 2


def _clamp(value: float, low: float, high: float) -> float:
    return low if value < low else high if value > high else value


@attrs.define
class Player:
    x: float
    y: float
    vx: float = 0.0
    vy: float = 0.0
    score: int = 0
    last_seq: int = 0


@attrs.define
class State:
    tick: int = 0
    players: dict[str, Player] = attrs.field(factory=dict)


@attrs.frozen
class Input:
    dx: float
    dy: float


_SECONDS = attrs.validators.and_(attrs.validators.ge(0.0), attrs.validators.le(24 * 3600.0))


@attrs.frozen
class Params:
    duration_s: float = attrs.field(default=0.0, validator=_SECONDS)  # 0: the match never ends
    lobby_s: float = attrs.field(default=0.0, validator=_SECONDS)  # 0: no lobby, the match starts at once


class Arena(Game[State, Input, Params]):
    name = "arena"
    version = "1.0.0"
    tick_rate = 20
    min_players = 2
    max_players = 4
    state_type = State
    input_type = Input
    params_type = Params

    def init(self, params: Params, ctx: Context) -> State:
        return State()

    def lobby_timeout(self, params: Params) -> float | None:
        return params.lobby_s or None

    def duration(self, params: Params) -> float | None:
        return params.duration_s or None

    def join(self, state: State, player: str, ctx: Context) -> None:
        rng = ctx.random
        state.players[player] = Player(x=rng.uniform(0.0, FIELD) % FIELD, y=rng.uniform(0.0, FIELD) % FIELD)

    def leave(self, state: State, player: str, ctx: Context) -> None:
        state.players.pop(player, None)

    def tick(self, state: State, inputs: list[PlayerInput[Input]], ctx: Context) -> None:
        state.tick += 1
        latest: dict[str, PlayerInput[Input]] = {}
        for entry in inputs:  # the last input of a player in this tick wins
            latest[entry.player] = entry
        for name, p in state.players.items():  # join order
            entry = latest.get(name)
            if entry is not None:
                p.vx = _clamp(entry.data.dx, -1.0, 1.0) * SPEED
                p.vy = _clamp(entry.data.dy, -1.0, 1.0) * SPEED
                p.last_seq = entry.seq
            p.x = _clamp(p.x + p.vx, 0.0, FIELD)
            p.y = _clamp(p.y + p.vy, 0.0, FIELD)
            if (p.x - CENTRE) ** 2 + (p.y - CENTRE) ** 2 <= HILL_RADIUS_SQUARED:
                p.score += 1

    def time_up(self, state: State, ctx: Context) -> Result:
        scores = {name: p.score for name, p in state.players.items()}
        best = max(scores.values(), default=0)
        winners = tuple(name for name, score in scores.items() if score == best) if scores else ()
        return Result(winners=winners, reason="time", data={"scores": scores})
