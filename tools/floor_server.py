"""The floor server of `arbiter bench floor`: the arena workload's fixed work and nothing else.

One thread, one epoll loop, no trio, no sessions, no validation, no reconnection, no metrics. Per
input: the readiness event, `recv`, the WebSocket frame (gameserver/websocket.py's parser), `json.loads`,
onto its match's inbox. Per tick of each match: the arena rules on the last input of each player,
the state as JSON, its CRC-32, one autocommit INSERT of the step (tick, checksum, times, the tick's
inputs) into the match's own SQLite file (WAL, synchronous NORMAL, SQLite's own checkpoints), and
one WebSocket frame to each of the match's sockets. What this costs is a lower bound for any CPython
server of the workload on the machine; see tools/bench_floor.py.

Run by tools/bench_floor.py: `python -m tools.floor_server MATCHES WARMUP_S WINDOW_S DATA_DIR|-`.
It prints `listening {"port": PORT}`, then `joined {}` once every match has 4 sockets, then
`figures {...}` after the window, and exits. A bot's first frame is `{"match": INDEX}`.
"""

from __future__ import annotations

import heapq
import json
import os
import random
import resource
import select
import socket
import sqlite3
import sys
import time
import zlib

from gameserver.websocket import Parser, WebSocketError, message

PLAYERS = 4
PERIOD_S = 0.05
LATE_S = 0.025  # the workload's late tick
SLOTS = 10  # ticks start on a 5 ms grid, spread over the period
JOIN_TIMEOUT_S = 120.0
MAX_MESSAGE = 16384
RECEIVE_BYTES = 65536
SCHEMA = "CREATE TABLE IF NOT EXISTS steps (tick INTEGER PRIMARY KEY, checksum INTEGER, at REAL, ticked REAL, commands TEXT)"


class Match:
    __slots__ = ("index", "socks", "players", "inbox", "tick", "db")

    def __init__(self, index: int, data_dir: str | None):
        self.index = index
        self.socks: list[socket.socket] = []
        self.players: list[dict] = []
        self.inbox: list[tuple[int, dict]] = []
        self.tick = 0
        self.db = None
        if data_dir is not None:
            self.db = sqlite3.connect(os.path.join(data_dir, f"floor-{index}.sqlite"), isolation_level=None)
            self.db.execute("PRAGMA journal_mode = WAL")
            self.db.execute("PRAGMA synchronous = NORMAL")
            self.db.execute(SCHEMA)

    def join(self, sock: socket.socket) -> int:
        rng = random.Random(self.index * PLAYERS + len(self.players))
        self.players.append({"x": rng.random() * 1000, "y": rng.random() * 1000, "vx": 0.0, "vy": 0.0,
                             "score": 0, "last_seq": 0})
        self.socks.append(sock)
        return len(self.players) - 1

    def run_tick(self, deadline: float) -> None:
        self.tick += 1
        inputs, self.inbox = self.inbox, []
        last = {player: data for player, data in inputs}
        for index, p in enumerate(self.players):
            data = last.get(index)
            if data is not None:
                p["vx"] = max(-1.0, min(1.0, data["dx"])) * 5
                p["vy"] = max(-1.0, min(1.0, data["dy"])) * 5
                p["last_seq"] = data["seq"]
            p["x"] = min(1000.0, max(0.0, p["x"] + p["vx"]))
            p["y"] = min(1000.0, max(0.0, p["y"] + p["vy"]))
            if (p["x"] - 500) ** 2 + (p["y"] - 500) ** 2 <= 2500:
                p["score"] += 1
        state = json.dumps({"tick": self.tick, "players": self.players}, separators=(",", ":"))
        if self.db is not None:
            commands = json.dumps(inputs, separators=(",", ":")) if inputs else None
            self.db.execute("INSERT INTO steps VALUES (?, ?, ?, ?, ?)",
                            (self.tick, zlib.crc32(state.encode()), deadline, time.time(), commands))
        frame = message(state)
        for sock in self.socks:
            try:
                sock.send(frame)  # a bot that does not keep up loses frames: the floor does not queue
            except OSError:
                pass


class Client:
    __slots__ = ("sock", "parser", "match", "player")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.parser = Parser(MAX_MESSAGE)
        self.match: Match | None = None
        self.player = -1


