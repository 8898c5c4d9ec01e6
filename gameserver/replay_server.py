"""Replay streams, the trio shell: a connection's messages and trio's clock into `replay_stream`
(what to send, and when), the match file through `replay_source` in a worker thread, frames out.

One task per stream reads the client's frames through its `ReplaySession` into a bounded queue
(a client that sends faster than the stream takes them waits: TCP pushes back); the stream's
own task is the only one that sends, so frames never interleave. At most `limit` streams run in
a process; past it a new one is closed with 1013 at once. The transport is any object with
`receive`, `send` and `close` (the HTTP server's WebSocket: matchmaker/replay_api.py; tests use
memory channels). See docs/replay.md, "Watching a replay".
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from . import protocol, tokens
from .game import Game
from .ids import InvalidId, check_match_id
from .replay_source import ReplayFailed, ReplaySource, Unavailable
from .replay_stream import (
    Announce,
    Apply,
    Authenticate,
    Close,
    Deliver,
    Fetch,
    Frame,
    Limits,
    Pause,
    Play,
    Playback,
    ReplaySession,
    Seek,
    Send,
    Speed,
    Wait,
    replay_frame,
)
from .simulation import GameCrashed
from .storage import match_path

log = logging.getLogger("arbiter.replay")

ADMIN = "admin"
CLOSING_POLL_S = 0.5  # a stream waiting for its client looks this often whether the server is stopping


class TransportClosed(Exception):
    """The client went away (or the connection broke)."""


class Transport(Protocol):
    async def receive(self) -> str | bytes:
        """The next frame; raises `TransportClosed` when the client is gone."""

    async def send(self, text: str) -> None:
        """Send a text frame; raises `TransportClosed`."""

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and a reason (never raises)."""


@attrs.frozen
class ReplayConfig:
    limit: int = 32  # replay streams at once in this process; past it: close 1013
    limits: Limits = Limits()
    send_timeout_s: float = 10.0  # one frame not taken by the client this long: close 4010
    queue: int = 16  # client messages read ahead of the stream


class Refused(Exception):
    """The stream cannot go on: close with `code` and `reason`."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_token(token: str, match_id: str, *, secret: bytes, admin_token: str | None, now: float) -> str:
    """Who may watch: the admin token (when the server has one) or a join token of this match, not
    expired. Returns `ADMIN` or the token's role. Raises `Refused` (4001)."""
    if admin_token is not None and hmac.compare_digest(token.encode(), admin_token.encode()):
        return ADMIN
    try:
        grant = tokens.verify(secret, token, now)
    except tokens.TokenError as error:
        raise Refused(protocol.CLOSE_AUTH_FAILED, str(error)) from None
    if grant.match_id != match_id:
        raise Refused(protocol.CLOSE_AUTH_FAILED, "the token is for another match")
    return grant.role


async def _inline(function: Callable[..., Any], *args: Any) -> Any:
    return function(*args)


