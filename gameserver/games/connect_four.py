"""Demo game "connect_four": the turn-based workload. The match sleeps between moves.

Rules. Two players drop pieces into a board of 7 columns and 6 rows; a piece falls to the lowest
empty cell of its column. The first player to join moves first, then the players alternate. Four
of one player's pieces in a line (horizontal, vertical or diagonal) win; a full board with no
line is a draw. A move out of turn, into a full column, or after the game is over is ignored and
answered with an "invalid_move" event (a column outside 0..6 is refused as invalid input).

Time. Each turn lasts `turn_s` seconds (timer "turn", and `turn_ends_at` in the state for a
countdown). When it runs out, with `on_timeout="forfeit"` the player to move loses (reason
"timeout"); with `on_timeout="skip"` they only lose the turn. A player who leaves for good
(explicit leave, or a dropped connection past its reconnect grace) loses (reason "left"). The
lobby waits `lobby_s` seconds for both players, else the match is cancelled.

`board[row][column]` holds "" or a player id; row 0 is the bottom row.
"""

from __future__ import annotations

from typing import Any

import attrs
from attrs import validators as v

from ..game import ACCEPT, Accept, Context, Game, PlayerInput, Refuse, Result

COLUMNS = 7
ROWS = 6
LINE = 4
TURN = "turn"  # the timer's name
FORFEIT = "forfeit"
SKIP = "skip"
_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))  # (row, column) steps: horizontal, vertical, diagonals


def empty_board() -> list[list[str]]:
    return [[""] * COLUMNS for _ in range(ROWS)]


@attrs.define
class State:
    board: list[list[str]] = attrs.field(factory=empty_board)  # board[row][column], row 0 at the bottom
    players: list[str] = attrs.field(factory=list)  # join order = turn order
    turn: str = ""  # whose move ("" before the start and after the end)
    turn_ends_at: float | None = None  # when the current turn times out (seconds since the epoch)
    moves: int = 0
    winner: str | None = None
    reason: str | None = None  # set when the game is over: four, timeout, left or draw
    last_move: dict[str, Any] | None = None  # {"player", "column", "row"}


@attrs.frozen
class Move:
    column: int = attrs.field(validator=v.in_(range(COLUMNS)))


_SECONDS = [v.ge(1.0), v.le(3600.0)]


@attrs.frozen
class Params:
    turn_s: float = attrs.field(default=30.0, validator=_SECONDS)
    lobby_s: float = attrs.field(default=60.0, validator=_SECONDS)
    on_timeout: str = attrs.field(default=FORFEIT, validator=v.in_((FORFEIT, SKIP)))


class ConnectFour(Game[State, Move, Params]):
    name = "connect_four"
    version = "1"
    tick_rate = 0  # turn-based: a step per move or timer
    min_players = 2
    max_players = 2
    lobby_timeout_s = 60.0
    state_type = State
    input_type = Move
    params_type = Params

    def init(self, params: Params, ctx: Context) -> State:
        return State()

    def lobby_timeout(self, params: Params) -> float | None:
        return params.lobby_s

    def join_attempt(self, state: State, player: str, ctx: Context) -> Accept | Refuse:
        if state.turn or state.reason:  # a seat freed by a leave is not for a newcomer
            return Refuse("the game has already started")
        return ACCEPT

    def join(self, state: State, player: str, ctx: Context) -> None:
        state.players.append(player)

    def start(self, state: State, ctx: Context) -> None:
        self._give_turn(state, state.players[0], ctx)

    def leave(self, state: State, player: str, ctx: Context) -> None:
        if not state.turn:  # in the lobby (or already over): just give up the seat
            if state.reason is None:
                state.players.remove(player)
            return
        self._finish(state, next(p for p in state.players if p != player), "left", ctx)

    def tick(self, state: State, inputs: list[PlayerInput[Move]], ctx: Context) -> None:
        for entry in inputs:
            player, column = entry.player, entry.data.column
            if state.reason is not None:
                self._invalid(player, "the game is over", ctx)
            elif player != state.turn:
                self._invalid(player, "not your turn", ctx)
            elif state.board[ROWS - 1][column]:
                self._invalid(player, f"column {column} is full", ctx)
            else:
                self._play(state, player, column, ctx)

    def on_timer(self, state: State, name: str, ctx: Context) -> None:
        if name != TURN or not state.turn:
            return
        if ctx.params.on_timeout == FORFEIT:
            self._finish(state, self._other(state, state.turn), "timeout", ctx)
        else:
            ctx.emit("turn_skipped", {"player": state.turn})
            self._give_turn(state, self._other(state, state.turn), ctx)

    def result(self, state: State, ctx: Context) -> Result | None:
        if state.reason is None:
            return None
        winners = (state.winner,) if state.winner is not None else ()
        return Result(winners=winners, reason=state.reason,
                      data={"moves": state.moves, "board": [list(row) for row in state.board]})

    # -- rules ----------------------------------------------------------------------------------

    def _play(self, state: State, player: str, column: int, ctx: Context) -> None:
        row = next(r for r in range(ROWS) if not state.board[r][column])
        state.board[row][column] = player
        state.moves += 1
        state.last_move = {"player": player, "column": column, "row": row}
        if four_from(state.board, row, column):
            self._finish(state, player, "four", ctx)
        elif state.moves == ROWS * COLUMNS:
            self._finish(state, None, "draw", ctx)
        else:
            self._give_turn(state, self._other(state, player), ctx)

    def _give_turn(self, state: State, player: str, ctx: Context) -> None:
        state.turn = player
        state.turn_ends_at = ctx.now + ctx.params.turn_s
        ctx.set_timer(TURN, state.turn_ends_at)

    def _finish(self, state: State, winner: str | None, reason: str, ctx: Context) -> None:
        state.winner, state.reason = winner, reason
        state.turn, state.turn_ends_at = "", None
        ctx.cancel_timer(TURN)

    @staticmethod
    def _other(state: State, player: str) -> str:
        return next(p for p in state.players if p != player)

    @staticmethod
    def _invalid(player: str, reason: str, ctx: Context) -> None:
        ctx.emit("invalid_move", {"player": player, "reason": reason})


def four_from(board: list[list[str]], row: int, column: int) -> bool:
    """Is the piece at (row, column) part of a line of four of its owner's pieces?"""
    owner = board[row][column]
    for dr, dc in _DIRECTIONS:
        count = 1
        for sign in (1, -1):
            r, c = row + sign * dr, column + sign * dc
            while 0 <= r < ROWS and 0 <= c < COLUMNS and board[r][c] == owner:
                count += 1
                r, c = r + sign * dr, c + sign * dc
        if count >= LINE:
            return True
    return False
