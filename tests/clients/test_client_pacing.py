"""MatchClient paces its inputs to the limits the server announces: hundreds of inputs kept
through a drop are resent after the reconnect without one refused (`rate_limited`), and every one
is in the server's input log exactly once, in order. A node and its WebSocket endpoint on loopback,
under trio's MockClock: the pacer's waits and the match's ticks pass in virtual time."""

from __future__ import annotations

from contextlib import asynccontextmanager

import attrs
import pytest
import trio

from clients.bots import drop_connection
from clients.client import Error, Event, MatchClient, MatchClosed, Welcome
from clients.pacing import InputPacer
from gameserver import tokens
from gameserver.config import NodeConfig
from gameserver.endpoint import Endpoint
from gameserver.games import builtin_games
from gameserver.node import Node
from gameserver.session import Limits
from gameserver.simulation import INPUT, LEAVE
from gameserver.storage import MatchStore, match_path

SECRET = b"client-pacing-tests".ljust(32, b"x")
EPOCH = 1_800_000_000.0


def wall() -> float:
    return EPOCH + trio.current_time()


@attrs.define
class Stack:
    node: Node
    port: int

    @asynccontextmanager
    async def client(self, match_id: str, player: str, **options):
        token = tokens.sign(SECRET, tokens.Grant(match_id, player, tokens.PLAYER, wall() + 3600), wall())
        async with MatchClient(f"ws://127.0.0.1:{self.port}/v1/matches/{match_id}", token, **options) as client:
            yield client

    def logged(self, match_id: str) -> list[tuple[str, str, int, dict | None]]:
        """The match's input log, in order: (kind, player, seq, data)."""
        store = MatchStore.open(match_path(self.node.config.data_dir, match_id), read_only=True, check=False)
        try:
            return [(c.kind, c.player, c.seq, c.data) for _, batch in store.commands_after(0) for c in batch
                    if c.kind in (INPUT, LEAVE)]
        finally:
            store.close()


async def start(nursery: trio.Nursery, data_dir, limits: Limits = Limits()) -> Stack:
    node = Node(NodeConfig(data_dir=data_dir, limits=limits), builtin_games(), wall_clock=wall, offload=False)
    await nursery.start(node.run)
    server = await nursery.start(Endpoint(node, SECRET).serve, "127.0.0.1", 0)
    return Stack(node, server.port)


@pytest.fixture
async def stack(nursery, tmp_path):
    """The default limits. Tests that use it ask for `autojump_clock` too: pytest-trio runs a test
    on the clock among its own arguments."""
    return await start(nursery, tmp_path)


def move(i: int) -> dict:
    return {"dx": float(i % 3 - 1), "dy": float(i % 5 - 2)}


async def until_acked(client: MatchClient, seq: int, errors: list[Error]) -> list[Welcome]:
    welcomes = []
    while client.acked < seq:
        message = await client.receive()
        if isinstance(message, Error):
            errors.append(message)
        elif isinstance(message, Welcome):
            welcomes.append(message)
    return welcomes


async def test_the_welcome_announces_the_connections_limits(stack, autojump_clock):
    match_id = (await stack.node.create_match("arena")).match_id
    async with stack.client(match_id, "alice") as alice:
        welcome = await alice.receive()
    assert welcome.limits == {"input_rate": 60.0, "input_burst": 120.0, "ping_rate": 10.0, "ping_burst": 20.0,
                              "error_rate": 2.0, "error_burst": 20.0}


async def test_inputs_kept_through_a_long_drop_are_resent_paced_and_all_logged_once_in_order(stack, autojump_clock):
    """A player cut off for 18 s at 20 inputs a second keeps 360 inputs; another task keeps sending
    while they are resent. Sent back to back, the resends past the server's burst of 120 were
    refused (rate_limited: lost, acknowledged past) until the errors closed the connection (1008)."""
    match_id = (await stack.node.create_match("arena")).match_id
    errors: list[Error] = []
    sent: dict[int, dict] = {}
    with trio.fail_after(300):
        async with stack.client(match_id, "alice") as alice:
            assert isinstance(await alice.receive(), Welcome)
            for i in range(5):
                sent[await alice.send_input(move(i))] = move(i)
            await until_acked(alice, 5, errors)

            assert await drop_connection(alice)  # a network loss: no close frame
            for i in range(5, 365):  # 20 a second, while nobody reads: the drop is not seen yet
                sent[await alice.send_input(move(i))] = move(i)
                await trio.sleep(0.05)
            assert len(alice.unacked) >= 300

            async def keep_sending() -> None:
                for i in range(365, 405):  # during the resends: they must not overtake them
                    sent[await alice.send_input(move(i))] = move(i)
                    await trio.sleep(0.05)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_sending)
                welcomes = await until_acked(alice, 365, errors)
            await until_acked(alice, 405, errors)
            assert [w.resumed for w in welcomes] == [True] and alice.reconnects == 1
            assert welcomes[0].last_seq == 5 and welcomes[0].limits["input_burst"] == 120
            assert errors == [] and alice.rate_limited == [] and alice.unacked == {}
    assert stack.logged(match_id) == [(INPUT, "alice", seq, sent[seq]) for seq in range(1, 406)]


