"""The match actor: one trio task that does everything for its match.

A real-time match that is running ticks on absolute deadlines. Every other match (in its lobby,
turn-based, or paused) takes a step whenever something arrives or an alarm comes due. Each step
drains the inbox in arrival order, runs the simulation, commits that step's commands, checksum,
time, events, alarms and (every N steps) a snapshot in one SQLite transaction, and only then
sends anything (output gate): welcomes, state frames carrying every player's last processed seq
(the acknowledgement), events and errors.

Alarms: the game's alarm and timers fire in steps of their own; if the handler raises, the step is
rolled back and retried with exponential backoff, and after `alarm_max_retries` the alarm is
recorded as failed (kept, shown, never silently dropped). The runtime's alarms drive the
lifecycle: lobby timeout, match length, empty match, reconnect grace, retention.

Inbox policy: the inbox holds `inbox_size` messages. A connection whose message does not fit
waits for room (TCP backpressure on that client alone); if none frees up within `inbox_wait_s`,
the connection is closed with 1013 and the message is not accepted. Nothing accepted into the
inbox is ever dropped, and nothing is acknowledged before it is committed.

Spectators: a match admits `max_spectators` spectator connections, one spectator id
`max_spectator_connections` of them; a join past either is refused with 1013 (try again later),
at once if the match is full when the join is drained, so that a flood costs no step.

Hibernation: a match that is not ticking and has had nothing to do for `hibernate_after_s`
writes a snapshot and leaves memory; its node keeps its connections open and wakes it when a
message or an alarm arrives.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
from collections.abc import Callable, Hashable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
import trio

from . import alarms as alarm_math
from . import canonical, protocol, storage
from .alarms import EMPTY, END, LOBBY, RETENTION, Alarm, grace_name, is_runtime
from .config import NodeConfig
from .connection import Connection
from .game import EMPTY_PAUSE, Game
from .metrics import Metrics
from .records import StepRecord, snapshot_of, step_record
from .simulation import (INPUT, JOIN, LEAVE, RELEASE, RESERVE, TIMER, Command, GameCrashed, Simulation, Step,
                         checked_seconds, exception_text)
from .storage import (CRASHED, CREATED, FAILED, FINISHED, LOBBY as LOBBY_STATUS, RUNNING, MatchFileError, MatchMeta,
                      MatchStore, is_storage_error)
from .metronome import SLOT_S, Metronome
from .metronome import current as current_metronome
from .ticks import Schedule
from .tokens import PLAYER

if TYPE_CHECKING:
    from .protocol import Input

log = logging.getLogger("arbiter.match")

_BASE_VIEW = Game.view
_UNMADE = object()  # (not in a cache)
_BASE_AUDIENCE = Game.audience


@attrs.frozen
class JoinRequest:
    conn: Connection


@attrs.frozen
class InputMessage:
    conn: Connection
    input: "Input"


@attrs.frozen
class LeaveRequest:
    conn: Connection


@attrs.frozen
class RosterChange:
    """The matchmaker holds seats for `players` (a backfill), or gives back held seats nobody took
    (`release`). `done` is set once the change is committed (or the match is gone)."""

    players: tuple[str, ...]
    release: bool = False
    done: trio.Event = attrs.field(factory=trio.Event, eq=False)


@attrs.frozen
class MatchNotice:
    """What a match tells its node's listeners (the matchmaker), after the writes it reflects committed.

    kind "started": the match left its lobby; "finished": the match is over (`status`, `reason`);
    "left": a seated player left a running match. `seated` and `roster` are as of the notice
    (roster None: an open match)."""

    match_id: str
    kind: str
    status: str
    reason: str | None
    seated: tuple[str, ...]
    roster: tuple[str, ...] | None
    backfill: bool  # the game asks for replacements of players who left
    max_players: int
    labels: dict[str, str]


InboxItem = JoinRequest | InputMessage | LeaveRequest | RosterChange


def describe_match(meta: MatchMeta, *, players: list[dict[str, Any]], connections: int, live: bool,
                   alarms: list[Alarm], paused: bool = False) -> dict[str, Any]:
    """A match's status as the HTTP API shows it, whether its actor is in memory or not."""
    failed = [a for a in alarms if a.failed]
    reason = meta.status_reason
    if failed and reason is None:
        reason = "; ".join(f"alarm {a.name!r} failed after {a.retries} attempts: {a.last_error}" for a in failed)
    return {"match_id": meta.match_id, "game": meta.game, "game_version": meta.game_version,
            "params": meta.params, "status": RUNNING if meta.status == CREATED or (
                meta.status == LOBBY_STATUS and meta.started_at is not None) else meta.status,  # see Actor.status
            "status_reason": reason, "tick": meta.tick, "tick_rate": meta.tick_rate, "players": players,
            "connections": connections, "live": live, "paused": paused, "created_at": meta.created_at,
            "started_at": meta.started_at, "ended_at": meta.ended_at, "result": meta.result,
            "alarms": [{"name": a.name, "due_at": a.due, "retries": a.retries, "failed": a.failed,
                        "last_error": a.last_error} for a in alarms],
            "failed_alarms": len(failed)}


