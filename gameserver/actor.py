"""The match actor: one trio task that does everything for its match.

At each tick it drains its inbox in arrival order, runs the simulation step, commits that
tick's commands, checksum, events and (every N ticks) a snapshot in one SQLite transaction, and
only then sends anything (output gate): welcomes, state frames carrying every player's last
processed seq (the acknowledgement), events and errors.

Inbox policy: the inbox holds `inbox_size` messages. A connection whose message does not fit
waits for room (TCP backpressure on that client alone); if none frees up within `inbox_wait_s`,
the connection is closed with 1013 and the message is not accepted. Nothing accepted into the
inbox is ever dropped, and nothing is acknowledged before it is committed.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import attrs
import msgpack
import trio

from . import canonical, protocol
from .config import NodeConfig
from .connection import Connection
from .game import Game
from .metrics import Metrics
from .simulation import INPUT, JOIN, LEAVE, Command, GameCrashed, Simulation, Step
from .records import StepRecord, step_record
from .storage import CRASHED, CREATED, ENDED, FAILED, RUNNING, MatchMeta, MatchStore
from .ticks import Schedule
from .tokens import PLAYER

if TYPE_CHECKING:
    from .protocol import Input

log = logging.getLogger("arbiter.match")

_BASE_VIEW = Game.view
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


InboxItem = JoinRequest | InputMessage | LeaveRequest


def describe_match(meta: MatchMeta, *, players: list[dict[str, Any]], connections: int, live: bool) -> dict[str, Any]:
    """A match's status as the HTTP API shows it, whether its actor is in memory or not."""
    return {"match_id": meta.match_id, "game": meta.game, "game_version": meta.game_version,
            "params": meta.params, "status": meta.status, "status_reason": meta.status_reason,
            "tick": meta.tick, "tick_rate": meta.tick_rate, "players": players, "connections": connections,
            "live": live, "created_at": meta.created_at, "started_at": meta.started_at,
            "ended_at": meta.ended_at, "result": meta.result}


