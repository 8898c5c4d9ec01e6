"""A closed connection and a hibernated match are freed by reference counting alone.

Objects left in reference cycles wait for the garbage collector's full passes, which on a node
holding thousands of connections took 25 to 110 ms of the event loop each (late alarms, slow wakes;
docs/performance.md). These tests turn the collector off and wait, through weakref callbacks, for
the server's objects to be freed: if a cycle keeps one alive, the wait times out and the test fails.
A node with its WebSocket endpoint on loopback (port 0), clients on plain sockets.
"""

import gc
import json
import struct
import time
import types
import weakref

import pytest
import trio

from gameserver import tokens, websocket
from gameserver.config import NodeConfig
from gameserver.endpoint import Endpoint
from gameserver.node import Node
from node_helpers import Turns
from ws_helpers import RawClient, client_frame

SECRET = b"freed-without-gc-secret-".ljust(32, b"x")
WAIT_S = 10  # a bound on the waits below, never reached when the objects are freed


@pytest.fixture
def collector_off():
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def start(nursery, tmp_path, hibernate_after_s):
    node = Node(NodeConfig(data_dir=tmp_path, hibernate_after_s=hibernate_after_s), {"turns": Turns})
    endpoint = Endpoint(node, SECRET)
    await nursery.start(node.run)
    server = await nursery.start(endpoint.serve, "127.0.0.1", 0)
    return node, server.port


async def player(port, match_id, name) -> RawClient:
    client, head, _ = await RawClient.connect(port, f"/v1/matches/{match_id}")
    assert head.startswith(b"HTTP/1.1 101")
    now = time.time()
    token = tokens.sign(SECRET, tokens.Grant(match_id, name, tokens.PLAYER, now + 600), now)
    await client.send(client_frame(websocket.TEXT, json.dumps({"t": "auth", "token": token}).encode()))
    while True:
        opcode, payload = await client.frame()
        if opcode == websocket.TEXT and json.loads(payload)["t"] == "welcome":
            return client


class Freed:
    """Set once every object watched is freed (weakref callbacks run as the last reference goes)."""

    def __init__(self, *objects):
        self.event = trio.Event()
        self.left = len(objects)
        self.refs = [weakref.ref(o, self._gone) for o in objects]  # kept: a dropped ref calls nothing

    def _gone(self, _) -> None:
        self.left -= 1
        if self.left == 0:
            self.event.set()

    async def wait(self) -> None:
        with trio.fail_after(WAIT_S):
            await self.event.wait()


def server_side(node, match_id, name):
    """What stands for player `name`'s connection: its socket (wsserver.WebSocket) and its outbox's
    queue, a deque only it refers to (a Connection has slots and no weak references: while it
    lives, both do)."""
    actor = node.actors.get(match_id)
    held = node.hibernated.get(match_id, []) if actor is None else actor.connections.values()
    conn = next(c for c in held if c.player == name)
    return conn.ws, conn.queue


def parts(actor) -> list:
    """An actor and what it holds for its match: all gone once the match hibernates."""
    return [actor, actor.sim, actor.sim.state, actor.sim._inputs, actor.store, actor.finished]


async def drop(client: RawClient) -> None:
    await client.stream.aclose()


async def close_frame(client: RawClient) -> None:
    await client.send(client_frame(websocket.CLOSE, struct.pack("!H", 1000)))
    while (await client.frame())[0] != websocket.CLOSE:
        pass
    await client.stream.aclose()


@pytest.mark.parametrize("end", [drop, close_frame])
async def test_a_closed_connection_is_freed_by_reference_counting(nursery, tmp_path, collector_off, end):
    node, port = await start(nursery, tmp_path, hibernate_after_s=float("inf"))
    match_id = (await node.create_match("turns", {})).match_id
    client = await player(port, match_id, "ann")
    await client.send(client_frame(websocket.TEXT, b'{"t": "input", "seq": 1, "data": {}}'))
    freed = Freed(*server_side(node, match_id, "ann"))
    await end(client)
    await freed.wait()


async def test_a_replaced_connection_is_freed_by_reference_counting(nursery, tmp_path, collector_off):
    node, port = await start(nursery, tmp_path, hibernate_after_s=float("inf"))
    match_id = (await node.create_match("turns", {})).match_id
    first = await player(port, match_id, "ann")
    freed = Freed(*server_side(node, match_id, "ann"))
    second = await player(port, match_id, "ann")  # the server closes the first one (4009)
    while (await first.frame())[0] != websocket.CLOSE:
        pass
    await first.send(client_frame(websocket.CLOSE, struct.pack("!H", 1000)))
    await freed.wait()
    await drop(second)


async def test_a_hibernated_match_and_a_connection_closed_while_it_slept_are_freed(nursery, tmp_path, collector_off):
    node, port = await start(nursery, tmp_path, hibernate_after_s=0.05)
    match_id = (await node.create_match("turns", {})).match_id
    client = await player(port, match_id, "ann")
    asleep = Freed(*parts(node.actors[match_id]))
    await asleep.wait()
    assert match_id in node.hibernated
    await client.send(client_frame(websocket.TEXT, b'{"t": "input", "seq": 1, "data": {}}'))  # wakes it
    while json.loads((await client.frame())[1])["t"] != "state":
        pass
    asleep_again = Freed(*parts(node.actors[match_id]))
    await asleep_again.wait()
    freed = Freed(*server_side(node, match_id, "ann"))  # held by the node while the match sleeps
    await drop(client)
    await freed.wait()


def server_garbage() -> list[str]:
    """The server's objects among the cyclic garbage now (collected, then let go)."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        found = sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("gameserver")}
                       | {f"method of {type(o.__self__).__qualname__}" for o in gc.garbage
                          if isinstance(o, types.MethodType) and type(o.__self__).__module__.startswith("gameserver")})
    finally:
        gc.garbage.clear()
        gc.set_debug(0)
    gc.collect()  # what DEBUG_SAVEALL kept
    return found


async def test_waking_hibernating_and_closing_leave_no_cyclic_garbage_of_the_server(nursery, tmp_path, collector_off):
    """Any server object left in a cycle, not only those the tests above watch (a frozen cycle would
    wait for memory.Collector's periodic full pass)."""
    node, port = await start(nursery, tmp_path, hibernate_after_s=0.05)
    match_id = (await node.create_match("turns", {})).match_id
    client = await player(port, match_id, "ann")
    await Freed(*parts(node.actors[match_id])).wait()
    for seq in (1, 2):  # woken by a move, then hibernated again
        await client.send(client_frame(websocket.TEXT, b'{"t": "input", "seq": %d, "data": {}}' % seq))
        while json.loads((await client.frame())[1])["t"] != "state":
            pass
        await Freed(*parts(node.actors[match_id])).wait()
    other = await player(port, match_id, "bob")  # wakes it
    freed = Freed(*server_side(node, match_id, "bob"))
    await close_frame(other)
    await freed.wait()
    freed = Freed(*server_side(node, match_id, "ann"))
    await drop(client)
    await freed.wait()
    assert server_garbage() == []
