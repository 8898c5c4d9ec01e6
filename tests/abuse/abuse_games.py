"""Small games that make a client's life (or the server's) hard on purpose."""

from __future__ import annotations

import attrs

from gameserver.game import Context, Game, PlayerInput
from gameserver.games import builtin_games


@attrs.define
class Said:
    lines: list[str] = attrs.Factory(list)


@attrs.frozen
class Say:
    text: str


class Chat(Game):
    """Inputs carry free text (a str field): what a hostile string reaches first."""

    name = "chat"
    tick_rate = 20
    min_players = 1
    max_players = 8
    state_type = Said
    input_type = Say

    def init(self, params: object, ctx: Context) -> Said:
        return Said()

    def tick(self, state: Said, inputs: list[PlayerInput[Say]], ctx: Context) -> None:
        state.lines = (state.lines + [i.data.text for i in inputs])[-5:]


@attrs.define
class Board:
    text: str = "x" * 60_000  # every state frame is 60 KB: a client that does not read is found soon


@attrs.frozen
class Nothing:
    pass


class Billboard(Game):
    name = "billboard"
    tick_rate = 50
    min_players = 1
    max_players = 8
    state_type = Board
    input_type = Nothing

    def init(self, params: object, ctx: Context) -> Board:
        return Board()


@attrs.define
class Count:
    tick: int = 0


class Chatter(Game):
    """50 events of 2 KB a tick: non-state frames, which are never dropped, so a client that does
    not read fills the kernel's buffers, then its outbox (256 frames), within a second or two."""

    name = "chatter"
    tick_rate = 50
    min_players = 1
    max_players = 8
    state_type = Count
    input_type = Nothing

    def init(self, params: object, ctx: Context) -> Count:
        return Count()

    def tick(self, state: Count, inputs: list, ctx: Context) -> None:
        state.tick += 1
        for i in range(50):
            ctx.emit("noise", {"i": i, "pad": "x" * 2000})


def games() -> dict[str, type[Game]]:
    return {**builtin_games(), "chat": Chat, "billboard": Billboard, "chatter": Chatter}
