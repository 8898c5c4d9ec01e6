"""`arbiter bench attack`: what hostile clients cost the matches beside them (issue 7).

1. Start `arbiter up --workers 1` on a fresh data directory, pinned to the first usable CPU; this
   driver and the attacker processes get the others (when there are at least two).
2. Create `--matches` never-ending arena matches with 2 well-behaved players each (the victims,
   driven from this process: an input every 100 ms, every frame read), an arena match and a
   connect-four match for the attackers.
3. Run a baseline phase of `--duration` seconds with no attack, then one phase per attack in
   `--attacks`, each in an attacker process of its own (this module with `--attacker KIND`),
   started when its phase starts and killed (by its PID) when it ends; `--rest` seconds between
   phases let the server close what the attack left.
4. Per phase, report the server's ticks and late ticks (/metrics: `arbiter_ticks_total`,
   `arbiter_late_ticks_total`, the `arbiter_tick_lateness_seconds` histogram), its CPU and RSS,
   the victims' state frames (skipped ticks, the longest gap between two state frames), and what
   the attacker saw (connections, close codes).

The attacks (docs/operations.md#abuse-limits says what answers each):
  garbage    20 connections sending bad frames as fast as they can: 1008 after the error budget; again
  flood      4 seated players sending inputs as fast as they can: rate_limited, then 1008; again
  huge       10 connections sending a 64 KiB frame of junk (bad_frame), then one over 64 KiB (1009); again
  stream     1 connection writing ignored frames (client pongs) without pause, never reading
  pings      1 connection writing WebSocket pings without pause, never reading its pongs
  slowloris  1,000 connections holding half a handshake (dropped at 10 s; opened again)
  idle       1,000 authenticated spectators of one turn-based match (nothing to send them), held
  noread     200 spectators of an arena match that never read (closed 4010; opened again)

Only JSON goes to stdout with --json; progress goes to stderr. Exit status: 0 it ran, 2 it could not.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from tools.arguments import number, positive_int
from tools.bench_arena import SetupFailed, cpu_seconds, info, pin, stop_server

ROOT = Path(__file__).resolve().parent.parent
ATTACKS = ("garbage", "flood", "huge", "stream", "pings", "slowloris", "idle", "noread")
VICTIM_INPUT_EVERY_S = 0.1
ARENA_TICK_RATE = 20


def add_parser(workloads) -> None:
    attack = workloads.add_parser("attack", help="late ticks of well-behaved matches with and without hostile clients")
    attack.add_argument("--attacks", default=",".join(ATTACKS),
                        help=f"comma-separated, run in this order after the baseline (default: {','.join(ATTACKS)})")
    attack.add_argument("--matches", type=positive_int, default=10, help="victim arena matches, 2 players each (10)")
    attack.add_argument("--duration", type=number(0, 3600, above=True), default=5.0, help="seconds per phase (5)")
    attack.add_argument("--rest", type=number(0, 600), default=2.0, help="seconds between phases (2)")
    attack.add_argument("--json", action="store_true", help="print only the JSON object")


def run_cli(args: argparse.Namespace) -> int:
    try:
        unknown = [a for a in args.attacks.split(",") if a and a not in ATTACKS]
        if unknown or args.matches < 1 or args.duration <= 0 or args.rest < 0:
            raise SetupFailed(f"unknown attacks {unknown}" if unknown else "--matches >= 1, --duration > 0, --rest >= 0")
        report = run(args)
    except SetupFailed as error:
        print(f"arbiter bench attack: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arbiter bench attack: interrupted", file=sys.stderr)
        return 2
    if not args.json:
        print(table(report))
    print(json.dumps(report, indent=None if args.json else 2))
    return 0


def command_line(args: argparse.Namespace) -> str:
    words = ["arbiter", "bench", "attack", "--attacks", args.attacks, "--matches", str(args.matches),
             "--duration", f"{args.duration:g}", "--rest", f"{args.rest:g}"]
    return shlex.join(words + (["--json"] if args.json else []))


def split_cpus() -> tuple[list[int] | None, list[int] | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[:1], cpus[1:]


def run(args: argparse.Namespace) -> dict:
    attacks = [a for a in args.attacks.split(",") if a]
    server_cpus, other_cpus = split_cpus()
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)
    with tempfile.TemporaryDirectory(prefix="arbiter-bench-attack-") as tmp:
        work_dir = Path(tmp)
        server, http_url = start_server(work_dir, server_cpus)
        try:
            setup = create(http_url, args.matches)
            phases = trio.run(drive, http_url, server.pid, setup, attacks, args, other_cpus)
        finally:
            stop_server(server)
    return {"command": command_line(args), "server_cpu": server_cpus, "other_cpu": other_cpus,
            "matches": args.matches, "victims": 2 * args.matches, "duration_s": args.duration, "phases": phases}


def start_server(work_dir: Path, cpus: list[int] | None) -> tuple[subprocess.Popen, str]:
    """`arbiter up --workers 1` with the turn-based bench game Tally (the idle spectators' match:
    no lobby, no end, nothing sent while nobody moves)."""
    ready_file = work_dir / "ready.json"
    command = [sys.executable, "-m", "tools.cli", "--log-level", "ERROR", "up", "--data-dir", str(work_dir / "data"),
               "--port", "0", "--ready-file", str(ready_file), "--workers", "1",
               "--game", "tools.bench_hibernation:Tally"]
    server = subprocess.Popen(command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    pin(server.pid, cpus)
    deadline = time.monotonic() + 60
    while not ready_file.exists():  # written whole, then renamed, once the server serves
        if server.poll() is not None:
            raise SetupFailed(f"the server exited with status {server.returncode} before it was ready")
        if time.monotonic() > deadline:
            stop_server(server)
            raise SetupFailed("the server was not ready after 60 s")
        time.sleep(0.05)
    pin(server.pid, cpus)  # threads started while it came up
    http_url = json.loads(ready_file.read_text())["http_url"]
    info(f"server pid {server.pid} at {http_url}, CPUs {cpus or 'any'}")
    return server, http_url


def create(http_url: str, matches: int) -> dict:
    """The victims' seats, and the attack's own matches and tokens."""
    try:
        with httpx.Client(base_url=http_url, timeout=30) as http:
            def match(game: str) -> str:
                answer = http.post("/v1/matches", json={"game": game})
                answer.raise_for_status()
                return answer.json()["match_id"]

            def token(match_id: str, player: str, role: str = "player") -> dict:
                answer = http.post(f"/v1/matches/{match_id}/tokens", json={"player_id": player, "role": role})
                answer.raise_for_status()
                return answer.json()

            victims = []
            for _ in range(matches):
                match_id = match("arena")
                victims += [token(match_id, f"victim-{n}") for n in range(2)]
            arena = match("arena")
            board = match("tally")
            return {"victims": victims,
                    "players": [token(arena, f"attacker-{n}") for n in range(4)],
                    "arena_spectator": token(arena, "watcher", "spectator"),
                    "board_spectator": token(board, "watcher", "spectator")}
    except httpx.HTTPError as error:
        raise SetupFailed(f"creating matches: {error}") from None


# -- the driver -------------------------------------------------------------------------------------


class Victims:
    """What the well-behaved players saw in the current phase."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.states = 0
        self.skipped = 0  # ticks a victim did not get a state frame for
        self.max_gap_s = 0.0
        self.closed = 0  # victims whose connection ended in this phase


