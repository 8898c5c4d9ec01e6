"""The load of `arbiter bench floor`: 4 bots per match in one process, one epoll loop.

Each bot connects to the floor server (tools/floor_server.py; no HTTP handshake, the floor has
none), sends `{"match": INDEX}`, then the arena workload's input, `{"seq", "dx", "dy"}`, at 20 Hz
with a random phase, a new direction every 20 inputs; the state frames are read and dropped. It
stops when the server closes the connections (the end of its window) or after --seconds.

`python -m tools.floor_bots PORT MATCHES SECONDS SEED`
"""

from __future__ import annotations

import heapq
import json
import os
import random
import select
import socket
import sys
import time

from gameserver.websocket import client_message

PLAYERS = 4
PERIOD_S = 0.05
NEW_DIRECTION_EVERY = 20
RECEIVE_BYTES = 65536


def run(port: int, matches: int, seconds: float, seed: int) -> int:
    """Inputs sent."""
    rng = random.Random(seed)
    poll = select.epoll()
    socks = []
    for match in range(matches):
        for _ in range(PLAYERS):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(client_message(json.dumps({"match": match}), os.urandom(4)))
            sock.setblocking(False)
            poll.register(sock.fileno(), select.EPOLLIN | select.EPOLLET)
            socks.append(sock)
    by_fd = {sock.fileno(): sock for sock in socks}
    now = time.monotonic()
    due = [(now + rng.random() * PERIOD_S, i) for i in range(len(socks))]
    heapq.heapify(due)
    seqs = [0] * len(socks)
    directions = [(0, 0)] * len(socks)
    end = now + seconds
    sent = 0
    while now < end:
        for fd, _ in poll.poll(max(0.0, min(due[0][0], end) - now)):
            if not _drain(by_fd[fd]):
                return sent  # the server ended its window
        now = time.monotonic()
        while due[0][0] <= now:
            at, i = heapq.heappop(due)
            seqs[i] += 1
            if seqs[i] % NEW_DIRECTION_EVERY == 1:
                directions[i] = (rng.choice((-1, 0, 1)), rng.choice((-1, 0, 1)))
            dx, dy = directions[i]
            body = json.dumps({"seq": seqs[i], "dx": dx, "dy": dy})
            try:
                socks[i].send(client_message(body, os.urandom(4)))
            except BlockingIOError:
                pass  # the server is not reading: this input is lost, as a real client's would wait
            except OSError:
                return sent
            sent += 1
            heapq.heappush(due, (at + PERIOD_S, i))
    return sent


def _drain(sock: socket.socket) -> bool:
    while True:
        try:
            data = sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        if len(data) < RECEIVE_BYTES:
            return True


def main(argv: list[str]) -> int:
    port, matches, seconds, seed = int(argv[0]), int(argv[1]), float(argv[2]), int(argv[3])
    print(json.dumps({"inputs_sent": run(port, matches, seconds, seed)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