def serve(matches: int, warmup_s: float, window_s: float, data_dir: str | None, out=sys.stdout) -> dict:
    games = [Match(i, data_dir) for i in range(matches)]
    listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
    listener.setblocking(False)
    poll = select.epoll()
    poll.register(listener.fileno(), select.EPOLLIN)
    clients: dict[int, Client] = {}
    print(f"listening {json.dumps({'port': listener.getsockname()[1]})}", file=out, flush=True)
    deadlines: list[tuple[float, int]] = []
    joined = 0
    join_by = time.monotonic() + JOIN_TIMEOUT_S
    start = end = None
    counts = {"ticks": 0, "inputs": 0, "late": 0}
    marks: dict = {}
    filled: list[Match] = []  # matches whose fourth bot just joined
    while True:
        now = time.monotonic()
        timeout = max(0.0, deadlines[0][0] - now) if deadlines else 0.1
        for fd, _ in poll.poll(timeout):
            if fd == listener.fileno():
                _accept(listener, poll, clients)
                continue
            client = clients.get(fd)
            if client is not None and not _read(client, games, counts, filled):
                poll.unregister(fd)
                del clients[fd]
                client.sock.close()
                if client.match is not None:  # (a stranger that never joined may come and go)
                    raise SystemExit("floor server: a bot left before the window ended")
        now = time.monotonic()
        while deadlines and deadlines[0][0] <= now:
            deadline, index = heapq.heappop(deadlines)
            if now - deadline > LATE_S:
                counts["late"] += 1
            games[index].run_tick(deadline)
            counts["ticks"] += 1
            heapq.heappush(deadlines, (deadline + PERIOD_S, index))
        if start is None:
            for m in filled:
                heapq.heappush(deadlines, (now + PERIOD_S + (m.index % SLOTS) * PERIOD_S / SLOTS, m.index))
            joined += len(filled)
            filled.clear()
            if joined == matches:
                print("joined {}", file=out, flush=True)
                start, end = now + warmup_s, now + warmup_s + window_s
            elif now > join_by:
                raise SystemExit(f"floor server: only {joined} of {matches} matches filled in {JOIN_TIMEOUT_S:g} s")
        elif not marks and now >= start:
            marks = {"times": os.times(), "at": time.monotonic(), **counts}
        elif marks and now >= end:
            return _figures(matches, data_dir is not None, marks, counts)


def _accept(listener: socket.socket, poll, clients: dict[int, Client]) -> None:
    while True:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        clients[sock.fileno()] = Client(sock)
        poll.register(sock.fileno(), select.EPOLLIN | select.EPOLLET)


def _read(client: Client, games: list[Match], counts: dict, filled: list[Match]) -> bool:
    """Read until the socket is empty (edge-triggered); False once the bot is gone."""
    while True:
        try:
            data = client.sock.recv(RECEIVE_BYTES)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False
        if not data:
            return False
        client.parser.feed(data)
        while True:
            try:
                item = client.parser.next()
            except WebSocketError:
                return False
            if item is None:
                break
            if type(item) is tuple:
                continue  # pings, pongs; a close frame ends the connection with the bytes that follow
            try:
                body = json.loads(item)
                if client.match is None:
                    index = body["match"]
                    if type(index) is not int or not 0 <= index < len(games) or len(games[index].socks) >= PLAYERS:
                        return False  # not one of the bots: dropped
                    client.match = games[index]
                    client.player = client.match.join(client.sock)
                    if len(client.match.socks) == PLAYERS:
                        filled.append(client.match)
                else:
                    if not (type(body["dx"]) in (int, float) and type(body["dy"]) in (int, float)):
                        raise ValueError(body)
                    client.match.inbox.append((client.player, body))
                    counts["inputs"] += 1
            except (ValueError, TypeError, KeyError):
                return False  # the bots send none of this: the bench ends if a joined one does
        if len(data) < RECEIVE_BYTES:
            return True


def _figures(matches: int, storage: bool, marks: dict, counts: dict) -> dict:
    times, seconds = os.times(), time.monotonic() - marks["at"]  # (CPU time and wall time read together)
    user, system = times.user - marks["times"].user, times.system - marks["times"].system
    return {"cpu_pct": round(100 * (user + system) / seconds, 1), "user_pct": round(100 * user / seconds, 1),
            "system_pct": round(100 * system / seconds, 1),
            "ticks_per_s": round((counts["ticks"] - marks["ticks"]) / seconds, 1),
            "expected_ticks_per_s": round(matches / PERIOD_S),
            "inputs_per_s": round((counts["inputs"] - marks["inputs"]) / seconds, 1),
            "late_ticks": counts["late"] - marks["late"],
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "ticks_total": counts["ticks"], "storage": storage}


def main(argv: list[str]) -> int:
    matches, warmup_s, window_s, data_dir = int(argv[0]), float(argv[1]), float(argv[2]), argv[3]
    figures = serve(matches, warmup_s, window_s, None if data_dir == "-" else data_dir)
    print(f"figures {json.dumps(figures)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