async def victim(seat: dict, seen: Victims) -> None:
    try:
        await play(seat, seen)
    except (OSError, ConnectionError, trio.BrokenResourceError):
        seen.closed += 1  # counted; the phases go on without this victim


async def play(seat: dict, seen: Victims) -> None:
    url = urlsplit(seat["ws_url"])
    ws = await Raw.connect(url.hostname, url.port, url.path)
    await ws.send_text(json.dumps({"t": "auth", "token": seat["token"]}))
    last_tick, last_at, seq = None, None, 0

    async def send_inputs() -> None:
        nonlocal seq
        while True:
            seq += 1
            await ws.send_text(json.dumps({"t": "input", "seq": seq, "data": {"dx": 1, "dy": 0}}))
            await trio.sleep(VICTIM_INPUT_EVERY_S)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_inputs)
        while True:
            opcode, payload = await ws.frame()
            if opcode == 0x8:
                seen.closed += 1
                nursery.cancel_scope.cancel()
                return
            if opcode != 0x1 or not payload.startswith(b'{"t":"state"'):
                continue
            tick = json.loads(payload)["tick"]
            now = trio.current_time()
            if last_tick is not None:
                seen.states += 1
                seen.skipped += max(0, tick - last_tick - 1)
                seen.max_gap_s = max(seen.max_gap_s, now - last_at)
            last_tick, last_at = tick, now


