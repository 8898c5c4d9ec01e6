"""Inputs read inline (wsserver.WebSocket.read_inline, Endpoint._inline_handler) over loopback: when the
match's inbox is full, what the readiness task could not deliver goes to the connection's reader,
which waits for room; every input is logged once, in the order sent, and acknowledged."""

import json
import time

import trio
import trio.testing

from gameserver import tokens, websocket
from gameserver.config import NodeConfig
from gameserver.endpoint import Endpoint
from gameserver.node import Node
from node_helpers import Turns
from ws_helpers import RawClient, client_frame

SECRET = b"endpoint-inline-secret-".ljust(32, b"x")


async def test_inputs_past_a_full_inbox_wait_with_the_reader_and_keep_their_order(nursery, tmp_path):
    node = Node(NodeConfig(data_dir=tmp_path, inbox_size=2, inbox_wait_s=30), {"turns": Turns})
    await nursery.start(node.run)
    server = await nursery.start(Endpoint(node, SECRET).serve, "127.0.0.1", 0)
    match_id = (await node.create_match("turns", {})).match_id
    client, head, _ = await RawClient.connect(server.port, f"/v1/matches/{match_id}")
    assert head.startswith(b"HTTP/1.1 101")
    now = time.time()
    token = tokens.sign(SECRET, tokens.Grant(match_id, "ann", tokens.PLAYER, now + 600), now)
    await client.send(client_frame(websocket.TEXT, json.dumps({"t": "auth", "token": token}).encode()))
    while json.loads((await client.frame())[1])["t"] != "welcome":
        pass

    actor = node.actors[match_id]
    real_advance, go = actor._advance, trio.Event()

    async def held(**options):  # the actor stops draining its inbox until `go`
        await go.wait()
        await real_advance(**options)

    actor._advance = held
    await trio.testing.wait_all_tasks_blocked()
    sent = 6
    await client.send(b"".join(client_frame(websocket.TEXT, json.dumps({"t": "input", "seq": seq, "data": {}}).encode())
                               for seq in range(1, sent + 1)))
    await trio.testing.wait_all_tasks_blocked()
    assert actor._receive.statistics().current_buffer_used == 2  # full: the rest waits with the reader
    actor._advance = real_advance
    go.set()
    acked = 0
    with trio.fail_after(10):  # a bound, never reached when every input gets through
        while acked < sent:
            frame = json.loads((await client.frame())[1])
            if frame["t"] == "state":
                acked = frame["acks"]["ann"]
    logged = actor.store.conn.execute("SELECT seq FROM inputs WHERE kind = 'input' ORDER BY tick, idx").fetchall()
    assert [seq for (seq,) in logged] == list(range(1, sent + 1))
    await client.stream.aclose()
