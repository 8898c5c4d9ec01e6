"""`arbiter faults crash`: kill -9 a real `arbiter up` again and again under bot load, restart it on
the same data directory each time, then check that nothing acknowledged was lost.

1. `arbiter up` runs as a subprocess on a fresh data directory, loopback, on two free ports kept
   for the whole run (so that clients find it again), with short queues (QUEUES), snapshots every
   25 ticks and hibernation after 1 s. Restarts alternate `--synchronous NORMAL` and `FULL`.
2. Bots play arena and connect four through the matchmaker (clients/bots.py strategies). Each
   plays over a `MatchClient` that reconnects after a kill, resumes and resends what was not
   acknowledged; everything a bot sends and sees is recorded (tools/faults_check.Claim).
3. One kill point per restart, the kinds in a seeded order:
   - `external`: SIGKILL from here, once the bots made progress since the start, 0 to 250 ms later;
   - `startup`: SIGKILL as soon as the server says it is up (bots reconnecting, matches activating);
   - `commit-before`, `commit-after`: the server SIGKILLs itself in its Nth write transaction
     (N random), after the statements but before COMMIT, or after COMMIT but before anything about
     it is sent: the test-only hook `ARBITER_TEST_CRASH_AT` in gameserver/storage.py. If it has not
     died after HOOK_WAIT_S (no match was writing), it is killed from here and counted as such.
4. The last kill is under load too. Then the bots stop, the server starts with nobody connected,
   and every match left unfinished must finish by its own alarms (arena's match length, connect
   four's turn timer, a lobby's timeout): nothing else can move it. The server is stopped with
   SIGTERM (exit status 0 expected) and the files are checked (tools/faults_check.py).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio
from trio_websocket import HandshakeError

from clients.bots import ArenaWalker, ConnectFourPlayer, Meter, play
from clients.client import FINAL_CLOSE_CODES, ArbiterHTTP, MatchClient, MatchClosed, MatchmakingFailed, State, Welcome
from gameserver import storage
from gameserver.games import builtin_games
from tools.cli import default_workers
from tools.faults_check import Claim, check_data_dir

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("external", "startup", "commit-before", "commit-after")
START_TIMEOUT_S = 60.0  # a loaded machine can take long to import and start the server
PROGRESS_TIMEOUT_S = 60.0  # for the bots to make progress after a restart
HOOK_WAIT_S = 8.0  # for a server armed with a crash point to kill itself
EXIT_TIMEOUT_S = 15.0
FINISH_TIMEOUT_S = 60.0  # after the last restart, for every match to finish by its alarms
STOP_TIMEOUT_S = 15.0  # for the bots to stop, and for SIGTERM
PROGRESS_ACKS = 30  # acknowledgements after a restart before an external kill (about 0.5 s of play)
RECONNECT_S = 60.0  # a client gives up reconnecting after this long
ARENA_S = 10.0  # arena match length: most kills land in a match, not in matchmaking
MAX_BACKLOG = 100  # unacknowledged inputs a bot lets pile up (the server's input burst is 120)
TURN_S = 1.5  # connect four turn length (a timeout forfeits)

QUEUES = f"""\
[queues.arena]
game = "arena"
players = {{ min = 2, max = 4 }}
params = {{ duration_s = {ARENA_S} }}
max_wait_s = 1
start_short = true
seat_hold_s = 5