async def drive(http_url: str, server_pid: int, setup: dict, attacks: list[str], args: argparse.Namespace,
                other_cpus: list[int] | None) -> list[dict]:
    seen = Victims()
    phases = []
    async with httpx.AsyncClient(base_url=http_url, timeout=30) as http, trio.open_nursery() as nursery:
        for seat in setup["victims"]:
            nursery.start_soon(victim, seat, seen)
        await trio.sleep(1.0)  # every victim welcomed and moving
        for name in ["baseline", *attacks]:
            info(f"phase {name}: {args.duration:g} s")
            attacker = None if name == "baseline" else start_attacker(name, setup, other_cpus)
            seen.reset()
            before = await sample(http, server_pid)
            await trio.sleep(args.duration)
            after = await sample(http, server_pid)
            phase = report_phase(name, before, after, seen, len(setup["victims"]))
            if attacker is not None:
                phase["attacker"] = stop_attacker(attacker)
            phases.append(phase)
            await trio.sleep(args.rest)
        nursery.cancel_scope.cancel()
    return phases


def start_attacker(kind: str, setup: dict, cpus: list[int] | None) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "tools.bench_attack", "--attacker", kind, json.dumps(setup)],
                               cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    pin(process.pid, cpus)
    return process


def stop_attacker(process: subprocess.Popen) -> dict:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        out, _ = process.communicate()
    try:
        return json.loads(out.decode().strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"the attacker printed no report (exit status {process.returncode})"}


async def sample(http: httpx.AsyncClient, pid: int) -> dict:
    figures = {"at": time.monotonic(), "cpu_s": cpu_seconds(pid), "rss_mb": rss_mb(pid), "lateness": {},
               "ticks": 0, "late_ticks": 0}
    try:
        with trio.fail_after(5):
            text = (await http.get("/metrics")).text
    except (httpx.HTTPError, trio.TooSlowError) as error:
        figures["metrics_error"] = f"/metrics did not answer: {type(error).__name__} {error}"
        return figures
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "arbiter_ticks_total":
                figures["ticks"] = figures.get("ticks", 0) + s.value
            elif s.name == "arbiter_late_ticks_total":
                figures["late_ticks"] = figures.get("late_ticks", 0) + s.value
            elif s.name == "arbiter_tick_lateness_seconds_bucket":
                bound = float(s.labels["le"])
                figures["lateness"][bound] = figures["lateness"].get(bound, 0) + s.value
    return figures


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def lateness_quantile(before: dict, after: dict, q: float) -> float | None:
    """The upper bound (ms) of the histogram bucket holding the q-quantile of this phase's tick lateness."""
    counts = sorted((bound, after["lateness"].get(bound, 0) - before["lateness"].get(bound, 0))
                    for bound in after["lateness"])
    total = counts[-1][1] if counts else 0
    if not total:
        return None
    for bound, cumulative in counts:
        if cumulative >= q * total:
            return None if math.isinf(bound) else bound * 1000
    return None


def report_phase(name: str, before: dict, after: dict, seen: Victims, victims: int) -> dict:
    elapsed = after["at"] - before["at"]
    failed = before.get("metrics_error") or after.get("metrics_error")
    ticks = None if failed else int(after["ticks"] - before["ticks"])
    late = None if failed else int(after["late_ticks"] - before["late_ticks"])
    return {
        "phase": name, "seconds": round(elapsed, 2), "ticks": ticks, "late_ticks": late,
        "late_pct": round(100 * late / ticks, 2) if ticks else None,
        "tick_lateness_p99_ms_at_most": None if failed else lateness_quantile(before, after, 0.99),
        "tick_lateness_max_ms_at_most": None if failed else lateness_quantile(before, after, 1.0),
        "metrics_error": failed,
        "server_cpu_pct": round(100 * (after["cpu_s"] - before["cpu_s"]) / elapsed, 1),
        "server_rss_mb": [before["rss_mb"], after["rss_mb"]],
        "victim_states": seen.states,
        "victim_states_pct": round(100 * seen.states / (victims * ARENA_TICK_RATE * elapsed), 1),
        "victim_skipped_ticks": seen.skipped,
        "victim_max_gap_ms": round(seen.max_gap_s * 1000, 1), "victims_closed": seen.closed,
    }


