"""Shared helpers for tests that drive a node with in-memory connections (no sockets)."""

import json

import attrs
import trio

from gameserver import protocol
from gameserver.actor import JoinRequest
from gameserver.connection import Connection
from gameserver.game import Game

EPOCH = 1_800_000_000.0


def wall() -> float:
    """A wall clock tied to trio's clock, so that alarms follow MockClock."""
    return EPOCH + trio.current_time()


def connection(match_id, player, role="player", fmt=protocol.JSON, resume_tick=None, max_frames=1000):
    return Connection(match_id=match_id, player=player, role=role, fmt=fmt, resume_tick=resume_tick,
                      max_frames=max_frames)


async def join(node, match_id, player, role="player", **options):
    """Join through the node and wait for the answer; fails the test if refused."""
    conn = connection(match_id, player, role, **options)
    assert await node.submit(match_id, JoinRequest(conn))
    await conn.admitted.wait()
    assert conn.admission_error is None, conn.admission_error
    return conn


def frames(conn):
    return [json.loads(f) for f in conn.take()]


@attrs.define
class Count:
    moves: int = 0


@attrs.frozen
class Move:
    pass


class Turns(Game):
    """Turn-based (no tick loop: a step for every batch of inputs); it hibernates once idle."""

    name = "turns"
    tick_rate = 0
    min_players = 1
    max_players = 2
    state_type = Count
    input_type = Move
    empty_timeout_s = None

    def init(self, params, ctx):
        return Count()

    def tick(self, state, inputs, ctx):
        state.moves += len(inputs)
