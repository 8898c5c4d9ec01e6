"""The shared accept loop: a burst of connections is taken in turns, so other tasks run in between."""

from __future__ import annotations

import socket

import trio

from gameserver.accepting import ACCEPTS_PER_TURN, accept_forever


async def test_a_burst_of_connections_is_accepted_in_turns():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(512)
    listener.setblocking(False)
    burst = 3 * ACCEPTS_PER_TURN + 5
    clients = [socket.create_connection(listener.getsockname()) for _ in range(burst)]
    accepted: list[socket.socket] = []
    seen: list[int] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accept_forever, listener, lambda sock, _address: accepted.append(sock), "a test")
            while len(accepted) < burst:
                seen.append(len(accepted))
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
        steps = [b - a for a, b in zip(seen, seen[1:] + [len(accepted)])]
        # Between two turns of this task the loop ran at most twice (trio's batches run tasks in random
        # order): never the whole burst at once.
        assert max(steps) <= 2 * ACCEPTS_PER_TURN < burst
        assert all(sock.gettimeout() == 0.0 for sock in accepted)  # handed over non-blocking
    finally:
        for sock in clients + accepted + [listener]:
            sock.close()
