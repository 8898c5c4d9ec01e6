"""Watching a replay, the pure part: control messages, the session, pacing and the playback's decisions.
No event loop: time is an argument."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gameserver import protocol
from gameserver.protocol import ProtocolError
from gameserver.replay_stream import (
    MAX_CONTROL_BYTES,
    MAX_LAG_S,
    Announce,
    Apply,
    Auth,
    Authenticate,
    Close,
    Deliver,
    Fetch,
    Frame,
    Pacer,
    Pause,
    Ping,
    Play,
    Playback,
    ReplaySession,
    Seek,
    Send,
    Speed,
    Wait,
    decode,
    step_gap,
)


@pytest.mark.parametrize(("frame", "message"), [
    ('{"t":"auth","token":"abc"}', Auth("abc")),
    ('{"t":"play"}', Play()),
    ('{"t":"pause"}', Pause()),
    ('{"t":"speed","speed":2}', Speed(2.0)),
    ('{"t":"speed","speed":0.5}', Speed(0.5)),
    ('{"t":"speed","speed":8}', Speed(8.0)),
    ('{"t":"seek","tick":0}', Seek(0)),
    ('{"t":"seek","tick":1234}', Seek(1234)),
    ('{"t":"ping","id":7}', Ping(7)),
    ('{"t":"ping"}', Ping(None)),
])
def test_controls_decode(frame, message):
    assert decode(frame) == message


@pytest.mark.parametrize(("frame", "code", "words"), [
    (b'{"t":"play"}', "bad_frame", "JSON text frames"),
    ("not json", "bad_frame", "one JSON object"),
    ("[1]", "bad_frame", "type field"),
    ('{"t":"rewind"}', "bad_frame", "t must be one of"),
    ('{"t":"play","now":true}', "bad_frame", "unknown fields: now"),
    ('{"t":"speed"}', "bad_frame", "speed is a number"),
    ('{"t":"speed","speed":"fast"}', "bad_frame", "speed is a number"),
    ('{"t":"speed","speed":true}', "bad_frame", "speed is a number"),
    ('{"t":"speed","speed":9}', "out_of_range", "from 0.5 to 8"),
    ('{"t":"speed","speed":0.25}', "out_of_range", "from 0.5 to 8"),
    ('{"t":"speed","speed":1e999}', "bad_frame", "speed is a number"),
    ('{"t":"seek","tick":-1}', "bad_frame", "tick must be an integer"),
    ('{"t":"seek","tick":1.5}', "bad_frame", "tick must be an integer"),
    ('{"t":"seek"}', "bad_frame", "tick must be an integer"),
    ('{"t":"auth"}', "bad_frame", "token"),
    ('{"t":"ping","id":[1]}', "bad_frame", "ping id"),
])
def test_bad_controls_are_named(frame, code, words):
    with pytest.raises(ProtocolError) as error:
        decode(frame)
    assert error.value.code == code and words in error.value.message


@given(st.text(max_size=200) | st.binary(max_size=200)
       | st.dictionaries(st.text(max_size=8), st.none() | st.integers() | st.floats() | st.text(max_size=8),
                         max_size=4).map(json.dumps))
def test_any_frame_decodes_or_is_refused_with_a_code(frame):
    try:
        decode(frame)
    except ProtocolError as error:
        assert error.code in ("bad_frame", "out_of_range")


def test_session_wants_auth_first_and_answers_pings_always():
    session = ReplaySession(now=0.0)
    assert session.receive('{"t":"ping","id":"a"}', 0.0) == [Send({"t": "pong", "id": "a"})]
    [refused] = session.receive('{"t":"play"}', 0.0)
    assert refused == Send(protocol.error_frame("not_authenticated", "send auth first"))
    assert session.receive('{"t":"auth","token":"x"}', 0.0) == [Authenticate("x")]
    [again] = session.receive('{"t":"auth","token":"x"}', 0.0)
    assert again.frame["code"] == "already_authenticated"
    assert session.receive('{"t":"seek","tick":3}', 0.0) == [Apply(Seek(3))]


def test_errors_past_the_budget_close_with_1008():
    session = ReplaySession(now=0.0)
    answers = [session.receive("nope", 0.0) for _ in range(21)]
    assert all(isinstance(a[0], Send) for a in answers[:20])
    assert answers[20] == [Close(protocol.CLOSE_POLICY, "too many errors")]
    assert session.receive('{"t":"ping"}', 0.0) == []  # closed: nothing more


def test_controls_past_the_rate_are_refused():
    session = ReplaySession(now=0.0)
    session.receive('{"t":"auth","token":"x"}', 0.0)
    answers = [session.receive('{"t":"pause"}', 0.0)[0] for _ in range(41)]
    assert all(isinstance(a, Apply) for a in answers[:40])
    assert answers[40].frame["code"] == "rate_limited"
    assert session.receive('{"t":"pause"}', 1.0) == [Apply(Pause())]  # 20 a second come back


def test_an_oversized_frame_closes_with_1009():
    session = ReplaySession(now=0.0)
    [close] = session.receive(" " * (MAX_CONTROL_BYTES + 1), 0.0)
    assert close.code == protocol.CLOSE_TOO_BIG


# -- pacing -----------------------------------------------------------------------------------------

def frames_sent(pacer: Pacer, gap: float, until: float, now: float) -> list[float]:
    """Send frames `gap` apart whenever due, up to `until`: their send times."""
    times = []
    while (due := pacer.due(gap)) is not None and due <= until + 1e-9:
        now = max(now, due)
        pacer.sent(now, gap)
        times.append(now)
    return times


@pytest.mark.parametrize("speed", [0.5, 1.0, 2.0, 8.0])
def test_speed_scales_the_frame_rate(speed):
    pacer = Pacer(now=100.0, speed=speed)
    times = frames_sent(pacer, 1 / 20, until=110.0, now=100.0)
    assert len(times) == 200 * speed
    assert times[0] == pytest.approx(100.0 + 1 / (20 * speed))


def test_pause_holds_the_position_and_play_goes_on_from_it():
    pacer = Pacer(now=0.0)
    assert len(frames_sent(pacer, 0.05, until=1.0, now=0.0)) == 20
    pacer.pause(1.02)  # 0.02 s into the next frame's 0.05
    assert pacer.due(0.05) is None
    pacer.play(10.0)
    assert pacer.due(0.05) == pytest.approx(10.03)


def test_a_speed_change_keeps_the_position():
    pacer = Pacer(now=0.0)
    frames_sent(pacer, 0.05, until=1.0, now=0.0)  # 20 frames: position 1.0 s
    pacer.set_speed(1.0, 4.0)
    assert pacer.due(0.05) == pytest.approx(1.0 + 0.05 / 4)


def test_a_late_frame_restarts_the_clock_instead_of_a_burst():
    pacer = Pacer(now=0.0)
    pacer.sent(0.05, 0.05)
    pacer.sent(0.05 + MAX_LAG_S + 1.0, 0.05)  # the loop stalled for a second
    assert pacer.due(0.05) == pytest.approx(0.05 + MAX_LAG_S + 1.0 + 0.05)


def test_turn_based_steps_are_paced_by_their_recorded_time_capped():
    assert step_gap(20, 0.0, 0.0) == 0.05
    assert step_gap(0, 1000.0, 1000.75) == 0.75
    assert step_gap(0, 1000.0, 1030.0) == 2.0
    assert step_gap(0, 0.0, 1000.0) == 0.5  # no recorded time before: a default


# -- the playback -----------------------------------------------------------------------------------

def frame(tick: int) -> Frame:
    return Frame(tick, 1000.0 + tick / 20, (f"state {tick}",))


def test_playback_fetches_delivers_on_time_and_stops_at_the_end():
    playback = Playback(0.0, tick_rate=20, tick=0, at=1000.0, last_tick=3, finished=True)
    assert playback.next(0.0) == Fetch(10)  # half a second at 20 Hz
    assert playback.feed([frame(1), frame(2), frame(3)], 3, True, 0.0) is None
    assert playback.next(0.0) == Wait(pytest.approx(0.05))
    assert playback.next(0.05) == Deliver(frame(1))
    playback.delivered(frame(1), 0.05)
    for tick in (2, 3):
        step = playback.next(tick / 20)
        assert step == Deliver(frame(tick))
        playback.delivered(step.frame, tick / 20)
    end = playback.next(0.2)
    assert isinstance(end, Announce) and end.frame["ended"] and not end.frame["playing"]
    assert playback.next(0.3) == Wait(None)
    playback.play(0.3)  # nothing after the end of a finished match
    assert not playback.playing


def test_paused_playback_sends_nothing_and_a_seek_restarts_from_the_frame():
    playback = Playback(0.0, tick_rate=20, tick=0, at=0.0, last_tick=100, finished=True)
    playback.feed([frame(1)], 100, True, 0.0)
    playback.pause(0.01)
    assert playback.next(5.0) == Wait(None)
    playback.restored(frame(50), 100, True, 6.0)
    assert playback.tick == 50 and not playback.pending and not playback.playing
    playback.play(7.0)
    assert playback.next(7.0) == Fetch(10)


def test_a_live_match_is_polled_at_its_end():
    playback = Playback(0.0, tick_rate=20, tick=5, at=0.0, last_tick=5, finished=False)
    assert playback.next(0.0) == Fetch(10)
    assert playback.feed([], 5, False, 0.0) is None
    assert playback.next(0.1) == Wait(0.5)
    assert playback.next(0.5) == Fetch(10)
    moved = playback.feed([frame(6)], 6, False, 0.5)
    assert isinstance(moved, Announce) and moved.frame["last_tick"] == 6


def test_the_fetch_grows_with_the_speed():
    playback = Playback(0.0, tick_rate=20, tick=0, at=0.0, last_tick=1000, finished=True)
    playback.set_speed(8.0, 0.0)
    assert playback.next(0.0) == Fetch(64)
    turn_based = Playback(0.0, tick_rate=0, tick=0, at=0.0, last_tick=10, finished=True)
    assert turn_based.next(0.0) == Fetch(8)