class Actor:
    def __init__(self, *, game: Game, store: MatchStore, sim: Simulation, meta: MatchMeta,
                 config: NodeConfig, metrics: Metrics, wall_clock: Callable[[], float]):
        self.match_id = meta.match_id
        self.game = game
        self.store = store
        self.sim = sim
        self.meta = meta
        self.status = meta.status
        self.status_reason = meta.status_reason
        self.config = config
        self.metrics = metrics
        self.wall_clock = wall_clock
        self._send, self._receive = trio.open_memory_channel[InboxItem](config.inbox_size)
        self.connections: dict[int, Connection] = {}
        self.by_player: dict[str, Connection] = {}
        self._arriving: list[Connection] = []  # drained join requests, answered after the tick's commit
        self._gone: list[Connection] = []  # closed connections, detached at the next tick
        self.finished = trio.Event()
        self._stop = trio.Event()
        self._stop_code = protocol.CLOSE_GOING_AWAY
        self._stop_reason = "server shutting down"
        self._shared_view = type(game).view is _BASE_VIEW and type(game).audience is _BASE_AUDIENCE
        self.log = logging.LoggerAdapter(log, {"match": self.match_id})

    # -- called by connections and the node ---------------------------------------------------

    async def submit(self, item: InboxItem) -> bool:
        """Put a message in the inbox; False if it stayed full for `inbox_wait_s` (see module doc)."""
        if self.finished.is_set():
            return False
        try:
            self._send.send_nowait(item)
            return True
        except trio.WouldBlock:
            pass
        except trio.ClosedResourceError:
            return False
        with trio.move_on_after(self.config.inbox_wait_s):
            try:
                await self._send.send(item)
            except trio.ClosedResourceError:
                return False
            return True
        return False

    def disconnected(self, conn: Connection) -> None:
        """A connection closed. Never blocks and never fails: it must not depend on inbox room."""
        self._gone.append(conn)

    def stop(self, code: int = protocol.CLOSE_GOING_AWAY, reason: str = "server shutting down") -> None:
        """Finish the current tick, close every connection with `code`, leave memory."""
        self._stop_code, self._stop_reason = code, reason
        self._stop.set()

    def describe(self) -> dict[str, Any]:
        players = [{"player_id": p, "connected": p in self.by_player, "seated": True} for p in self.sim.seated]
        meta = attrs.evolve(self.meta, status=self.status, status_reason=self.status_reason, tick=self.sim.tick)
        return describe_match(meta, players=players, connections=len(self.connections), live=True)

    # -- the task -----------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            if self.status == CREATED:
                now = self.wall_clock()
                self.store.set_status(RUNNING, None, now)
                self.status = RUNNING
                self.meta = attrs.evolve(self.meta, status=RUNNING, started_at=now)
            schedule = Schedule.starting(trio.current_time(), self.game.tick_rate)
            task_status.started()
            while not self.finished.is_set():
                with trio.move_on_at(schedule.deadline()):
                    await self._stop.wait()
                if self._stop.is_set():
                    break
                started = trio.current_time()
                lateness = started - schedule.deadline()
                await self._tick()
                done = trio.current_time()
                skipped = schedule.advance(done)
                metrics = self.metrics
                metrics.ticks.inc()
                metrics.tick_duration.observe(done - started)
                metrics.tick_lateness.observe(max(lateness, 0.0))
                late = skipped + (lateness > self.config.late_threshold_s)
                if late:
                    metrics.late_ticks.inc(late)
        except (sqlite3.Error, OSError) as error:
            self._fail(f"storage error: {error}")
        finally:
            self._close_all(self._stop_code, self._stop_reason)
            self._refuse_waiting()
            self.finished.set()
            self._send.close()
            self.store.close()

    def _drain(self) -> list[Command]:
        """This tick's commands, in arrival order; join requests go to `_arriving`."""
        commands: list[Command] = []
        while True:
            try:
                item = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
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
                self._detach(conn)
        # Closed connections go last, so the inputs they sent before closing still count.
        gone, self._gone = self._gone, []
        for conn in gone:
            self._detach(conn)
            if conn in self._arriving:
                self._arriving.remove(conn)
                conn.refuse(protocol.CLOSE_NORMAL, "closed")
        return commands

    async def _tick(self) -> None:
        commands = self._drain()
        sim = self.sim
        try:
            step = sim.step(commands)
        except GameCrashed as crash:
            await self._crashed(crash)
            return
        try:
            record = step_record(sim, step, self.meta.snapshot_every)
            canonical.encode([record.events, record.kv_writes])  # game data must be JSON: caught before commit
        except (TypeError, ValueError) as error:
            await self._crashed(GameCrashed(step.tick, step.applied, error))
            return
        await self._commit(record)
        status, result, events = record.status, record.result, record.events
        self.metrics.inputs.inc(sum(1 for c in step.applied if c.kind == INPUT))
        # Output gate: everything below reflects committed writes only.
        arriving, self._arriving = self._arriving, []
        self._send_step(step, events, arriving)
        if status is not None:
            self.status = status
            self.metrics.matches_finished.labels(status).inc()
            self.log.info("match ended at tick %d: %s", step.tick, result)
            self._stop_code, self._stop_reason = protocol.CLOSE_NORMAL, "match ended"
            self.finished.set()

    async def _commit(self, record: StepRecord) -> None:
        started = trio.current_time()
        if self.config.synchronous == "FULL":
            await trio.to_thread.run_sync(self.store.commit_step, record, self.wall_clock())
        else:
            self.store.commit_step(record, self.wall_clock())
        self.metrics.commit.observe(trio.current_time() - started)

    # -- output -------------------------------------------------------------------------------

    def _send_step(self, step: Step, events: list[tuple[str, Any]], arriving: list[Connection]) -> None:
        sim = self.sim
        frames: dict[tuple[Hashable, str], str | bytes] = {}
        acks_json = canonical.encode(sim.last_seq)
        event_frames = {fmt: [protocol.encode_server({"t": "event", "tick": step.tick, "kind": k, "data": d}, fmt)
                              for k, d in events] for fmt in (protocol.JSON, protocol.MSGPACK)}
        for conn in list(self.connections.values()):
            for frame in event_frames[conn.fmt]:
                conn.send(frame)
            conn.offer_state(self._state_frame(frames, conn, step.tick, acks_json))
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
            self._attach(conn)
            conn.send(protocol.encode_server(self._welcome(conn), conn.fmt))
            if conn.resume_tick is not None:
                for tick, kind, data in self.store.latest_events_after(conn.resume_tick, self.config.events_on_resume):
                    conn.send(protocol.encode_server({"t": "event", "tick": tick, "kind": kind, "data": data},
                                                     conn.fmt))
            elif events:
                for frame in event_frames[conn.fmt]:
                    conn.send(frame)
            conn.admit()

    def _view(self, audience: Hashable) -> Any:
        return canonical.converter.unstructure(self.game.view(self.sim.state, audience))

    def _audience(self, conn: Connection) -> Hashable:
        if self._shared_view:
            return None
        return self.game.audience(self.sim.state, conn.player if conn.role == PLAYER else None)

    def _state_frame(self, cache: dict, conn: Connection, tick: int, acks_json: bytes) -> str | bytes:
        audience = self._audience(conn)
        key = (audience, conn.fmt)
        frame = cache.get(key)
        if frame is None:
            if conn.fmt == protocol.JSON:
                state_json = self.sim.canonical() if self._shared_view else canonical.encode(self._view(audience))
                frame = protocol.state_frame_json(tick, acks_json, state_json)
            else:
                frame = msgpack.packb({"t": "state", "tick": tick, "acks": self.sim.last_seq,
                                       "state": self._view(audience)}, use_bin_type=True)
            cache[key] = frame
        return frame

    def _welcome(self, conn: Connection) -> dict[str, Any]:
        sim = self.sim
        return {"t": "welcome", "match": self.match_id, "player": conn.player, "role": conn.role,
                "game": self.game.name, "tick_rate": self.game.tick_rate, "tick": sim.tick,
                "last_seq": sim.last_seq.get(conn.player, 0), "acks": dict(sim.last_seq),
                "state": self._view(self._audience(conn))}

    # -- connections --------------------------------------------------------------------------

    def _attach(self, conn: Connection) -> None:
        if conn.role == PLAYER:
            previous = self.by_player.get(conn.player)
            if previous is not None and previous is not conn:
                previous.close(protocol.CLOSE_REPLACED, "replaced by a newer connection")
                self.connections.pop(previous.id, None)
            self.by_player[conn.player] = conn
        self.connections[conn.id] = conn

    def _detach(self, conn: Connection) -> None:
        self.connections.pop(conn.id, None)
        if self.by_player.get(conn.player) is conn:
            del self.by_player[conn.player]

    def _close_all(self, code: int, reason: str) -> None:
        for conn in list(self.connections.values()):
            conn.close(code, reason)
            self._detach(conn)

    def _refuse_waiting(self) -> None:
        """Answer every connection still waiting to join: the match is gone."""
        code = protocol.CLOSE_MATCH_OVER if self.status in (ENDED, CRASHED, FAILED) else self._stop_code
        for conn in self._arriving:
            if not conn.admitted.is_set():
                conn.refuse(code, f"match is {self.status}")
        self._arriving = []
        while True:
            try:
                item = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.ClosedResourceError, trio.EndOfChannel):
                return
            if isinstance(item, JoinRequest):
                item.conn.refuse(code, f"match is {self.status}")

    # -- failures -----------------------------------------------------------------------------

    async def _crashed(self, crash: GameCrashed) -> None:
        reason = f"{type(crash.error).__name__}: {crash.error}"[:500]
        self.log.error("game code crashed at tick %d", crash.tick, exc_info=crash.error)
        record = StepRecord(crash.tick, crash.applied, None,
                            [("end", {"status": CRASHED, "reason": "game code raised an exception"})],
                            status=CRASHED, status_reason=reason)
        await self._commit(record)
        self.status, self.status_reason = CRASHED, reason
        self.metrics.matches_finished.labels(CRASHED).inc()
        # Clients learn that game code failed, not the exception text (it is in the match file and the log).
        frame = {"t": "event", "tick": crash.tick, "kind": "end",
                 "data": {"status": CRASHED, "reason": "game code raised an exception"}}
        for conn in self.connections.values():
            conn.send(protocol.encode_server(frame, conn.fmt))
        self._stop_code, self._stop_reason = protocol.CLOSE_MATCH_CRASHED, "match crashed"
        self.finished.set()

    def _fail(self, reason: str) -> None:
        self.log.error("match failed: %s", reason)
        self.status, self.status_reason = FAILED, reason[:500]
        self.metrics.matches_finished.labels(FAILED).inc()
        try:
            self.store.set_status(FAILED, self.status_reason, self.wall_clock())
        except (sqlite3.Error, OSError):
            self.log.exception("could not record the failure in the match file")
        self._stop_code, self._stop_reason = protocol.CLOSE_INTERNAL, "match failed: storage error"
