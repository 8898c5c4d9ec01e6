"""Watching a recorded match, sans-IO: the control messages, the session, and the playback's pacing.

A replay stream plays a match file to a client as if it were live: `state` and `event` frames in
the live protocol's shape (docs/protocol.md), paced by the match's tick rate times the speed,
with play, pause, speed and seek. This module decides what happens and when; it reads no clock
(time is an argument), no file and no socket. The trio shell is `replay_server.py`, the file
reader `replay_source.py`. See docs/replay.md, "Watching a replay".

    ReplaySession: awaiting_auth --auth--> watching --close--> closed
    Playback: which frame goes out next, and at what time
"""

from __future__ import annotations

import json
import math
from collections import deque
from typing import Any

import attrs

from . import protocol
from .protocol import ProtocolError
from .ratelimit import TokenBucket

MIN_SPEED = 0.5
MAX_SPEED = 8.0
MAX_CONTROL_BYTES = 4096  # a control frame; past it: close 1009
MAX_LAG_S = 0.25  # a frame sent this much later than its time: the pacing starts again from it (no burst)
READ_AHEAD_S = 0.5  # frames are read from the file in chunks covering this much playback time
MAX_READ_AHEAD = 64  # ...and at most this many steps
TURN_GAP_S = (0.0, 2.0)  # a turn-based game's steps are paced by their recorded times, gaps capped to 2 s
UNKNOWN_GAP_S = 0.5  # between steps of a turn-based game with no recorded time
LIVE_POLL_S = 0.5  # at the end of an unfinished match: look for new ticks this often
EPSILON_S = 1e-9  # due times are sums of float gaps: a frame this close to due is due

AWAITING_AUTH = "awaiting_auth"
WATCHING = "watching"
CLOSED = "closed"


# -- client messages -------------------------------------------------------------------------------

@attrs.frozen
class Auth:
    token: str


@attrs.frozen
class Play:
    pass


@attrs.frozen
class Pause:
    pass


@attrs.frozen
class Speed:
    speed: float


@attrs.frozen
class Seek:
    tick: int


@attrs.frozen
class Ping:
    id: Any = None


Control = Play | Pause | Speed | Seek
Message = Auth | Control | Ping
TYPES = ("auth", "play", "pause", "speed", "seek", "ping")


def decode(frame: str | bytes) -> Message:
    """One client frame (a JSON text frame). Raises `ProtocolError`: `bad_frame` for anything that
    is not a message, `out_of_range` for a speed outside 0.5 to 8."""
    if not isinstance(frame, str):
        raise ProtocolError("bad_frame", "a replay stream speaks JSON text frames")
    try:
        body = json.loads(frame)
    except (ValueError, RecursionError):
        raise ProtocolError("bad_frame", "a frame is one JSON object") from None
    if not isinstance(body, dict):
        raise ProtocolError("bad_frame", "a frame is an object with a type field 't'")
    kind = body.get("t")
    if kind not in TYPES:
        raise ProtocolError("bad_frame", f"t must be one of {', '.join(TYPES)}")
    if kind == "auth":
        _only(body, {"t", "token"})
        token = body.get("token")
        if not isinstance(token, str) or not 1 <= len(token) <= protocol.MAX_TOKEN_CHARS:
            raise ProtocolError("bad_frame", "auth needs a token string")
        return Auth(token)
    if kind == "speed":
        _only(body, {"t", "speed"})
        speed = body.get("speed")
        if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not math.isfinite(speed):
            raise ProtocolError("bad_frame", "speed is a number")
        if not MIN_SPEED <= speed <= MAX_SPEED:
            raise ProtocolError("out_of_range", f"speed must be from {MIN_SPEED} to {MAX_SPEED:g}, got {speed:g}")
        return Speed(float(speed))
    if kind == "seek":
        _only(body, {"t", "tick"})
        tick = body.get("tick")
        if isinstance(tick, bool) or not isinstance(tick, int) or not 0 <= tick <= protocol.MAX_SEQ:
            raise ProtocolError("bad_frame", f"tick must be an integer from 0 to {protocol.MAX_SEQ}")
        return Seek(tick)
    if kind == "ping":
        _only(body, {"t", "id"})
        ping_id = body.get("id")
        if ping_id is not None and not (
            (isinstance(ping_id, (int, float)) and not isinstance(ping_id, bool) and abs(ping_id) <= protocol.MAX_SEQ)
            or (isinstance(ping_id, str) and len(ping_id) <= protocol.MAX_PING_ID_CHARS)
        ):
            raise ProtocolError("bad_frame", f"a ping id is a number or a string of at most "
                                             f"{protocol.MAX_PING_ID_CHARS}")
        return Ping(ping_id)
    _only(body, {"t"})
    return Play() if kind == "play" else Pause()


def _only(body: dict, allowed: set[str]) -> None:
    extra = body.keys() - allowed
    if extra:
        raise ProtocolError("bad_frame", f"unknown fields: {', '.join(sorted(map(str, extra)))[:100]}")