def table(report: dict) -> str:
    head = f"{'phase':10} {'ticks':>6} {'late':>6} {'late%':>6} {'p99<=ms':>8} {'max<=ms':>8} {'cpu%':>6} " \
           f"{'rss MB':>14} {'states%':>7} {'skipped':>8} {'gap ms':>8} {'lost':>5}  attacker"
    lines = [report["command"], head]
    for p in report["phases"]:
        attacker = p.get("attacker", {})
        lines.append(f"{p['phase']:10} {p['ticks']:>6} {p['late_ticks']:>6} {p['late_pct']!s:>6} "
                     f"{p['tick_lateness_p99_ms_at_most']!s:>8} {p['tick_lateness_max_ms_at_most']!s:>8} "
                     f"{p['server_cpu_pct']:>6} {p['server_rss_mb'][0]:>6}->{p['server_rss_mb'][1]:<6} "
                     f"{p['victim_states_pct']:>7} {p['victim_skipped_ticks']:>8} {p['victim_max_gap_ms']:>8} "
                     f"{p['victims_closed']:>5}  "
                     + " ".join(f"{k}={v}" for k, v in attacker.items()))
    return "\n".join(lines)


# -- the attacker process -----------------------------------------------------------------------------


class Raw:
    """A WebSocket client on a plain trio socket that says exactly what it is told."""

    def __init__(self, stream: trio.SocketStream):
        self.stream = stream
        self.buffer = b""

    @classmethod
    async def connect(cls, host: str, port: int, path: str, rcvbuf: int | None = None, handshake: bool = True) -> Raw:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((host, port))
        ws = cls(trio.SocketStream(sock))
        if handshake:
            await ws.stream.send_all(handshake_bytes(path))
            while b"\r\n\r\n" not in ws.buffer:
                await ws._more()
            head, _, ws.buffer = ws.buffer.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 101"):
                raise ConnectionError(head[:100].decode(errors="replace"))
        return ws

    async def _more(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("closed")
        self.buffer += data

    async def frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= 2:
                size, at = self.buffer[1] & 0x7F, 2
                if size == 126 and len(self.buffer) >= 4:
                    size, at = struct.unpack("!H", self.buffer[2:4])[0], 4
                elif size == 127 and len(self.buffer) >= 10:
                    size, at = struct.unpack("!Q", self.buffer[2:10])[0], 10
                if size < 126 or at > 2:
                    if len(self.buffer) >= at + size:
                        opcode, payload = self.buffer[0] & 0x0F, self.buffer[at:at + size]
                        self.buffer = self.buffer[at + size:]
                        return opcode, payload
            await self._more()

    async def send_text(self, text: str) -> None:
        await self.stream.send_all(frame(0x1, text.encode()))

    async def close_code(self) -> int:
        """Read until the server's close frame (its code) or the end of the connection (1006)."""
        try:
            while True:
                opcode, payload = await self.frame()
                if opcode == 0x8:
                    return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (ConnectionError, trio.BrokenResourceError):
            return 1006


def handshake_bytes(path: str) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ").encode() + key + b"\r\n\r\n"


def frame(opcode: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, size)
    key = int.from_bytes(mask * (size // 4 + 1), "little") & ((1 << (8 * size)) - 1)
    return head + mask + (int.from_bytes(payload, "little") ^ key).to_bytes(size, "little")


class Seen:
    def __init__(self) -> None:
        self.connections = 0
        self.closes: dict[str, int] = {}
        self.sent_mb = 0.0
        self.errors = 0

    def closed(self, code: int) -> None:
        self.closes[str(code)] = self.closes.get(str(code), 0) + 1

    def report(self) -> dict:
        return {"connections": self.connections, "closes": self.closes, "sent_mb": round(self.sent_mb, 1),
                "errors": self.errors}


async def again_and_again(tally: Seen, once) -> None:
    """Run one attack round after another; a refused connection is counted, then tried again."""
    while True:
        try:
            await once()
        except (OSError, ConnectionError, trio.BrokenResourceError):
            tally.errors += 1
            await trio.sleep(0.05)


async def attack(kind: str, setup: dict, tally: Seen) -> None:
    arena = urlsplit(setup["arena_spectator"]["ws_url"])
    host, port, path = arena.hostname, arena.port, arena.path

    async def garbage() -> None:
        ws = await Raw.connect(host, port, path)
        tally.connections += 1
        await ws.stream.send_all(frame(0x1, b"garbage") * 100)
        tally.closed(await ws.close_code())
        await ws.stream.aclose()

    def flood(seat: dict):
        seq = [0]

        async def once() -> None:
            ws = await Raw.connect(host, port, path)
            tally.connections += 1
            await ws.send_text(json.dumps({"t": "auth", "token": seat["token"]}))
            burst = b"".join(frame(0x1, b'{"t":"input","seq":%d,"data":{"dx":1,"dy":0}}' % (seq[0] + i))
                             for i in range(1, 1001))
            seq[0] += 1000
            await ws.stream.send_all(burst)
            tally.closed(await ws.close_code())
            await ws.stream.aclose()
        return once

    async def huge() -> None:
        ws = await Raw.connect(host, port, path)
        tally.connections += 1
        await ws.stream.send_all(frame(0x1, b"x" * 65536) + frame(0x1, b"x" * 65537))
        tally.closed(await ws.close_code())
        await ws.stream.aclose()

    def blast(opcode: int):
        chunk = frame(opcode, b"p" * 125) * 8000  # 1 MB

        async def once() -> None:
            sock = socket.create_connection((host, port))
            tally.connections += 1
            sock.sendall(handshake_bytes(path))
            sock.settimeout(10)  # a server that stops reading ends the round

            def write() -> None:
                try:
                    while True:
                        sock.sendall(chunk)
                        tally.sent_mb += len(chunk) / 1e6
                except OSError:
                    pass

            try:
                await trio.to_thread.run_sync(write, abandon_on_cancel=True)
            finally:
                sock.close()
            tally.closed(1006)
        return once

    async def slowloris() -> None:
        async def hold() -> None:
            ws = await Raw.connect(host, port, path, handshake=False)
            tally.connections += 1
            await ws.stream.send_all(handshake_bytes(path)[:30])
            try:
                while await ws.stream.receive_some(1024):
                    pass
            except trio.BrokenResourceError:
                pass
            tally.closed(1006)
        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(again_and_again, tally, hold)
                await trio.sleep(0.002)

    async def idle() -> None:
        board = urlsplit(setup["board_spectator"]["ws_url"])

        async def hold() -> None:
            ws = await Raw.connect(board.hostname, board.port, board.path)
            tally.connections += 1
            await ws.send_text(json.dumps({"t": "auth", "token": setup["board_spectator"]["token"]}))
            tally.closed(await ws.close_code())
        async with trio.open_nursery() as nursery:
            for _ in range(1000):
                nursery.start_soon(again_and_again, tally, hold)
                await trio.sleep(0.002)

    async def noread() -> None:
        async def hold() -> None:
            ws = await Raw.connect(host, port, path, rcvbuf=4096)
            tally.connections += 1
            await ws.send_text(json.dumps({"t": "auth", "token": setup["arena_spectator"]["token"]}))
            await trio.sleep(30)  # never reads; the server closes it (4010) after its send timeout
            tally.closed(await ws.close_code())
        async with trio.open_nursery() as nursery:
            for _ in range(200):
                nursery.start_soon(again_and_again, tally, hold)

    async with trio.open_nursery() as nursery:
        if kind == "garbage":
            for _ in range(20):
                nursery.start_soon(again_and_again, tally, garbage)
        elif kind == "flood":
            for seat in setup["players"]:
                nursery.start_soon(again_and_again, tally, flood(seat))
        elif kind == "huge":
            for _ in range(10):
                nursery.start_soon(again_and_again, tally, huge)
        elif kind == "stream":
            nursery.start_soon(again_and_again, tally, blast(0xA))
        elif kind == "pings":
            nursery.start_soon(again_and_again, tally, blast(0x9))
        elif kind == "slowloris":
            nursery.start_soon(slowloris)
        elif kind == "idle":
            nursery.start_soon(idle)
        elif kind == "noread":
            nursery.start_soon(noread)


async def attacker_main(kind: str, setup: dict) -> None:
    tally = Seen()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attack, kind, setup, tally)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    print(json.dumps(tally.report()), flush=True)
    os._exit(0)  # threads blocked in sendall must not keep the process


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--attacker":
        try:
            import resource
            soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ImportError, ValueError, OSError):
            pass
        trio.run(attacker_main, sys.argv[2], json.loads(sys.argv[3]))
    else:
        print("usage: arbiter bench attack (this module's --attacker mode is the bench's own)", file=sys.stderr)
        sys.exit(2)