class ReplayStreams:
    """Every replay stream of one process, and the limit on how many run at once."""

    def __init__(self, data_dir: Path, games: dict[str, Game], secret: bytes, *, admin_token: str | None = None,
                 wall_clock: Callable[[], float], closing: Callable[[], bool] = lambda: False,
                 config: ReplayConfig = ReplayConfig(), offload: bool = True):
        """`wall_clock` checks token expiry (pacing uses trio's clock); `closing()` true: the server
        is stopping, streams close with 1001. `offload`: read and re-simulate in worker threads, off
        the event loop the live matches tick on (tests under MockClock turn it off)."""
        self.data_dir = data_dir
        self.games = games
        self.secret = secret
        self.admin_token = admin_token
        self.wall_clock = wall_clock
        self.closing = closing
        self.config = config
        self.active = 0
        self._offload: Callable[..., Awaitable[Any]] = trio.to_thread.run_sync if offload else _inline

    async def serve(self, match_id: str, transport: Transport) -> None:
        """Run one stream to its end. Never raises for anything the client or the file did."""
        if self.active >= self.config.limit:
            await transport.close(protocol.CLOSE_TRY_AGAIN, f"too many replay streams ({self.config.limit}); "
                                                            "try again later")
            return
        self.active += 1
        try:
            session = ReplaySession(trio.current_time(), self.config.limits)
            send, inbox = trio.open_memory_channel[Any](self.config.queue)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, transport, session, send, nursery.cancel_scope)
                try:
                    await self._stream(match_id, transport, session, inbox)
                except Refused as refused:
                    await transport.close(refused.code, refused.reason)
                except TransportClosed:
                    pass
                nursery.cancel_scope.cancel()
        finally:
            self.active -= 1

    async def _read(self, transport: Transport, session: ReplaySession, send: trio.MemorySendChannel,
                    scope: trio.CancelScope) -> None:
        try:
            while True:
                frame = await transport.receive()
                for action in session.receive(frame, trio.current_time()):
                    await send.send(action)
        except TransportClosed:
            scope.cancel()  # the client is gone: nobody to stream to

    async def _send(self, transport: Transport, text: str) -> None:
        with trio.move_on_after(self.config.send_timeout_s):
            await transport.send(text)
            return
        raise Refused(protocol.CLOSE_SLOW_CONSUMER, "slow consumer")

    async def _send_frame(self, transport: Transport, frame: dict[str, Any]) -> None:
        await self._send(transport, protocol.encode_server(frame, protocol.JSON))

    async def _stream(self, match_id: str, transport: Transport, session: ReplaySession,
                      inbox: trio.MemoryReceiveChannel) -> None:
        role = await self._authenticate(match_id, transport, inbox)
        try:
            path = match_path(self.data_dir, check_match_id(match_id))
        except InvalidId as error:
            raise Refused(protocol.CLOSE_MATCH_NOT_FOUND, f"no match {match_id[:40]}: {error}") from None
        if not path.exists():
            raise Refused(protocol.CLOSE_MATCH_NOT_FOUND, f"no match {match_id}")
        unusable = Refused(protocol.CLOSE_MATCH_NOT_FOUND, f"match {match_id} cannot be replayed")
        try:
            source = await self._offload(ReplaySource.open, path, self.games)
        except Unavailable as error:
            log.warning("replay of %s refused: %s", match_id, error)
            raise unusable from None
        try:
            if role == tokens.PLAYER and not source.finished:
                raise Refused(protocol.CLOSE_AUTH_FAILED, "a player token watches its match's replay only once "
                                                          "the match is over")
            try:  # a file that cannot even give what the stream starts with is unusable (4004), not failed
                players, first = await self._offload(source.start)
            except ReplayFailed as error:
                log.warning("replay of %s refused: %s", match_id, error.__cause__)
                raise unusable from None
            log.info("replay of %s: streaming (%s token)", match_id, role)
            await self._play(match_id, source, players, first, transport, session, inbox)
        except ReplayFailed as error:
            # The file's fault (damaged, diverging): its reason says it all. Game code that raised: its traceback.
            cause = error.__cause__
            log.error("replay of %s failed: %s", match_id, cause,
                      exc_info=cause if isinstance(cause, GameCrashed) else None)
            raise Refused(protocol.CLOSE_INTERNAL, str(error)) from None
        finally:
            source.close()

    async def _authenticate(self, match_id: str, transport: Transport, inbox: trio.MemoryReceiveChannel) -> str:
        with trio.move_on_after(self.config.limits.auth_timeout_s):
            while True:
                action = await inbox.receive()
                if isinstance(action, Send):
                    await self._send_frame(transport, action.frame)
                elif isinstance(action, Close):
                    raise Refused(action.code, action.reason)
                elif isinstance(action, Authenticate):
                    return check_token(action.token, match_id, secret=self.secret, admin_token=self.admin_token,
                                       now=self.wall_clock())
        raise Refused(protocol.CLOSE_AUTH_TIMEOUT, "no auth message in time")

    async def _play(self, match_id: str, source: ReplaySource, players: list[str], first: Frame,
                    transport: Transport, session: ReplaySession, inbox: trio.MemoryReceiveChannel) -> None:
        meta = source.meta
        await self._send_frame(transport, replay_frame(
            match=match_id, game=meta.game, game_version=meta.game_version, tick_rate=meta.tick_rate,
            status=meta.status, last_tick=meta.tick, finished=source.finished, players=players,
            result=meta.result))
        playback = Playback(trio.current_time(), tick_rate=meta.tick_rate, tick=first.tick, at=first.at,
                            last_tick=source.last_tick, finished=source.finished)
        await self._send_frame(transport, playback.status())
        for text in first.texts:
            await self._send(transport, text)
        while True:
            if self.closing():
                raise Refused(protocol.CLOSE_GOING_AWAY, "server shutting down")
            now = trio.current_time()
            step = playback.next(now)
            if isinstance(step, Deliver):
                for text in step.frame.texts:
                    await self._send(transport, text)
                playback.delivered(step.frame, trio.current_time())
            elif isinstance(step, Announce):
                await self._send_frame(transport, step.frame)
            elif isinstance(step, Fetch):
                frames = await self._offload(source.advance, step.count)
                moved = playback.feed(frames, source.last_tick, source.finished, trio.current_time())
                if moved is not None:
                    await self._send_frame(transport, moved.frame)
            else:
                assert isinstance(step, Wait)
                deadline = now + CLOSING_POLL_S if step.until is None else min(step.until, now + CLOSING_POLL_S)
                action = None
                with trio.move_on_at(deadline):
                    action = await inbox.receive()
                if action is not None:  # acted on outside the deadline's scope: a send is never cut short
                    await self._act(action, source, playback, transport, session)

    async def _act(self, action: Any, source: ReplaySource, playback: Playback, transport: Transport,
                   session: ReplaySession) -> None:
        if isinstance(action, Send):
            await self._send_frame(transport, action.frame)
            return
        if isinstance(action, Close):
            raise Refused(action.code, action.reason)
        if not isinstance(action, Apply):
            return  # a second Authenticate cannot come: the session answers it with an error
        control, now = action.control, trio.current_time()
        if isinstance(control, Play):
            playback.play(now)
        elif isinstance(control, Pause):
            playback.pause(now)
        elif isinstance(control, Speed):
            playback.set_speed(control.speed, now)
        elif isinstance(control, Seek):
            if control.tick > playback.last_tick and not playback.finished:
                await self._offload(source.refresh)  # a live match: its end may have moved
                playback.last_tick = source.last_tick
            if control.tick > playback.last_tick:
                for answer in session.error("out_of_range", f"tick must be from 0 to {playback.last_tick}, "
                                                            f"got {control.tick}", now):
                    await self._act(answer, source, playback, transport, session)
                return
            frame = await self._offload(source.seek, control.tick)
            playback.restored(frame, source.last_tick, source.finished, trio.current_time())
            await self._send_frame(transport, playback.status())
            for text in frame.texts:
                await self._send(transport, text)
            return
        await self._send_frame(transport, playback.status())