class Actor:
    def __init__(self, *, game: Game, store: MatchStore, sim: Simulation, meta: MatchMeta, config: NodeConfig,
                 metrics: Metrics, wall_clock: Callable[[], float], alarms: list[Alarm] | None = None,
                 adopted: list[Connection] | None = None,
                 schedule_alarm: Callable[[str, float | None], None] | None = None,
                 on_hibernate: Callable[[str, list[Connection]], None] | None = None,
                 offload: Callable[..., Any] = trio.to_thread.run_sync,
                 recorded_connections: set[int] | None = None,
                 en_route: Callable[[str], bool] | None = None,
                 notify: Callable[[MatchNotice], None] | None = None,
                 checkpoint: Callable[[MatchStore], None] | None = None):
        self.match_id = meta.match_id
        self.game = game
        self.store = store
        self.sim = sim
        self.meta = meta
        # CREATED: a schema-1 file; LOBBY with a started simulation: a file whose start only set started_at
        self.status = RUNNING if meta.status == CREATED or (meta.status == LOBBY_STATUS and sim.started) else meta.status
        self.status_reason = meta.status_reason
        self.config = config
        self._limits = config.limits.announced()  # the session's limits, told to clients in the welcome
        self.metrics = metrics
        self.wall_clock = wall_clock
        self.alarms: dict[str, Alarm] = {a.name: a for a in alarms or []}
        self._schedule_alarm = schedule_alarm or (lambda _match, _due: None)
        self._on_hibernate = on_hibernate or (lambda _match, _connections: None)
        self._offload = offload
        self._en_route = en_route or (lambda _match: False)
        self._notify = notify or (lambda _notice: None)
        self._checkpoint = checkpoint or (lambda _store: None)  # the node checkpoints the WAL elsewhere
        self._roster_done: list[trio.Event] = []  # roster changes in the step being made
        self._send, self._receive = trio.open_memory_channel[InboxItem](config.inbox_size)
        self.connections: dict[int, Connection] = {}
        self.by_player: dict[str, Connection] = {}
        self._arriving: list[Connection] = []  # drained join requests, answered after the step's commit
        self._gone: list[Connection] = []  # closed connections, detached at the next step
        self._alarm_writes: list[tuple[str, Alarm | None]] = []  # runtime alarm changes not yet committed
        # The file's `connections` table, changed row by row: conn id -> the connection to record
        # (None: its row goes), not yet committed. A join or a leave writes one row, whatever the count.
        self._connection_writes: dict[int, Connection | None] = {}
        self.spectators = 0  # spectator connections attached (capped by config.max_spectators)
        self._spectating: dict[str, int] = {}  # spectator id -> its attached spectator connections
        self.paused = False
        self.hibernated = False
        self.failure_recorded = False  # a failure (status failed) is in the match file, not only in memory
        self.finished = trio.Event()  # the task is over: the match ended, or the actor stopped or hibernated
        self._wakeup = trio.Event()
        self._stop = trio.Event()
        self._parked = None  # while waiting for a tick's deadline: the metronome's entry
        self._stop_code = protocol.CLOSE_GOING_AWAY
        self._stop_reason = "server shutting down"
        self._last_activity = trio.current_time()
        self._snapshot_tick = -1
        self._rng = random.Random()
        # Commits until the next checkpoint request: the first comes after a random count, so that
        # matches started together (a server's worth at start-up) do not checkpoint together.
        self._commits_to_checkpoint = 1 + self._rng.randrange(storage.CHECKPOINT_EVERY_COMMITS)
        self._shared_view = type(game).view is _BASE_VIEW and type(game).audience is _BASE_AUDIENCE
        self.log = logging.LoggerAdapter(log, {"match": self.match_id})
        for conn in adopted or []:  # connections kept open by the node while the match hibernated
            self._attach(conn)
        # The file lists the connections open when it was last written: rows of connections that
        # closed meanwhile (or before a restart) go, connections it does not list are added.
        recorded = recorded_connections or set()
        self._connection_writes = {i: c for i, c in self.connections.items() if i not in recorded}
        self._connection_writes.update((i, None) for i in recorded if i not in self.connections)

    # -- called by connections and the node ---------------------------------------------------

    @property
    def over(self) -> bool:
        return self.status in FINISHED

    def submit_nowait(self, item: InboxItem) -> bool:
        """Put a message in the inbox if it has room now; False otherwise (full, or the actor is gone:
        `submit` then waits, or says which)."""
        if self.finished.is_set():
            return False
        try:
            self._send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        self._wakeup.set()
        return True

    async def submit(self, item: InboxItem) -> bool:
        """Put a message in the inbox; False if it stayed full for `inbox_wait_s` (see module doc),
        or if the actor is gone (ended, stopped or hibernated: ask the node again)."""
        if self.finished.is_set():
            return False
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            with trio.move_on_after(self.config.inbox_wait_s):
                try:
                    await self._send.send(item)
                except trio.ClosedResourceError:
                    return False
                self._wakeup.set()
                return True
            return False
        except trio.ClosedResourceError:
            return False
        self._wakeup.set()
        return True

    def disconnected(self, conn: Connection) -> None:
        """A connection closed. Never blocks and never fails: it must not depend on inbox room."""
        self._gone.append(conn)
        self._wakeup.set()

    def poke(self) -> None:
        """Look at the alarms again (the node's scheduler calls this)."""
        self._wakeup.set()

    def stop(self, code: int = protocol.CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        """Finish the current step, close every connection with `code`, leave memory."""
        self._stop_code, self._stop_reason = code, reason
        self._stop.set()
        self._wakeup.set()
        Metronome.wake(self._parked)

    def describe(self) -> dict[str, Any]:
        players = [{"player_id": p, "connected": p in self.by_player, "seated": True,
                    "attachment": self.by_player[p].attachment if p in self.by_player else None}
                   for p in self.sim.seated]
        meta = attrs.evolve(self.meta, status=self.status, status_reason=self.status_reason, tick=self.sim.tick)
        return describe_match(meta, players=players, connections=len(self.connections), live=True,
                              alarms=sorted(self.alarms.values(), key=lambda a: (a.due, a.name)), paused=self.paused)

    # -- the task -----------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            try:
                self._on_activation()
            finally:
                task_status.started()  # also when the first write failed: the node then sees the match failed
            await self._loop()
        except (sqlite3.Error, OSError, MatchFileError) as error:  # (MatchFileError: content found damaged)
            self._fail(error)
        except Exception as error:  # a bug, ours or a game's where nothing expects it: this match only
            self.log.exception("match stopped by an unexpected error at tick %d", self.sim.tick)
            self.status, self.status_reason = FAILED, f"internal error: {exception_text(error)}"
            self.metrics.matches_finished.labels(FAILED).inc()
            self._stop_code, self._stop_reason = protocol.CLOSE_INTERNAL, "match failed: internal error"
            self._tell("finished")
        finally:
            if not self.hibernated:
                self._close_all(self._stop_code, self._stop_reason)
            self._refuse_waiting()
            self._send.close()
            self.finished.set()
            # Closing checkpoints the WAL into the file (and syncs it): not on the event loop.
            with trio.CancelScope(shield=True):
                await self._offload(self.store.close)

    def _on_activation(self) -> None:
        now = self.wall_clock()
        if self.meta.status == CREATED:  # a schema-1 match: running from its first activation
            self.store.set_status(RUNNING, None, now)
            self.meta = attrs.evolve(self.meta, status=RUNNING, started_at=now)
        # A real-time match that pauses when empty stays paused when woken with nobody connected
        # (by an alarm, say); a player connecting resumes it.
        if self.game.when_empty == EMPTY_PAUSE and self.game.tick_rate > 0 and not self.by_player:
            self.paused = self.status == RUNNING and self.sim.started
        # Seated players without a connection (after a restart, say) get their reconnect grace.
        for player in self.sim.seated:
            if player not in self.by_player and grace_name(player) not in self.alarms:
                self._set_alarm(grace_name(player), now + self.game.reconnect_grace_s)
        self._check_empty(now)
        self._flush_alarms()

    def _ticking(self) -> bool:
        return (self.game.tick_rate > 0 and self.sim.started and self.status == RUNNING and not self.paused)

    async def _loop(self) -> None:
        schedule: Schedule | None = None
        metronome = current_metronome()
        while not self.over:
            ticking = self._ticking()
            if ticking and schedule is None:
                schedule = Schedule.starting(trio.current_time(), self.game.tick_rate, SLOT_S,
                                             metronome.load(1.0 / self.game.tick_rate, SLOT_S))
            elif not ticking:
                schedule = None
            if schedule is not None:
                if not self._stop.is_set():
                    try:
                        await metronome.sleep_until(schedule.deadline(), self._park)
                    finally:
                        self._parked = None
            else:
                idle_at = self._last_activity + self.config.hibernate_after_s
                with trio.move_on_at(min(self._next_due_mono(), idle_at)):
                    await self._wakeup.wait()
            if self._stop.is_set():
                return
            self._wakeup = trio.Event()
            now = trio.current_time()
            if schedule is not None:
                if now < schedule.deadline():
                    continue
                started = now
                lateness = started - schedule.deadline()
                await self._advance(ticked=True)
                done = trio.current_time()
                skipped = schedule.advance(done)
                self._count_tick(done - started, lateness, skipped)
            elif self._has_work(now):
                await self._advance(ticked=False)
                self._last_activity = trio.current_time()
            elif now >= self._last_activity + self.config.hibernate_after_s:
                if self._can_hibernate():
                    try:
                        self._hibernate()
                    except GameCrashed as crash:  # the state does not survive its snapshot
                        await self._crashed(crash)
                        continue
                    return
                self._last_activity = now  # not now (a message is on its way): look again later

    def _park(self, entry) -> None:
        self._parked = entry

    def _count_tick(self, duration: float, lateness: float, skipped: int) -> None:
        metrics = self.metrics
        metrics.ticks.inc()
        metrics.tick_duration.observe(duration)
        metrics.tick_lateness.observe(max(lateness, 0.0))
        late = skipped + (lateness > self.config.late_threshold_s)
        if late:
            metrics.late_ticks.inc(late)

    def _has_work(self, now: float) -> bool:
        return bool(self._gone or self._receive.statistics().current_buffer_used or self._next_due_mono() <= now)

    def _can_hibernate(self) -> bool:
        return (self.config.hibernate_after_s != math.inf and not self._arriving
                and not self._en_route(self.match_id))

    # -- steps --------------------------------------------------------------------------------

    async def _advance(self, *, ticked: bool) -> None:
        """One round of work: the step with what arrived (and the runtime's due alarms), then the
        game's due alarms, each in a step of its own. What arrived goes first: a move made before a
        turn timer was handled is never beaten by it."""
        now = self.wall_clock()
        commands = self._drain()
        due = alarm_math.due(self.alarms.values(), now)
        runtime: list[Command] = []
        for alarm in due:
            if is_runtime(alarm.name):
                runtime += self._runtime_alarm(alarm)
        turn_based = self.game.tick_rate == 0
        if commands or runtime or self._arriving or ticked:
            # A turn-based game's tick runs in every step that has commands: that is where moves apply.
            await self._step(runtime + commands, ticked=ticked or (turn_based and bool(commands or runtime)), now=now)
        self._roster_committed()
        for alarm in due:
            if self.over:
                break
            if not is_runtime(alarm.name) and self.alarms.get(alarm.name) == alarm:  # not moved by the step
                await self._fire_game_alarm(alarm, now)
        self._after_connections(now)

    def _runtime_alarm(self, alarm: Alarm) -> list[Command]:
        """What a due runtime alarm does: the commands it adds to the step, if any."""
        self._set_alarm(alarm.name, None)
        if alarm.name.startswith(alarm_math.GRACE_PREFIX):
            player = alarm.name[len(alarm_math.GRACE_PREFIX):]
            return [] if player in self.by_player else [Command(LEAVE, player)]
        if alarm.name == EMPTY and self.game.when_empty == EMPTY_PAUSE:
            self.paused = True
            self.log.info("nobody connected for %ss: paused", self.game.empty_timeout_s)
            return []
        if alarm.name == RETENTION:
            return []  # the node deletes finished matches; not ours to do here
        return [Command(TIMER, "", 0, {"name": alarm.name})]  # LOBBY, END, EMPTY (end)

    async def _fire_game_alarm(self, alarm: Alarm, now: float) -> None:
        """Run one game alarm in a step of its own, rolled back and rescheduled if its handler raises."""
        try:
            checkpoint = self.sim.checkpoint()
        except Exception as error:  # a state deepcopy cannot copy (too deep, or refusing to be copied)
            await self._crashed(GameCrashed(self.sim.tick + 1, [], error))
            return
        command = Command(TIMER, "", 0, {"name": alarm.name, "retry": alarm.retries})
        try:
            step = self.sim.step([command], now=now, ticked=False)
        except GameCrashed as crash:
            self.sim.rollback(checkpoint)
            error = exception_text(crash.error, 300)
            updated = alarm_math.failed_attempt(alarm, now, error, self.config.alarm_max_retries, self._rng.random())
            self.log.warning("alarm %r raised (attempt %d): %s", alarm.name, updated.retries, error)
            if updated.failed:
                self.log.error("alarm %r failed for good after %d attempts", alarm.name, updated.retries)
                self.metrics.alarms_failed.inc()
            else:
                self.metrics.alarm_retries.inc()
            self._set_alarm(alarm.name, updated)
            self._flush_alarms()
            return
        if not step.applied:  # the game had deleted it: a stale entry, and a step that did nothing
            self.sim.rollback(checkpoint)  # (its tick is not committed: kept, it would leave a hole in the log)
            self._set_alarm(alarm.name, None)
            return
        self.metrics.alarms_fired.inc()
        self.metrics.alarm_lateness.observe(max(now - alarm.due, 0.0))
        await self._finish_step(step, [])

    async def _step(self, commands: list[Command], *, ticked: bool, now: float) -> None:
        sim = self.sim
        try:
            step = sim.step(commands, now=now, ticked=ticked)
        except GameCrashed as crash:
            await self._crashed(crash)
            return
        await self._finish_step(step, self._take_arriving())

    async def _finish_step(self, step: Step, arriving: list[Connection]) -> None:
        """Commit a completed step, then send what it produced (the output gate)."""
        sim = self.sim
        try:
            record = step_record(sim, step, self.meta.snapshot_every)
            if record.events or record.kv_writes:
                canonical.encode([record.events, record.kv_writes])  # game data must be JSON: caught before commit
        except (TypeError, ValueError, RecursionError) as error:
            await self._crashed(GameCrashed(step.tick, step.applied, error), arriving)
            return
        duration = None
        if step.started:
            try:
                duration = checked_seconds(self.game.duration(sim.params), "duration")
            except Exception as error:
                await self._crashed(GameCrashed(step.tick, step.applied, error), arriving)
                return
        now = step.at
        for name, alarm in record.alarm_writes:  # the game's own alarm and timers
            self._set_alarm(name, alarm)
        if step.started:
            self._set_alarm(LOBBY, None)
            self.status = RUNNING
            self.meta = attrs.evolve(self.meta, status=RUNNING, started_at=now)
            if duration is not None:
                self._set_alarm(END, now + duration)
        if record.status is not None:
            for name in list(self.alarms):
                self._set_alarm(name, None)
            if self.config.retention_days > 0:
                self._set_alarm(RETENTION, now + self.config.retention_days * 86400.0)
        record.alarm_writes, self._alarm_writes = self._alarm_writes, []
        record.next_alarm_at = alarm_math.earliest(self.alarms.values())
        try:
            await self._commit(record)
        except BaseException:  # the storage failed (or the actor is cancelled): the joiners are refused
            self._arriving = arriving + self._arriving
            raise
        self._schedule_alarm(self.match_id, record.next_alarm_at)  # (`_report_alarm`, computed above)
        if record.snapshot is not None:
            self._snapshot_tick = record.tick
        self.metrics.inputs.inc(sum(1 for c in step.applied if c.kind == INPUT))
        # Output gate: everything below reflects committed writes only.
        try:
            self._send_step(step, record.events, arriving)
        except GameCrashed as crash:  # `view` or `audience` raised: the step is committed, the crash is the next
            await self._crashed(crash, arriving)
            return
        if record.status is not None:
            self.status, self.status_reason = record.status, record.status_reason
            self.meta = attrs.evolve(self.meta, status=record.status, ended_at=now, result=record.result)
            self.metrics.matches_finished.labels(record.status).inc()
            self.log.info("match %s at tick %d: %s", record.status, step.tick, record.result)
            self._stop_code, self._stop_reason = protocol.CLOSE_NORMAL, f"match {record.status}"
            self._tell("finished")
            return
        if step.started:
            self._tell("started")
        if self.sim.started and any(c.kind == LEAVE for c in step.applied):
            self._tell("left")

    def _tell(self, kind: str) -> None:
        sim = self.sim
        self._notify(MatchNotice(self.match_id, kind, self.status, self.status_reason, tuple(sim.seated),
                                 None if sim.roster is None else tuple(sim.roster), self.game.backfill,
                                 self.game.max_players, self.meta.labels))

    async def _commit(self, record: StepRecord) -> None:
        started = trio.current_time()
        store = self.store
        if self.config.synchronous == "FULL" or store.restarts_wal:  # a commit that syncs: not on the loop
            await self._offload(store.commit_step, record, self.wall_clock())
        else:
            store.commit_step(record, self.wall_clock())
        self.metrics.commit.observe(trio.current_time() - started)
        self._commits_to_checkpoint -= 1
        if self._commits_to_checkpoint <= 0:
            self._commits_to_checkpoint = storage.CHECKPOINT_EVERY_COMMITS
            self._checkpoint(store)

    def _drain(self) -> list[Command]:
        """This step's commands, in arrival order; join requests go to `_arriving`."""
        commands: list[Command] = []
        while True:
            try:
                item = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            if isinstance(item, RosterChange):
                commands += [Command(RELEASE if item.release else RESERVE, p) for p in item.players]
                self._roster_done.append(item.done)
                continue
            conn = item.conn
            if isinstance(item, InputMessage):
                if self.connections.get(conn.id) is conn:
                    commands.append(Command(INPUT, conn.player, item.input.seq, item.input.data))
            elif isinstance(item, JoinRequest):
                self._arriving.append(conn)
                if conn.role == PLAYER:
                    commands.append(Command(JOIN, conn.player))
            elif self.connections.get(conn.id) is conn:  # LeaveRequest
                if conn.role == PLAYER:
                    commands.append(Command(LEAVE, conn.player))
                    self._set_alarm(grace_name(conn.player), None)
                self._detach(conn, left=True)
        # Closed connections go last, so the inputs they sent before closing still count.
        gone, self._gone = self._gone, []
        for conn in gone:
            self._detach(conn)
            if conn in self._arriving:
                self._arriving.remove(conn)
                conn.refuse(protocol.CLOSE_NORMAL, "closed")
        # Spectators past a cap already are refused now: a flood of them on a full match costs no
        # step (the cap is checked again as each one is attached).
        if self._arriving:
            waiting = []
            for conn in self._arriving:
                refusal = self._spectator_refusal(conn)
                if refusal is None:
                    waiting.append(conn)
                else:
                    conn.refuse(protocol.CLOSE_TRY_AGAIN, refusal)
            self._arriving = waiting
        return commands

    def _roster_committed(self) -> None:
        done, self._roster_done = self._roster_done, []
        for event in done:
            event.set()

    def _take_arriving(self) -> list[Connection]:
        arriving, self._arriving = self._arriving, []
        return arriving

    # -- alarms -------------------------------------------------------------------------------

    def _set_alarm(self, name: str, alarm: Alarm | float | None) -> None:
        """Set (a due time or an Alarm) or delete an alarm; committed with the next step or flush."""
        if isinstance(alarm, (int, float)):
            alarm = Alarm(name, float(alarm))
        if alarm is None and name not in self.alarms:
            return
        if alarm is None:
            del self.alarms[name]
        else:
            self.alarms[name] = alarm
        self._alarm_writes.append((name, alarm))

    def _flush_alarms(self) -> None:
        """Commit alarm changes that no step carried (a drop, a reconnect, a failed attempt), and the
        connections opened (with their attachments) and closed since the last flush."""
        if (self._alarm_writes or self._connection_writes) and not self.over:
            writes = self._connection_writes
            self.store.write_alarms(self._alarm_writes, alarm_math.earliest(self.alarms.values()),
                                    connections_added=[c.row() for c in writes.values() if c is not None],
                                    connections_removed=[i for i, c in writes.items() if c is None])
            self._alarm_writes = []
            self._connection_writes = {}
            self._report_alarm()

    def _report_alarm(self) -> None:
        self._schedule_alarm(self.match_id, alarm_math.earliest(self.alarms.values()))

    def _next_due_mono(self) -> float:
        due = alarm_math.earliest(self.alarms.values())
        if due is None:
            return math.inf
        return trio.current_time() + (due - self.wall_clock())

    def _after_connections(self, now: float) -> None:
        if not self.over:
            self._check_empty(now)
            self._flush_alarms()

    def _check_empty(self, now: float) -> None:
        """A running match with no player connected gets its empty alarm; a connection cancels it."""
        timeout = self.game.empty_timeout_s
        if self.by_player:
            self._set_alarm(EMPTY, None)
            if self.paused:
                self.paused = False
                self.log.info("a player is back: resumed")
        elif self.status == RUNNING and timeout is not None and not self.paused and EMPTY not in self.alarms:
            self._set_alarm(EMPTY, now + timeout)

    # -- hibernation --------------------------------------------------------------------------

    def _hibernate(self) -> None:
        """Leave memory: snapshot (so waking needs no re-simulation), hand connections to the node."""
        if self._snapshot_tick != self.sim.tick:
            try:
                snapshot = snapshot_of(self.sim)
            except (TypeError, ValueError, RecursionError) as error:
                raise GameCrashed(self.sim.tick + 1, [], error) from error
            self.store.write_snapshot(snapshot)
        self.hibernated = True
        self.metrics.hibernations.inc()
        # Handed over now, synchronously: a message arriving from here on wakes a new actor, which
        # must find these connections with the node.
        self._on_hibernate(self.match_id, list(self.connections.values()))
        self.log.debug("hibernating at tick %d with %d connections", self.sim.tick, len(self.connections))

    # -- output -------------------------------------------------------------------------------

    def _send_step(self, step: Step, events: list[tuple[str, Any]], arriving: list[Connection]) -> None:
        sim = self.sim
        frames: dict[tuple[Hashable, str], str | bytes] = {}
        acks_json = canonical.encode(sim.last_seq)
        encoded: dict[str, list[str | bytes] | None] = {}

        def event_frames(fmt: str) -> list[str | bytes] | None:  # encoded once per format, only if someone needs it
            if fmt not in encoded:
                encoded[fmt] = protocol.event_frames(((step.tick, kind, data) for kind, data in events), fmt)
            return encoded[fmt]

        for conn in list(self.connections.values()):
            event_texts = event_frames(conn.fmt) if events else ()
            state = self._state_frame(frames, conn, step.tick, acks_json)
            if event_texts is None or state is None:
                conn.close(protocol.CLOSE_UNSENDABLE, protocol.UNSENDABLE_REASON)
                continue
            for frame in event_texts:
                conn.send(frame)
            conn.offer_state(state)
        for rejection in step.rejected:
            command = rejection.command
            if rejection.code == "duplicate" or command.kind != INPUT:
                continue  # a duplicate's acknowledgement is in every state frame; joins are answered below
            self.metrics.inputs_rejected.labels(rejection.code).inc()
            target = self.by_player.get(command.player)
            if target is not None:
                target.send(protocol.encode_server(protocol.error_frame(
                    rejection.code, rejection.message, command.seq), target.fmt))
        refused = {r.command.player: r for r in step.rejected if r.command.kind == JOIN}
        for conn in arriving:
            if conn.role == PLAYER and conn.player not in sim.seated:
                rejection = refused.get(conn.player)
                reason = rejection.message if rejection else "not seated"
                conn.refuse(protocol.CLOSE_JOIN_REFUSED, reason)
                continue
            refusal = self._spectator_refusal(conn)
            if refusal is not None:
                conn.refuse(protocol.CLOSE_TRY_AGAIN, refusal)
                continue
            welcome = self._welcome(conn)
            if conn.resume_tick is not None:
                event_texts = protocol.event_frames(
                    self.store.latest_events_after(conn.resume_tick, self.config.events_on_resume), conn.fmt)
            else:
                event_texts = event_frames(conn.fmt) if events else []
            if welcome is None or event_texts is None:
                conn.refuse(protocol.CLOSE_UNSENDABLE, protocol.UNSENDABLE_REASON)
                continue
            self._attach(conn)
            conn.send(welcome)
            for frame in event_texts:
                conn.send(frame)
            conn.admit()

    def _view(self, audience: Hashable) -> Any:
        return canonical.converter.unstructure(self.game.view(self.sim.state, audience))

    def _audience(self, conn: Connection) -> Hashable:
        if self._shared_view:
            return None
        return self.game.audience(self.sim.state, conn.player if conn.role == PLAYER else None)

    def _output_crashed(self, error: Exception) -> GameCrashed:
        """`view` or `audience` raised, or gave what cannot be sent, after the step was committed:
        the crash is recorded as the next step's, with no commands."""
        return GameCrashed(self.sim.tick + 1, [], error)

    def _state_frame(self, cache: dict, conn: Connection, tick: int, acks_json: bytes) -> str | bytes | None:
        """The state frame of `conn`'s audience in its format (made once per tick for each); None if
        msgpack cannot carry the state (see `protocol.encode_game_data`)."""
        try:
            audience = self._audience(conn)
            key = (audience, conn.fmt)
            frame = cache.get(key, _UNMADE)
            if frame is not _UNMADE:
                return frame
            if conn.fmt == protocol.JSON:
                state_json = self.sim.canonical() if self._shared_view else canonical.encode(self._view(audience))
                frame = protocol.state_frame_json(tick, acks_json, state_json)
            else:
                view = self._view(audience)
                if not self._shared_view:
                    canonical.encode(view)  # a view is JSON data whatever the format (NaN: not sendable to all)
        except Exception as error:
            raise self._output_crashed(error) from error
        if conn.fmt != protocol.JSON:
            frame = protocol.encode_game_data({"t": "state", "tick": tick, "acks": self.sim.last_seq, "state": view},
                                              conn.fmt)
        cache[key] = frame
        return frame

    def _welcome(self, conn: Connection) -> str | bytes | None:
        sim = self.sim
        try:
            view = self._view(self._audience(conn))
            canonical.encode(view)
        except Exception as error:
            raise self._output_crashed(error) from error
        return protocol.encode_game_data({
            "t": "welcome", "match": self.match_id, "player": conn.player, "role": conn.role,
            "game": self.game.name, "tick_rate": self.game.tick_rate, "tick": sim.tick, "status": self.status,
            "last_seq": sim.last_seq.get(conn.player, 0), "acks": dict(sim.last_seq), "limits": self._limits,
            "state": view}, conn.fmt)

    # -- connections --------------------------------------------------------------------------

    def _spectator_refusal(self, conn: Connection) -> str | None:
        """Why a spectator connection cannot join now (close 1013: a seat may free up), or None."""
        if conn.role == PLAYER:
            return None  # one connection per player: a newer one replaces the older (4009)
        config = self.config
        if self.spectators >= config.max_spectators:
            return f"the match has {config.max_spectators} spectators, its most: try again later"
        if self._spectating.get(conn.player, 0) >= config.max_spectator_connections:
            return (f"{config.max_spectator_connections} spectator connections of this player are open, "
                    f"the most: try again later")
        return None

    def _attach(self, conn: Connection) -> None:
        if conn.role == PLAYER:
            previous = self.by_player.get(conn.player)
            if previous is not None and previous is not conn:
                previous.close(protocol.CLOSE_REPLACED, "replaced by a newer connection")
                if self.connections.pop(previous.id, None) is not None:
                    self._connection_writes[previous.id] = None
            self.by_player[conn.player] = conn
            self._set_alarm(grace_name(conn.player), None)
        elif conn.id not in self.connections:
            self.spectators += 1
            self._spectating[conn.player] = self._spectating.get(conn.player, 0) + 1
        self.connections[conn.id] = conn
        self._connection_writes[conn.id] = conn

    def _detach(self, conn: Connection, left: bool = False) -> None:
        if self.connections.pop(conn.id, None) is not None:
            self._connection_writes[conn.id] = None
            if conn.role != PLAYER:
                self.spectators -= 1
                left_open = self._spectating.pop(conn.player) - 1
                if left_open:
                    self._spectating[conn.player] = left_open
        if self.by_player.get(conn.player) is conn:
            del self.by_player[conn.player]
            if not left and conn.player in self.sim.seated and not self.over:
                self._set_alarm(grace_name(conn.player), self.wall_clock() + self.game.reconnect_grace_s)

    def _close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections.values()):
            conn.close(code, reason)
            self.connections.pop(conn.id, None)
        self.by_player.clear()
        self.spectators = 0
        self._spectating.clear()

    def _refuse_waiting(self) -> None:
        """Answer every connection still waiting to join: the match is gone (or hibernating: the
        endpoint asks the node again)."""
        code = protocol.CLOSE_MATCH_OVER if self.over else self._stop_code
        for conn in self._arriving:
            if not conn.admitted.is_set():
                conn.refuse(code, f"match is {self.status}")
        self._arriving = []
        self._roster_committed()  # changes a failed step carried: not applied, the caller looks again
        while True:
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                return
            if isinstance(item, JoinRequest):
                item.conn.refuse(code, f"match is {self.status}")
            elif isinstance(item, RosterChange):
                item.done.set()  # not applied: the caller looks at the match again

    # -- failures -----------------------------------------------------------------------------

    async def _crashed(self, crash: GameCrashed, arriving: Iterable[Connection] = ()) -> None:
        """Game code raised: the match ends `crashed`. `arriving`: the step's joiners, taken from the
        inbox already; those not admitted yet are refused with the others still waiting."""
        self._arriving = [c for c in arriving if not c.admitted.is_set()] + self._arriving
        reason = exception_text(crash.error)
        self.log.error("game code crashed at tick %d", crash.tick, exc_info=crash.error)
        now = self.wall_clock()
        for name in list(self.alarms):
            self._set_alarm(name, None)
        if self.config.retention_days > 0:
            self._set_alarm(RETENTION, now + self.config.retention_days * 86400.0)
        # Clients learn that game code failed, not the exception text (it is in the match file and the log).
        public = {"status": CRASHED, "reason": "game code raised an exception"}
        record = StepRecord(crash.tick, crash.applied, None, [("end", public)], status=CRASHED, status_reason=reason,
                            at=now, alarm_writes=self._alarm_writes,
                            next_alarm_at=alarm_math.earliest(self.alarms.values()))
        self._alarm_writes = []
        await self._commit(record)
        self._report_alarm()
        self.status, self.status_reason = CRASHED, reason
        self.metrics.matches_finished.labels(CRASHED).inc()
        frame = {"t": "event", "tick": crash.tick, "kind": "end", "data": public}
        for conn in self.connections.values():
            conn.send(protocol.encode_server(frame, conn.fmt))
        self._stop_code, self._stop_reason = protocol.CLOSE_MATCH_CRASHED, "match crashed"
        self._tell("finished")

    def _fail(self, error: sqlite3.Error | OSError | MatchFileError) -> None:
        """A write or read of the match file failed: the match stops here. Nothing of the step that
        failed was committed or sent (output gate), so every acknowledged input stays in the file.

        A storage error (full disk, read-only, I/O) is recorded in the file if the storage still
        lets us (`failure_recorded`); a damaged file is not written to at all."""
        storage_error = is_storage_error(error)
        what = "storage error" if storage_error else "match file damaged"
        reason = f"{what}: {type(error).__name__}: {error}"[:500]
        self.log.error("match failed at tick %d: %s", self.sim.tick, reason)
        self.status, self.status_reason = FAILED, reason
        self.metrics.matches_finished.labels(FAILED).inc()
        if storage_error:
            try:
                self.store.set_status(FAILED, self.status_reason, self.wall_clock())
                self.failure_recorded = True
            except (sqlite3.Error, OSError) as again:
                self.log.error("could not record the failure in the match file either: %s", again)
        self._stop_code, self._stop_reason = protocol.CLOSE_INTERNAL, f"match failed: {what}"
        self._tell("finished")

