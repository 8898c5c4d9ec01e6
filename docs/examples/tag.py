"""Example game "tag", used by docs/games.md.

Players move on a square grid. One player is "it". When "it" stands on the same cell as another
player at the end of a tick, that player becomes "it" and is frozen for `freeze_ticks` ticks (no
moving, no tagging), which gives the old "it" time to run. Every tick spent as "it" counts against
a player. After `duration_ticks` ticks the match ends; the players with the fewest ticks as "it" win.

Run it (from the repository root):

    PYTHONPATH=docs/examples arbiter up --game tag:Tag
"""

from __future__ import annotations

import attrs
from attrs import validators as v

from gameserver.game import Context, Game, PlayerInput, Result

STEP = (-1, 0, 1)


@attrs.define
class Pos:
    x: int
    y: int


@attrs.define
class State:
    size: int
    it: str | None = None  # who is "it" (None: nobody is seated)
    frozen_until: int = 0  # "it" cannot move or tag up to and including this tick
    players: dict[str, Pos] = attrs.field(factory=dict)  # in join order
    it_ticks: dict[str, int] = attrs.field(factory=dict)  # ticks each player has been "it"


@attrs.frozen
class Move:
    """One step: dx and dy are each -1, 0 or 1."""

    dx: int = attrs.field(validator=v.in_(STEP))
    dy: int = attrs.field(validator=v.in_(STEP))


@attrs.frozen
class Params:
    size: int = attrs.field(default=8, validator=[v.ge(2), v.le(100)])
    duration_ticks: int = attrs.field(default=600, validator=[v.ge(1), v.le(1_000_000)])  # 60 s at 10 Hz
    freeze_ticks: int = attrs.field(default=10, validator=[v.ge(0), v.le(1000)])


class Tag(Game[State, Move, Params]):
    name = "tag"
    version = "1"
    tick_rate = 10
    min_players = 2
    max_players = 6
    state_type = State
    input_type = Move
    params_type = Params

    def init(self, params: Params, ctx: Context) -> State:
        return State(size=params.size)

    def join(self, state: State, player: str, ctx: Context) -> None:
        # ctx.random is seeded by (match seed, tick): the same cell on every replay.
        state.players[player] = Pos(ctx.random.randrange(state.size), ctx.random.randrange(state.size))
        state.it_ticks[player] = 0
        if state.it is None:
            self._make_it(state, player, None, ctx)

    def leave(self, state: State, player: str, ctx: Context) -> None:
        del state.players[player]
        del state.it_ticks[player]
        if state.it == player:
            state.it = None
            if state.players:  # the longest-seated player takes over
                self._make_it(state, next(iter(state.players)), None, ctx)

    def tick(self, state: State, inputs: list[PlayerInput[Move]], ctx: Context) -> None:
        latest: dict[str, Move] = {}
        for entry in inputs:  # a player's last input in a tick wins
            latest[entry.player] = entry.data
        frozen = ctx.tick <= state.frozen_until
        for name, pos in state.players.items():  # join order
            move = latest.get(name)
            if move is None or (name == state.it and frozen):
                continue
            pos.x = min(max(pos.x + move.dx, 0), state.size - 1)
            pos.y = min(max(pos.y + move.dy, 0), state.size - 1)
        if state.it is None:
            return
        state.it_ticks[state.it] += 1
        if frozen:
            return
        chaser = state.players[state.it]
        for name, pos in state.players.items():  # the first in join order is tagged
            if name != state.it and (pos.x, pos.y) == (chaser.x, chaser.y):
                self._make_it(state, name, state.it, ctx)
                break

    def result(self, state: State, ctx: Context) -> Result | None:
        if ctx.tick < ctx.params.duration_ticks:
            return None
        fewest = min(state.it_ticks.values(), default=0)
        winners = tuple(p for p, n in state.it_ticks.items() if n == fewest)
        return Result(winners=winners, reason="time", data={"it_ticks": dict(state.it_ticks)})

    def _make_it(self, state: State, player: str, tagged_by: str | None, ctx: Context) -> None:
        state.it = player
        state.frozen_until = ctx.tick + ctx.params.freeze_ticks
        ctx.emit("it", {"player": player, "tagged_by": tagged_by})
