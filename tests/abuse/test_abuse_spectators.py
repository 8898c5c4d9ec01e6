"""Spectator caps over real sockets: a match admits `max_spectators` spectator connections and one
spectator id `max_spectator_connections` of them; past either the join is refused with 1013 (try
again later, docs/protocol.md#close-codes), players are not counted, and a freed place is taken
by the next spectator who tries again."""

import pytest
import trio

from abuse_helpers import Closed, start_stack
from gameserver import protocol
from gameserver.config import NodeConfig


@pytest.fixture
async def capped(nursery, tmp_path):
    return await start_stack(nursery, tmp_path, max_spectators=3, max_spectator_connections=2)


async def refused(stack, match_id, player, role="spectator"):
    ws = await stack.connect(match_id)
    with trio.fail_after(10):
        with pytest.raises(Closed) as closed:
            await ws.auth(stack.token(match_id, player, role))
    await ws.aclose()
    return closed.value


async def join_when_admitted(stack, match_id, player):
    """Join as a spectator, trying again after each 1013 (what a client does), for up to 10 s."""
    with trio.fail_after(10):
        while True:
            try:
                return await stack.join(match_id, player, role="spectator")
            except Closed as closed:
                assert closed.code == protocol.CLOSE_TRY_AGAIN, closed
            await trio.sleep(0.05)


def test_the_defaults_are_the_documented_ones():
    config = NodeConfig()
    assert (config.max_spectators, config.max_spectator_connections) == (64, 4)


async def test_a_match_admits_its_most_spectators_then_refuses_with_1013(capped):
    match_id = await capped.match("connect_four")
    watching = [(await capped.join(match_id, f"fan{i}", role="spectator"))[0] for i in range(3)]
    closed = await refused(capped, match_id, "fan3")
    assert closed.code == protocol.CLOSE_TRY_AGAIN == 1013
    assert "3 spectators" in closed.reason and "try again later" in closed.reason
    # players are not spectators: both seats are taken while the spectators watch
    red, welcome = await capped.join(match_id, "red")
    yellow, _ = await capped.join(match_id, "yellow")
    assert welcome["role"] == "player"
    assert (await capped.node.describe(match_id))["connections"] == 5
    # the refused spectator changed nothing: the others still get the match's frames
    await red.until("state")
    await watching[0].until("state")
    # a place freed is a place for the next one who tries again
    await watching.pop().aclose()
    late, welcome = await join_when_admitted(capped, match_id, "fan3")
    assert welcome["role"] == "spectator"
    assert (await refused(capped, match_id, "fan4")).code == 1013
    for ws in [*watching, late, red, yellow]:
        await ws.aclose()


async def test_one_spectator_id_holds_at_most_its_connections_to_a_match(capped):
    match_id = await capped.match("connect_four")
    first, _ = await capped.join(match_id, "eve", role="spectator")
    second, _ = await capped.join(match_id, "eve", role="spectator")
    closed = await refused(capped, match_id, "eve")
    assert closed.code == 1013 and "2 spectator connections of this player" in closed.reason
    other, welcome = await capped.join(match_id, "zed", role="spectator")  # another id: admitted
    assert welcome["role"] == "spectator"
    # eve's cap is per match: another match admits her
    elsewhere = await capped.match("connect_four")
    third, _ = await capped.join(elsewhere, "eve", role="spectator")
    await first.aclose()
    again, _ = await join_when_admitted(capped, match_id, "eve")
    for ws in (second, other, third, again):
        await ws.aclose()


async def test_a_spectator_flood_on_one_match_is_capped(nursery, tmp_path):
    """The documented defaults: 100 spectators with 100 tokens of their own, at once; 64 watch."""
    stack = await start_stack(nursery, tmp_path)
    match_id = await stack.match("connect_four")
    outcomes: list[int | str] = []
    held = []

    async def try_one(i):
        ws = await stack.connect(match_id)
        held.append(ws)
        try:
            outcomes.append((await ws.auth(stack.token(match_id, f"fan{i}", "spectator")))["role"])
        except Closed as closed:
            outcomes.append(closed.code)

    with trio.fail_after(30):
        async with trio.open_nursery() as crowd:
            for i in range(100):
                crowd.start_soon(try_one, i)
    assert outcomes.count("spectator") == 64 and outcomes.count(1013) == 36
    assert (await stack.node.describe(match_id))["connections"] == 64
    for ws in held:
        await ws.aclose()