# -- the session: frames and time in, actions out ---------------------------------------------------

@attrs.frozen
class Send:
    frame: dict[str, Any]


@attrs.frozen
class Close:
    code: int
    reason: str


@attrs.frozen
class Authenticate:
    token: str


@attrs.frozen
class Apply:
    control: Control


Action = Send | Close | Authenticate | Apply


@attrs.frozen
class Limits:
    control_rate: float = 20.0  # controls a second, sustained (a seek re-simulates up to a snapshot interval)
    control_burst: float = 40.0
    error_rate: float = 2.0  # error frames a second, sustained, before the stream is closed with 1008
    error_burst: float = 20.0
    auth_timeout_s: float = 10.0


class ReplaySession:
    """One replay connection's protocol state: auth first, then controls; errors within a budget."""

    def __init__(self, now: float, limits: Limits = Limits()):
        self.state = AWAITING_AUTH
        self._controls = TokenBucket(limits.control_rate, limits.control_burst, now)
        self._errors = TokenBucket(limits.error_rate, limits.error_burst, now)

    def receive(self, frame: str | bytes, now: float) -> list[Action]:
        if self.state == CLOSED:
            return []
        if len(frame) > MAX_CONTROL_BYTES:  # characters or bytes: either way far past any valid control
            return self.close(protocol.CLOSE_TOO_BIG, f"a control frame is at most {MAX_CONTROL_BYTES} bytes")
        try:
            message = decode(frame)
        except ProtocolError as error:
            return self.error(error.code, error.message, now)
        if isinstance(message, Ping):
            return [Send({"t": "pong", "id": message.id})]
        if isinstance(message, Auth):
            if self.state != AWAITING_AUTH:
                return self.error("already_authenticated", "this stream is authenticated", now)
            self.state = WATCHING
            return [Authenticate(message.token)]
        if self.state == AWAITING_AUTH:
            return self.error("not_authenticated", "send auth first", now)
        if not self._controls.take(now):
            return self.error("rate_limited", "too many controls; this one was not applied", now)
        return [Apply(message)]

    def error(self, code: str, message: str, now: float) -> list[Action]:
        """An error frame for the client, or a close with 1008 once errors come too fast."""
        if not self._errors.take(now):
            return self.close(protocol.CLOSE_POLICY, "too many errors")
        return [Send(protocol.error_frame(code, message))]

    def close(self, code: int, reason: str) -> list[Action]:
        if self.state == CLOSED:
            return []
        self.state = CLOSED
        return [Close(code, reason)]


# -- pacing -----------------------------------------------------------------------------------------

class Pacer:
    """Maps wall time to playback time (seconds of game time) at a speed, playing or paused.

    `position` is the playback time of the last frame sent; the next frame, `gap` seconds of game
    time later, is due when the playback clock reaches `position + gap`. Deadlines are absolute, so
    a frame sent a little late does not delay the next; one sent more than `MAX_LAG_S` late restarts
    the clock from it instead of sending a burst (as the live tick loop skips missed deadlines)."""

    def __init__(self, now: float, speed: float = 1.0, playing: bool = True):
        self.speed = speed
        self.playing = playing
        self.position = 0.0
        self._anchor_wall = now
        self._anchor_media = 0.0

    def media(self, now: float) -> float:
        if not self.playing:
            return self._anchor_media
        return self._anchor_media + (now - self._anchor_wall) * self.speed

    def due(self, gap: float) -> float | None:
        """When the next frame is due (wall time); None while paused."""
        if not self.playing:
            return None
        return self._anchor_wall + (self.position + gap - self._anchor_media) / self.speed

    def sent(self, now: float, gap: float) -> None:
        due = self.due(gap)
        self.position += gap
        if due is not None and now - due > MAX_LAG_S:
            self._anchor(now, self.position)

    def pause(self, now: float) -> None:
        if self.playing:
            self._anchor(now, self.media(now))
            self.playing = False

    def play(self, now: float) -> None:
        if not self.playing:
            self._anchor_wall = now
            self.playing = True

    def set_speed(self, now: float, speed: float) -> None:
        self._anchor(now, self.media(now))
        self.speed = speed

    def restart(self, now: float) -> None:
        """A frame that starts the playback anew (after a seek) was sent at `now`."""
        self.position = 0.0
        self._anchor(now, 0.0)

    def _anchor(self, now: float, media: float) -> None:
        self._anchor_wall = now
        self._anchor_media = media


def step_gap(tick_rate: int, previous_at: float, at: float) -> float:
    """Seconds of game time between two steps: a tick for a real-time game; for a turn-based game
    (tick rate 0) the recorded time between them, capped to `TURN_GAP_S`."""
    if tick_rate > 0:
        return 1.0 / tick_rate
    if previous_at <= 0.0 or at <= 0.0:
        return UNKNOWN_GAP_S
    low, high = TURN_GAP_S
    return min(max(at - previous_at, low), high)


# -- the playback: which frame next, and when --------------------------------------------------------