async def test_a_drop_in_the_middle_of_the_resends_loses_nothing(stack, autojump_clock):
    """The connection drops again while the resends are being paced out: the next connection
    resends from its welcome's last_seq, and nothing sent on the old one goes out of turn."""
    match_id = (await stack.node.create_match("arena")).match_id
    errors: list[Error] = []
    with trio.fail_after(300):
        async with stack.client(match_id, "alice") as alice:
            await alice.receive()
            assert await drop_connection(alice)
            for i in range(320):
                await alice.send_input(move(i))
            await until_acked(alice, 100, errors)  # reconnected; the resends are under way
            assert alice._unsent
            assert await drop_connection(alice)
            welcomes = await until_acked(alice, 320, errors)
            assert len(welcomes) == 1 and 100 <= welcomes[0].last_seq < 320 and alice.reconnects == 2
            assert errors == [] and alice.rate_limited == []
    assert stack.logged(match_id) == [(INPUT, "alice", seq, move(seq - 1)) for seq in range(1, 321)]


async def test_the_client_follows_smaller_announced_limits(nursery, tmp_path, autojump_clock):
    """A server with a burst of 10 and 5 inputs a second: 60 inputs sent at once all count."""
    stack = await start(nursery, tmp_path, Limits(input_rate=5.0, input_burst=10.0))
    match_id = (await stack.node.create_match("arena")).match_id
    errors: list[Error] = []
    with trio.fail_after(300):
        async with stack.client(match_id, "alice") as alice:
            welcome = await alice.receive()
            assert (welcome.limits["input_rate"], welcome.limits["input_burst"]) == (5.0, 10.0)
            started = trio.current_time()
            for i in range(60):
                await alice.send_input(move(i))
            await until_acked(alice, 60, errors)
            assert trio.current_time() - started >= (60 - 6) / 4.5  # paced: 6 at once, then 4.5 a second
            assert errors == [] and alice.rate_limited == []
    assert [seq for _, _, seq, _ in stack.logged(match_id)] == list(range(1, 61))


async def test_leave_goes_after_the_inputs_still_queued(nursery, tmp_path, autojump_clock):
    stack = await start(nursery, tmp_path, Limits(input_rate=5.0, input_burst=10.0))
    match_id = (await stack.node.create_match("arena")).match_id
    with trio.fail_after(300):
        async with stack.client(match_id, "alice") as alice, stack.client(match_id, "bob") as bob:
            await alice.receive()
            for i in range(20):
                await alice.send_input(move(i))
            assert alice._unsent  # held back by the pacer (a window of 3)
            await alice.leave()
            with pytest.raises(MatchClosed) as closed:
                while True:
                    await alice.receive()
            assert (closed.value.code, closed.value.reason) == (1000, "left the match")
            while True:  # the leave event goes out once the step that applied it has committed
                message = await bob.receive()
                if isinstance(message, Event) and message.kind == "leave" and message.data == {"player": "alice"}:
                    break
    log = stack.logged(match_id)
    assert [(kind, seq) for kind, player, seq, _ in log if player == "alice"] == \
        [(INPUT, seq) for seq in range(1, 21)] + [(LEAVE, 0)]


async def test_an_input_refused_as_rate_limited_is_reported_not_dropped_silently(nursery, tmp_path, autojump_clock):
    """A client that does not keep to the limits (here: a pacer for far larger ones) is told which
    inputs were not applied; `rate_limited` lists them."""
    stack = await start(nursery, tmp_path, Limits(input_rate=5.0, input_burst=10.0))
    match_id = (await stack.node.create_match("arena")).match_id
    errors: list[Error] = []
    with trio.fail_after(300):
        async with stack.client(match_id, "alice") as alice:
            await alice.receive()
            alice._pacer = InputPacer(1000.0, 1000.0, trio.current_time())
            for i in range(15):
                await alice.send_input(move(i))
            await until_acked(alice, 10, errors)
            while len(errors) < 5:
                message = await alice.receive()
                if isinstance(message, Error):
                    errors.append(message)
    assert [(e.code, e.seq) for e in errors] == [("rate_limited", seq) for seq in range(11, 16)]
    assert alice.rate_limited == list(range(11, 16))
    assert [seq for _, _, seq, _ in stack.logged(match_id)] == list(range(1, 11))