[queues.connect_four]
game = "connect_four"
players = {{ min = 2, max = 2 }}
params = {{ turn_s = {TURN_S}, lobby_s = 5 }}
max_wait_s = 30
seat_hold_s = 5
"""


# A worker a crash point killed, seen by the parent in the moment before it is killed too: its exit,
# and a match placement it was answering.
_EXPECTED_ERROR = re.compile(r"arbiter\.workers: worker \d+ \(pid \d+\) exited with status -9"
                             r"|arbiter\.matchmaker: placing a \w+ match failed: worker \d+ stopped before it answered")


class RunFailed(Exception):
    """The run could not go on (the server would not start, the bots made no progress): the message says why."""


@attrs.define
class Options:
    kills: int = 20
    arena_bots: int = 4
    connect_four_bots: int = 4
    seed: int = 1
    workers: int | None = None  # `arbiter up --workers`; default: its default (one per usable CPU)
    keep: Path | None = None  # run in this directory and keep it (data/, server.log); default: a temporary one
    verbose: bool = False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_ports(count: int) -> int:
    """The first of `count` consecutive free loopback ports (the workers' WebSocket ports)."""
    for _ in range(100):
        first = free_port()
        if first + count - 1 > 65535:
            continue
        socks = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RunFailed(f"no {count} consecutive free ports on 127.0.0.1")


def running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie, whose files and ports are released, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except (OSError, IndexError):  # no /proc (not Linux): ask the kernel, for whom a zombie still exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    """The running children of `pid` (the server's workers), from /proc; none where there is no /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


class RecordingClient(MatchClient):
    """A `MatchClient` that remembers the data of every seq it sends."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sent: dict[int, Any] = {}

    async def send_input(self, data: Any) -> int:
        self.sent[self.next_seq] = data
        return await super().send_input(data)


class _Recording:
    """Mixed into a strategy: records the welcomes, the last state before each drop, the `end`
    events, and counts acknowledgements for the driver's progress."""

    claim: Claim
    run: CrashRun
    client: MatchClient
    last: tuple[int, Any] | None = None
    acked_seen = 0

    def next_input(self) -> Any | None:
        # While the server is down a bot's inputs pile up in its client, which resends them all at
        # once when it is back. Past the server's input burst (120) they would be refused as
        # rate_limited and the connection closed with 1008 (the error budget): bots wait instead.
        if len(self.client.unacked) >= MAX_BACKLOG:
            return None
        return super().next_input()  # type: ignore[misc]

    def on_welcome(self, welcome: Welcome) -> None:
        if self.last is not None:
            self.claim.states.append(self.last)
            if welcome.tick < self.last[0]:
                self.claim.regressions.append(f"welcome at tick {welcome.tick} after a state at tick {self.last[0]}")
        self.claim.states.append((welcome.tick, welcome.state))
        self.last = None
        self.run.welcomes += 1
        super().on_welcome(welcome)  # type: ignore[misc]

    def on_state(self, state: State) -> None:
        self.last = (state.tick, state.state)
        acked = state.acks.get(self.player or "", 0)
        if acked > self.acked_seen:
            self.run.progress(acked - self.acked_seen)
            self.acked_seen = acked
        super().on_state(state)  # type: ignore[misc]

    def on_event(self, event: Any) -> None:
        if event.kind == "end":
            self.claim.ends += 1
        super().on_event(event)  # type: ignore[misc]

    def done(self) -> None:
        if self.last is not None:
            self.claim.states.append(self.last)
            self.last = None


class RecordingArena(_Recording, ArenaWalker):
    pass


class RecordingConnectFour(_Recording, ConnectFourPlayer):
    period_s = 0.2


BOTS = {"arena": RecordingArena, "connect_four": RecordingConnectFour}


class CrashRun:
    def __init__(self, options: Options, work_dir: Path):
        self.options = options
        self.rng = random.Random(options.seed)
        self.work_dir = work_dir
        self.data_dir = work_dir / "data"
        self.log_path = work_dir / "server.log"
        self.queues_path = work_dir / "queues.toml"
        self.workers = options.workers if options.workers is not None else default_workers()
        self.port, self.ws_port = free_port(), free_ports(self.workers)
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: trio.Process | None = None
        self.starts = 0
        self.claims: list[Claim] = []
        self.meter = Meter()
        self.stop = trio.Event()
        self.acks = 0
        self.welcomes = 0
        self._progressed = trio.Event()
        self.kills: list[dict[str, Any]] = []
        self.bot_errors: dict[str, int] = {}
        self.matches_played = 0

    def progress(self, n: int) -> None:
        self.acks += n
        self._progressed.set()

    def say(self, text: str) -> None:
        if self.options.verbose:
            print(f"faults: {text}", file=sys.stderr, flush=True)

    def error(self, kind: str) -> None:
        self.bot_errors[kind] = self.bot_errors.get(kind, 0) + 1

    # -- the server ---------------------------------------------------------------------------

    async def start_server(self, crash_at: str | None = None) -> None:
        synchronous = ("NORMAL", "FULL")[self.starts % 2]
        self.starts += 1
        env = {**os.environ}
        env.pop("ARBITER_TEST_CRASH_AT", None)
        if crash_at is not None:
            env["ARBITER_TEST_CRASH_AT"] = crash_at
        argv = [sys.executable, "-m", "tools.cli", "up", "--data-dir", str(self.data_dir), "--port", str(self.port),
                "--ws-port", str(self.ws_port), "--snapshot-every", "25", "--hibernate-after", "1",
                "--synchronous", synchronous, "--queues", str(self.queues_path), "--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} ({synchronous}, crash point {crash_at})\n".encode())
            log.flush()
            self.server = await trio.lowlevel.open_process(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                                           stderr=log)
        seen = b""
        with trio.move_on_after(START_TIMEOUT_S) as waited:
            while b"Arbiter is up." not in seen:
                chunk = await self.server.stdout.receive_some(4096)
                if not chunk:
                    break
                seen += chunk
        if b"Arbiter is up." not in seen:
            await self.kill_server()
            why = "did not start in time" if waited.cancelled_caught else "exited"
            raise RunFailed(f"start {self.starts}: the server {why}; its log: {self.log_path}\n{self.log_tail()}")

    def server_pids(self) -> list[int]:
        """The server's processes: its workers, then the parent."""
        assert self.server is not None
        return children(self.server.pid) + [self.server.pid]

    async def kill_server(self, pids: list[int] | None = None) -> None:
        """SIGKILL the server and its workers (workers first, so that none sees the parent die and
        stops cleanly), and wait until every one is gone: their ports and files are free."""
        server = self.server
        if server is None or server.returncode is not None:
            return  # exited and reaped: its pid may be someone else's by now
        pids = pids if pids is not None else self.server_pids()
        for pid in pids:
            if pid == server.pid or parent_of(pid) == server.pid:  # never a pid reused by another process
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        with trio.move_on_after(EXIT_TIMEOUT_S):
            await server.wait()
            while any(running(pid) for pid in pids):
                await trio.sleep(0.01)  # other processes' exits cannot be awaited: a bounded poll
            return
        raise RunFailed(f"the server's processes {pids} did not go away in {EXIT_TIMEOUT_S} s")

    async def wait_one_dead(self, pids: list[int], seconds: float) -> int | None:
        """The first of `pids` to die within `seconds` (the one a crash point killed), else None."""
        with trio.move_on_after(seconds):
            while True:
                for pid in pids:
                    if not running(pid):
                        return pid
                await trio.sleep(0.005)  # a bounded poll: a worker's exit cannot be awaited from here
        return None

    async def wait_exit(self, seconds: float) -> int | None:
        assert self.server is not None
        with trio.move_on_after(seconds):
            return await self.server.wait()
        return None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_problems(self) -> list[str]:
        """ERROR lines and tracebacks in the server's log (none are expected)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if (" ERROR " in line and not _EXPECTED_ERROR.search(line))
                or line.startswith("Traceback")]

    # -- the kill points ----------------------------------------------------------------------

    async def kill_point(self, kind: str) -> dict[str, Any]:
        crash_at = None
        if kind.startswith("commit"):
            crash_at = f"{kind}:{self.rng.randint(1, 60)}"
        before = self.acks
        await self.start_server(crash_at)
        assert self.server is not None
        pid = self.server.pid
        pids = self.server_pids()
        how = kind
        if kind == "startup":
            await trio.sleep(self.rng.random() * 0.1)
        elif kind == "external":
            await self.wait_progress(before + PROGRESS_ACKS)
            await trio.sleep(self.rng.random() * 0.25)
        else:
            dead = await self.wait_one_dead(pids, HOOK_WAIT_S)
            if dead is None:
                how = f"{kind} (not reached: killed from outside)"
            elif dead != pid:
                how = f"{kind} (in a worker)"
        await self.kill_server(pids)
        if self.server.returncode != -signal.SIGKILL:
            raise RunFailed(f"kill {len(self.kills) + 1} ({kind}): the server exited with {self.server.returncode}, "
                            f"not SIGKILL; its log: {self.log_path}\n{self.log_tail()}")
        point = {"kind": kind, "how": how, "crash_at": crash_at, "pid": pid, "acks_during": self.acks - before}
        self.kills.append(point)
        self.say(f"kill {len(self.kills)}: {how} ({crash_at or ''}), {point['acks_during']} acks since start")
        return point

    async def wait_progress(self, target: int) -> None:
        with trio.move_on_after(PROGRESS_TIMEOUT_S):
            while self.acks < target:
                self._progressed = trio.Event()
                await self._progressed.wait()
            return
        made = self.acks - (target - PROGRESS_ACKS)
        raise RunFailed(f"start {self.starts}: the bots made {made} of {PROGRESS_ACKS} acknowledgements in {PROGRESS_TIMEOUT_S} s; bot errors {self.bot_errors}; "
                        f"server log {self.log_path}")

    # -- the bots -----------------------------------------------------------------------------

    async def bot_life(self, index: int, game: str) -> None:
        rng = random.Random(self.options.seed * 1_000_003 + index)
        async with ArbiterHTTP(self.url, timeout=5.0) as http:
            while not self.stop.is_set():
                try:
                    await http.guest()
                    break
                except httpx.HTTPError:
                    await self.pause(0.2)
            while not self.stop.is_set():
                try:
                    assignment = await self.matchmake(http, game)
                except (httpx.HTTPError, MatchmakingFailed) as error:
                    self.error(f"matchmaking_{type(error).__name__}")
                    await self.pause(0.2)
                    continue
                if assignment is not None:
                    await self.play_match(assignment, game, rng)

    async def pause(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            await self.stop.wait()

    async def matchmake(self, http: ArbiterHTTP, game: str) -> dict | None:
        ticket = await http.create_ticket(game)
        try:
            while ticket["status"] == "queued" and not self.stop.is_set():
                ticket = await http.ticket(ticket["ticket_id"], wait_s=2.0, version=ticket["version"])
        except httpx.HTTPError:
            with trio.move_on_after(1), trio.CancelScope(shield=True):
                try:
                    await http.cancel_ticket(ticket["ticket_id"])
                except httpx.HTTPError:
                    pass  # gone with a restart, or matched meanwhile
            raise
        if ticket["status"] == "matched":
            return ticket["assignment"]
        if ticket["status"] == "queued":
            return None  # stopped
        raise MatchmakingFailed(ticket["status"], ticket.get("reason"))

    async def play_match(self, assignment: dict, game: str, rng: random.Random) -> None:
        """Join the assigned match (trying again while the server is down) and play it to its end."""
        deadline = trio.current_time() + RECONNECT_S
        while True:
            client = RecordingClient(assignment["ws_url"], assignment["token"], max_reconnect_s=RECONNECT_S,
                                     connect_timeout=5.0)
            try:
                async with client:
                    await self.play_in(client, assignment, game, rng)
                return
            except MatchClosed as closed:
                if closed.code in FINAL_CLOSE_CODES:  # over (4012) or cancelled before we came: nothing to play
                    self.error(f"join_closed_{closed.code}: {closed.reason}")
                    return
                # dropped while joining (a kill): try again, below
            except (OSError, HandshakeError, trio.TooSlowError):
                pass  # the server is down: try again, below
            if self.stop.is_set() or trio.current_time() > deadline:
                self.error("join_gave_up")
                return
            await self.pause(0.1)

    async def play_in(self, client: RecordingClient, assignment: dict, game: str, rng: random.Random) -> None:
        claim = Claim(assignment["match_id"], "")
        bot = BOTS[game](seed=rng.randrange(1 << 30))
        bot.claim, bot.run, bot.client = claim, self, client
        outcome = None
        try:
            outcome = await play(client, bot, meter=self.meter, stop=self.stop, grace_s=0.5)
        finally:
            bot.done()
            claim.player = client.player or ""
            claim.acked = client.acked
            claim.sent = dict(client.sent)
            if outcome is not None:
                claim.refused = set(outcome.refused)
            if claim.player:
                self.claims.append(claim)
        self.matches_played += 1
        if outcome.status == "closed":
            self.error(f"play_closed_{outcome.close_code}: {outcome.close_reason}")

    # -- the run ------------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.queues_path.write_text(QUEUES)
        kinds = [KINDS[i % len(KINDS)] for i in range(self.options.kills - 1)]
        self.rng.shuffle(kinds)
        kinds.append("external")  # the last one, under load too: then the alarms are checked
        games = ["arena"] * self.options.arena_bots + ["connect_four"] * self.options.connect_four_bots
        try:
            async with trio.open_nursery() as bots:
                for index, game in enumerate(games):
                    bots.start_soon(self.bot_life, index, game)
                for kind in kinds:
                    await self.kill_point(kind)
                self.stop.set()  # the server is down: the bots stop (those reconnecting give up at once)
                bots.cancel_scope.deadline = trio.current_time() + STOP_TIMEOUT_S
            pending = pending_alarms(self.data_dir)
            await self.start_server()
            restarted_at = time.time()
            unfinished = await self.wait_all_finished()
            assert self.server is not None
            self.server.send_signal(signal.SIGTERM)  # the parent stops its workers
            code = await self.wait_exit(STOP_TIMEOUT_S)
            if code != 0:
                raise RunFailed(f"the last server did not stop cleanly on SIGTERM: exit status {code}\n{self.log_tail()}")
        finally:
            await self.kill_server()
        checks = check_data_dir(self.data_dir, self.claims, builtin_games())
        alarms = finished_by_alarms(self.data_dir, pending, restarted_at)
        log_problems = self.log_problems()
        staging = sorted(p.name for p in (self.data_dir / "matches").glob(".*.new*"))
        figures = checks.figures
        problems = dict(checks.problems)
        problems.update(alarms.pop("problems"))
        if unfinished:
            problems["unfinished_after_last_restart"] = unfinished[:5]
        if log_problems:
            problems["server_log_errors"] = log_problems[:5]
        by_kind: dict[str, int] = {}
        for kill in self.kills:
            by_kind[kill["how"]] = by_kind.get(kill["how"], 0) + 1
        return {
            "ok": not problems,
            "kills": len(self.kills),
            "kills_by_kind": by_kind,
            "server_starts": self.starts,
            "bots": {"arena": self.options.arena_bots, "connect_four": self.options.connect_four_bots},
            "workers": self.workers,
            "seed": self.options.seed,
            "matches_played_by_bots": self.matches_played,
            "inputs_sent": self.meter.sent,
            "inputs_acked_by_bots": self.acks,
            "reconnects": self.meter.reconnects,
            "welcomes": self.welcomes,
            "acked_inputs_checked": figures.get("acked_inputs_checked", 0),
            "inputs_lost": figures.get("inputs_lost", 0),
            "states_checked": figures.get("states_checked", 0),
            "match_files": figures.get("match_files", 0),
            "files_verified": figures.get("files_verified", 0),
            "ticks_verified": figures.get("ticks_verified", 0),
            "statuses": {k[len("status_"):]: v for k, v in figures.items() if k.startswith("status_")},
            **alarms,
            "staging_files_left": len(staging),
            "bot_errors": self.bot_errors,
            "error_frames": dict(self.meter.errors),
            "problems": problems,
            "seconds": round(time.monotonic() - started, 1),
            "kept": str(self.work_dir) if self.options.keep else None,
        }

    async def wait_all_finished(self) -> list[str]:
        """After the last restart, with nobody connected: wait until every match file is finished
        (bounded); the matches still unfinished then."""
        deadline = trio.current_time() + FINISH_TIMEOUT_S
        while True:
            found, _broken = await trio.to_thread.run_sync(storage.scan, self.data_dir)
            unfinished = [f"{m.match_id} {m.status} at tick {m.tick}" for m in found if m.status not in storage.FINISHED]
            if not unfinished or trio.current_time() > deadline:
                return unfinished
            await trio.sleep(0.1)  # polling files: a bounded wait for a condition, not synchronization


def pending_alarms(data_dir: Path) -> dict[str, list[tuple[str, float]]]:
    """match id -> its scheduled alarms, for every unfinished match (read-only, the server down)."""
    found, _broken = storage.scan(data_dir)
    pending: dict[str, list[tuple[str, float]]] = {}
    for meta in found:
        if meta.status in storage.FINISHED:
            continue
        store = storage.MatchStore.open(storage.match_path(data_dir, meta.match_id), read_only=True, check=False)
        try:
            pending[meta.match_id] = [(a.name, a.due) for a in store.alarms() if not a.failed]
        finally:
            store.close()
    return pending


def finished_by_alarms(data_dir: Path, pending: dict[str, list[tuple[str, float]]], restarted_at: float) -> dict[str, Any]:
    """Every match unfinished at the last kill must have finished after the restart, in a step that
    an alarm made (a `timer` command: the match length, the turn timer, the lobby; or a `leave` by a
    reconnect grace): nobody was connected, so nothing else could."""
    problems: dict[str, list[str]] = {}
    fired = 0
    for match_id, alarms in pending.items():
        path = storage.match_path(data_dir, match_id)
        try:
            store = storage.MatchStore.open(path, read_only=True, check=False)
        except storage.MatchFileError as error:
            problems.setdefault("alarm_match_unreadable", []).append(str(error))
            continue
        try:
            meta = store.meta()
            steps = store.conn.execute(
                "SELECT DISTINCT i.tick, i.kind, i.data FROM inputs AS i JOIN checksums AS c ON c.tick = i.tick "
                "WHERE c.at >= ? AND i.kind IN ('timer', 'leave')", (restarted_at - 1.0,)).fetchall()
        finally:
            store.close()
        if meta.status not in storage.FINISHED:
            problems.setdefault("alarm_did_not_fire", []).append(
                f"{match_id}: still {meta.status}; alarms at the last kill {alarms}")
            continue
        if not alarms:
            problems.setdefault("finished_without_alarm", []).append(f"{match_id}: had no alarm, yet finished")
            continue
        if not steps and meta.status != storage.CRASHED:
            problems.setdefault("alarm_not_logged", []).append(
                f"{match_id}: {meta.status} after the restart with no alarm step logged; alarms were {alarms}")
            continue
        fired += 1
    return {"matches_unfinished_at_last_kill": len(pending), "matches_finished_by_alarms_after_restart": fired,
            "alarms_pending_at_last_kill": sum(len(a) for a in pending.values()), "problems": problems}


async def crash(options: Options) -> dict[str, Any]:
    if options.keep is not None:
        options.keep.mkdir(parents=True, exist_ok=True)
        return await CrashRun(options, options.keep).run()
    work_dir = Path(tempfile.mkdtemp(prefix="arbiter-faults-"))
    try:
        return await CrashRun(options, work_dir).run()
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