@attrs.frozen
class Frame:
    """One step of the match as the stream sends it: its event frames, then its state frame (text)."""

    tick: int
    at: float  # the step's recorded time (0.0: unknown)
    texts: tuple[str, ...]


@attrs.frozen
class Deliver:
    """Send this frame now."""

    frame: Frame


@attrs.frozen
class Wait:
    """Nothing to send before `until` (None: before a control message arrives)."""

    until: float | None


@attrs.frozen
class Fetch:
    """Read up to `count` more steps from the file (`Playback.feed` takes them)."""

    count: int


@attrs.frozen
class Announce:
    """Send this frame (`playback`: the position changed by itself: the end, or a live match grew)."""

    frame: dict[str, Any]


Next = Deliver | Wait | Fetch | Announce


class Playback:
    """A replay's position and what it waits for. The shell asks `next(now)` and does what it says."""

    def __init__(self, now: float, *, tick_rate: int, tick: int, at: float, last_tick: int, finished: bool,
                 speed: float = 1.0, playing: bool = True):
        self.tick_rate = tick_rate
        self.tick = tick  # of the last state frame sent
        self.at = at
        self.last_tick = last_tick
        self.finished = finished  # the match is over: last_tick will not grow
        self.pacer = Pacer(now, speed, playing)
        self.pending: deque[Frame] = deque()
        self._poll_at: float | None = None  # at the live edge: when to look for new ticks

    @property
    def playing(self) -> bool:
        return self.pacer.playing

    @property
    def at_end(self) -> bool:
        return not self.pending and self.tick >= self.last_tick

    def next(self, now: float) -> Next:
        if self.pending:
            frame = self.pending[0]
            due = self.pacer.due(step_gap(self.tick_rate, self.at, frame.at))
            if due is None or due > now + EPSILON_S:
                return Wait(due)
            return Deliver(frame)
        if not self.playing:
            return Wait(None)
        if self._poll_at is not None and now < self._poll_at:
            return Wait(self._poll_at)  # the file had nothing more a moment ago: a live match, at its end
        if self.tick < self.last_tick or not self.finished:
            return Fetch(self._chunk())
        self.pacer.pause(now)  # the end of a finished match: paused there
        return Announce(self.status())

    def _chunk(self) -> int:
        if self.tick_rate <= 0:
            return 8
        return max(1, min(MAX_READ_AHEAD, math.ceil(self.tick_rate * self.pacer.speed * READ_AHEAD_S)))

    def feed(self, frames: list[Frame], last_tick: int, finished: bool, now: float) -> Announce | None:
        """Steps read from the file after the last one fed, and what the file says now of its end.
        Returns a `playback` frame to send when the end moved (a live match went on, or finished)."""
        self.pending.extend(frames)
        moved = last_tick != self.last_tick or finished != self.finished
        self.last_tick, self.finished = last_tick, finished
        self._poll_at = None if frames else now + LIVE_POLL_S
        return Announce(self.status()) if moved else None

    def delivered(self, frame: Frame, now: float) -> None:
        self.pending.popleft()
        self.pacer.sent(now, step_gap(self.tick_rate, self.at, frame.at))
        self.tick, self.at = frame.tick, frame.at

    def restored(self, frame: Frame, last_tick: int, finished: bool, now: float) -> None:
        """After a seek: `frame` (the state at the tick sought) is sent now; playing goes on after it."""
        self.pending.clear()
        self.tick, self.at = frame.tick, frame.at
        self.last_tick, self.finished = last_tick, finished
        self._poll_at = None
        self.pacer.restart(now)

    def play(self, now: float) -> None:
        if not (self.finished and self.at_end):  # at the end of a finished match there is nothing to play
            self.pacer.play(now)

    def pause(self, now: float) -> None:
        self.pacer.pause(now)

    def set_speed(self, speed: float, now: float) -> None:
        self.pacer.set_speed(now, speed)

    def status(self) -> dict[str, Any]:
        return playback_frame(self.tick, self.playing, self.pacer.speed, self.last_tick, self.finished,
                              self.at_end and self.finished)


# -- server frames ----------------------------------------------------------------------------------

def replay_frame(*, match: str, game: str, game_version: str, tick_rate: int, status: str, last_tick: int,
                 finished: bool, players: list[str], result: Any) -> dict[str, Any]:
    """The first frame of a stream, once it is authenticated: what is being replayed."""
    return {"t": "replay", "match": match, "game": game, "game_version": game_version, "tick_rate": tick_rate,
            "status": status, "first_tick": 0, "last_tick": last_tick, "finished": finished, "players": players,
            "result": result}


def playback_frame(tick: int, playing: bool, speed: float, last_tick: int, finished: bool,
                   ended: bool) -> dict[str, Any]:
    """Where the playback is: after every control, at the end, and when a live match's end moves."""
    return {"t": "playback", "tick": tick, "playing": playing, "speed": speed, "first_tick": 0,
            "last_tick": last_tick, "finished": finished, "ended": ended}
