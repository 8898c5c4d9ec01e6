"""Watching a replay: the stream's trio shell under MockClock (pacing, pause, seek, bad controls, auth,
the limit, a live match followed), then the WebSocket route of a real server on loopback."""

import contextlib
import io
import json
import sqlite3
from pathlib import Path

import attrs
import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from clients.client import ArbiterHTTP, MatchClient
from gameserver import protocol, storage, tokens
from gameserver.alarms import END
from gameserver.config import NodeConfig
from gameserver.games import builtin_games
from gameserver.games.arena import Arena
from gameserver.games.connect_four import ConnectFour
from gameserver.games.connect_four import Params as FourParams
from gameserver.records import step_record
from gameserver.recovery import create_match_file
from gameserver.replay_server import ReplayConfig, ReplayStreams, TransportClosed
from gameserver.simulation import INPUT, JOIN, TIMER, Command
from gameserver.storage import MatchStore
from tools.cli import main
from tools.up import ServerConfig, run_server

MATCH = "0" * 26
OTHER = "1" * 26
PLAYERS = ("p1", "p2", "p3", "p4")
SECRET = b"s" * 32
NOW = 2_000_000_000.0  # the wall clock tokens are checked against
ADMIN = "the-admin-token"


def arena_batches(ticks: int, end: bool = True) -> list[list[Command]]:
    batches = [[Command(JOIN, p) for p in PLAYERS]]
    for t in range(1, ticks):
        batches.append([Command(INPUT, p, t, {"dx": (t + i) % 3 - 1, "dy": ((t * 7 + i) % 5 - 2) / 2})
                        for i, p in enumerate(PLAYERS)])
    if end:
        batches.append([Command(TIMER, "", 0, {"name": END, "retry": 0})])
    return batches


@attrs.define
class Recording:
    path: Path
    states: list[bytes]  # the canonical state after each tick, from tick 0
    store: MatchStore | None = None  # open for writing: a live match
    sim: object = None

    def append(self, batches: list[list[Command]]) -> None:
        """More ticks of the live match, committed as the runtime commits them."""
        for batch in batches:
            step = self.sim.step(batch, now=1000.0 + self.sim.tick / 20)
            self.store.commit_step(step_record(self.sim, step, 10), now=1000.0 + self.sim.tick / 20)
            self.states.append(self.sim.canonical())


def record(data_dir: Path, batches: list[list[Command]], *, match_id: str = MATCH, live: bool = False,
           game=None, params=None) -> Recording:
    game = game or Arena()
    path = storage.match_path(data_dir, match_id)
    _meta, sim = create_match_file(path, game, match_id=match_id, params=params or game.params_type(), seed=5,
                                   snapshot_every=10, now=1000.0)
    recording = Recording(path, [sim.canonical()], MatchStore.open(path), sim)
    recording.append(batches)
    if not live:
        recording.store.close()
        recording.store = None
    return recording


def token(match_id: str = MATCH, role: str = "spectator", expires_at: float = NOW + 3600) -> str:
    return tokens.sign(SECRET, tokens.Grant(match_id, "viewer", role, expires_at), NOW - 10)


@attrs.frozen
class Closed:
    code: int
    reason: str


class MemoryTransport:
    """The server's end of a fake WebSocket over memory channels."""

    def __init__(self, inbound: trio.MemoryReceiveChannel, outbound: trio.MemorySendChannel):
        self.inbound, self.outbound = inbound, outbound
        self.closed: Closed | None = None

    async def receive(self) -> str:
        try:
            return await self.inbound.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise TransportClosed("gone") from None

    async def send(self, text: str) -> None:
        try:
            await self.outbound.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise TransportClosed("gone") from None

    async def close(self, code: int, reason: str) -> None:
        self.closed = Closed(code, reason)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError), trio.move_on_after(1):
            await self.outbound.send(Closed(code, reason))
        self.outbound.close()


class Viewer:
    """The client's end: JSON frames in and out, with the trio time each frame arrived at."""

    def __init__(self, to_server: trio.MemorySendChannel, from_server: trio.MemoryReceiveChannel):
        self.to_server, self.from_server = to_server, from_server
        self.at = 0.0

    async def send(self, **frame) -> None:
        await self.to_server.send(json.dumps(frame))

    async def receive(self):
        try:
            with trio.fail_after(300):  # of trio time: a frame that never comes fails the test, at once under MockClock
                item = await self.from_server.receive()
        except trio.EndOfChannel:
            return Closed(1006, "no close frame")
        self.at = trio.current_time()
        return item if isinstance(item, Closed) else json.loads(item)

    async def next(self, kind: str) -> dict:
        while True:
            frame = await self.receive()
            assert not isinstance(frame, Closed), frame
            if frame["t"] == kind:
                return frame

    async def closed(self) -> Closed:
        while not isinstance(frame := await self.receive(), Closed):
            pass
        return frame

    async def start(self, auth: str | None = None) -> tuple[dict, dict, dict]:
        """Authenticate: the replay frame, the first playback frame and the state at tick 0."""
        await self.send(t="auth", token=auth or token())
        replay, playback, state = await self.receive(), await self.receive(), await self.receive()
        assert (replay["t"], playback["t"], state["t"]) == ("replay", "playback", "state"), (replay, playback, state)
        return replay, playback, state


def streams_for(data_dir: Path, **config) -> ReplayStreams:
    return ReplayStreams(data_dir, {name: cls() for name, cls in builtin_games().items()}, SECRET,
                         admin_token=ADMIN, wall_clock=lambda: NOW, config=ReplayConfig(**config), offload=False)


@contextlib.asynccontextmanager
async def watching(streams: ReplayStreams, match_id: str = MATCH):
    to_server, inbound = trio.open_memory_channel(64)
    outbound, from_server = trio.open_memory_channel(64)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(streams.serve, match_id, MemoryTransport(inbound, outbound))
        yield Viewer(to_server, from_server)
        to_server.close()  # the client goes away: the stream ends


def replay_state(path: Path, tick: int) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["replay", "state", str(path), "--tick", str(tick)]) == 0
    return json.loads(out.getvalue())


async def states_until(viewer: Viewer, deadline: float) -> list[dict]:
    """The state frames that arrive before `deadline` (trio time)."""
    found = []
    with trio.move_on_at(deadline):
        while True:
            frame = await viewer.receive()
            assert not isinstance(frame, Closed), frame
            if frame["t"] == "state":
                found.append(frame)
    return found


# -- pacing under MockClock --------------------------------------------------------------------------

@pytest.mark.parametrize("speed", [0.5, 1, 2, 8])
async def test_speed_sets_how_many_ticks_a_second_arrive(tmp_path, autojump_clock, speed):
    record(tmp_path, arena_batches(400))
    async with watching(streams_for(tmp_path)) as viewer:
        _replay, _playback, first = await viewer.start()
        assert first["tick"] == 0
        await viewer.send(t="speed", speed=speed)
        answer = await viewer.next("playback")
        assert answer["speed"] == speed and answer["playing"]
        start = viewer.at
        states = await states_until(viewer, start + 2.0 + 1e-6)
        assert [s["tick"] for s in states] == list(range(1, int(40 * speed) + 1))  # 20 Hz times the speed
        assert states[0]["acks"] == {p: 0 for p in PLAYERS}


async def test_pause_delivers_nothing_and_play_goes_on_from_there(tmp_path, autojump_clock):
    record(tmp_path, arena_batches(400))
    async with watching(streams_for(tmp_path)) as viewer:
        await viewer.start()
        states = await states_until(viewer, trio.current_time() + 1.0 + 1e-6)
        assert states[-1]["tick"] == 20
        await viewer.send(t="pause")
        paused = await viewer.next("playback")
        assert not paused["playing"] and paused["tick"] == 20
        assert await states_until(viewer, trio.current_time() + 30.0) == []
        await viewer.send(t="play")
        assert (await viewer.next("playback"))["playing"]
        resumed = viewer.at
        state = await viewer.next("state")
        assert state["tick"] == 21 and viewer.at - resumed == pytest.approx(0.05, abs=1e-5)  # the rest of its gap


async def test_seek_gives_the_state_replay_state_gives(tmp_path, autojump_clock):
    recording = record(tmp_path, arena_batches(400))
    async with watching(streams_for(tmp_path)) as viewer:
        await viewer.start()
        for tick in (137, 3, 400, 0, 250):
            await viewer.send(t="seek", tick=tick)
            playback = await viewer.next("playback")
            state = await viewer.next("state")
            assert playback["tick"] == state["tick"] == tick
            expected = replay_state(recording.path, tick)
            assert state["state"] == expected["state"]
            assert state["acks"] == expected["last_seq"]
            assert json.dumps(state["state"], separators=(",", ":")).encode() == recording.states[tick]
        assert (await viewer.next("state"))["tick"] == 251  # and it plays on from there


async def test_the_end_of_a_finished_match(tmp_path, autojump_clock):
    recording = record(tmp_path, arena_batches(30))  # 30 ticks, then the end alarm: ended at tick 31
    async with watching(streams_for(tmp_path)) as viewer:
        replay, playback, _first = await viewer.start()
        assert replay["finished"] and replay["last_tick"] == 31 and replay["status"] == "ended"
        assert replay["players"] == list(PLAYERS) and replay["result"]["reason"] == "time"
        assert playback["last_tick"] == 31 and not playback["ended"]
        await viewer.send(t="speed", speed=8)
        frames = []
        while (frame := await viewer.receive())["t"] != "playback" or not frame["ended"]:
            frames.append(frame)
        assert not frame["playing"] and frame["tick"] == 31
        events = [(f["tick"], f["kind"]) for f in frames if f["t"] == "event"]
        assert events == [(1, "join")] * 4 + [(31, "end")]
        assert [f["tick"] for f in frames if f["t"] == "state"] == list(range(1, 32))
        assert frames[-1]["t"] == "state" and frames[-2] == {"t": "event", "tick": 31, "kind": "end", "data": {
            "status": "ended", "result": replay["result"]}}
        assert json.dumps(frames[-1]["state"], separators=(",", ":")).encode() == recording.states[31]
        await viewer.send(t="play")  # nothing after the end
        again = await viewer.next("playback")
        assert not again["playing"] and again["ended"]
        await viewer.send(t="seek", tick=30)
        assert (await viewer.next("state"))["tick"] == 30


async def test_a_turn_based_match_is_paced_by_its_recorded_times(tmp_path, autojump_clock):
    batches = [[Command(JOIN, "a"), Command(JOIN, "b")], [Command(INPUT, "a", 1, {"column": 3})],
               [Command(INPUT, "b", 1, {"column": 4})]]
    record(tmp_path, batches, game=ConnectFour(), params=FourParams())
    async with watching(streams_for(tmp_path)) as viewer:
        replay, _playback, _first = await viewer.start()
        assert replay["tick_rate"] == 0
        start = viewer.at
        one = await viewer.next("state")
        assert viewer.at - start == pytest.approx(0.5)  # tick 0 has no recorded time: a default
        two = await viewer.next("state")
        assert viewer.at - start == pytest.approx(0.55)  # steps recorded 1/20 s apart
        assert (one["tick"], two["tick"]) == (1, 2) and two["state"]["board"][0][3] == "a"


async def test_a_live_match_is_followed_as_it_goes_on(tmp_path, autojump_clock):
    recording = record(tmp_path, arena_batches(100, end=False)[:20], live=True)
    try:
        async with watching(streams_for(tmp_path)) as viewer:
            replay, _playback, _first = await viewer.start()
            assert not replay["finished"] and replay["status"] == "running" and replay["last_tick"] == 20
            await viewer.send(t="speed", speed=8)
            states = await states_until(viewer, trio.current_time() + 2.0)
            assert states[-1]["tick"] == 20  # caught up with the match
            recording.append(arena_batches(100)[20:30])  # the match goes on
            while (frame := await viewer.next("playback"))["last_tick"] != 30:
                pass
            assert not frame["finished"]
            states = await states_until(viewer, trio.current_time() + 2.0)
            assert [s["tick"] for s in states] == list(range(21, 31))
            assert json.dumps(states[-1]["state"], separators=(",", ":")).encode() == recording.states[30]
            recording.append([[Command(TIMER, "", 0, {"name": END, "retry": 0})]])  # and ends
            while not (frame := await viewer.next("playback"))["ended"]:
                pass
            assert frame["finished"] and frame["tick"] == 31
    finally:
        recording.store.close()


# -- what the client gets wrong ------------------------------------------------------------------------

async def test_bad_controls_get_clear_errors_and_the_stream_goes_on(tmp_path, autojump_clock):
    record(tmp_path, arena_batches(100))
    async with watching(streams_for(tmp_path)) as viewer:
        await viewer.send(t="play")
        refused = await viewer.next("error")
        assert refused["code"] == "not_authenticated"
        await viewer.start()
        await viewer.send(t="pause")
        await viewer.next("playback")
        cases = [
            ({"t": "speed", "speed": 9}, "out_of_range", "speed must be from 0.5 to 8"),
            ({"t": "speed", "speed": "fast"}, "bad_frame", "speed is a number"),
            ({"t": "seek", "tick": 102}, "out_of_range", "tick must be from 0 to 101, got 102"),
            ({"t": "seek", "tick": -1}, "bad_frame", "tick must be an integer"),
            ({"t": "seek", "tick": 500}, "out_of_range", "tick must be from 0 to 101, got 500"),
            ({"t": "rewind"}, "bad_frame", "t must be one of"),
            ({"t": "play", "x": 1}, "bad_frame", "unknown fields: x"),
            ({"t": "auth", "token": "again"}, "already_authenticated", "authenticated"),
        ]
        for frame, code, words in cases:
            await viewer.to_server.send(json.dumps(frame))
            error = await viewer.next("error")
            assert error["code"] == code and words in error["message"], (frame, error)
        await viewer.to_server.send("not json")
        assert (await viewer.next("error"))["code"] == "bad_frame"
        await viewer.send(t="ping", id=3)
        assert await viewer.next("pong") == {"t": "pong", "id": 3}
        await viewer.send(t="seek", tick=42)  # still there, still at work
        assert (await viewer.next("state"))["tick"] == 42


async def test_too_many_errors_close_with_1008(tmp_path, autojump_clock):
    record(tmp_path, arena_batches(20))
    async with watching(streams_for(tmp_path)) as viewer:
        await viewer.start()
        for _ in range(25):
            await viewer.to_server.send('{"t":"seek","tick":9999}')
        assert await viewer.closed() == Closed(protocol.CLOSE_POLICY, "too many errors")


@pytest.mark.parametrize(("match_id", "auth", "code", "words"), [
    (OTHER, token(OTHER), protocol.CLOSE_MATCH_NOT_FOUND, f"no match {OTHER}"),
    ("not-an-id", ADMIN, protocol.CLOSE_MATCH_NOT_FOUND, "no match not-an-id"),
    (MATCH, token(OTHER), protocol.CLOSE_AUTH_FAILED, "the token is for another match"),
    (MATCH, token(expires_at=NOW - 1), protocol.CLOSE_AUTH_FAILED, "token expired"),
    (MATCH, "forged", protocol.CLOSE_AUTH_FAILED, "invalid token"),
    (MATCH, tokens.sign(b"x" * 32, tokens.Grant(MATCH, "v", "spectator", NOW + 60), NOW), protocol.CLOSE_AUTH_FAILED,
     "invalid token"),
])
async def test_refusals_close_with_a_code_and_a_reason(tmp_path, autojump_clock, match_id, auth, code, words):
    record(tmp_path, arena_batches(20))
    async with watching(streams_for(tmp_path), match_id) as viewer:
        await viewer.send(t="auth", token=auth)
        closed = await viewer.closed()
        assert closed.code == code and words in closed.reason, closed


async def test_no_auth_in_time_closes_with_4002(tmp_path, autojump_clock):
    record(tmp_path, arena_batches(20))
    async with watching(streams_for(tmp_path)) as viewer:
        start = trio.current_time()
        assert await viewer.closed() == Closed(protocol.CLOSE_AUTH_TIMEOUT, "no auth message in time")
        assert trio.current_time() - start == pytest.approx(10.0)


async def test_an_unusable_file_closes_with_4004(tmp_path, autojump_clock):
    path = storage.match_path(tmp_path, MATCH)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a match file")
    async with watching(streams_for(tmp_path)) as viewer:
        await viewer.send(t="auth", token=token())
        assert await viewer.closed() == Closed(protocol.CLOSE_MATCH_NOT_FOUND, f"match {MATCH} cannot be replayed")
    assert path.read_bytes() == b"not a match file"


async def test_who_may_watch(tmp_path, autojump_clock):
    """A spectator token or the admin token: any match. A player token: once its match is over."""
    live = record(tmp_path, arena_batches(20, end=False), match_id=OTHER, live=True)
    record(tmp_path, arena_batches(20))
    try:
        streams = streams_for(tmp_path)
        for match_id, auth in ((OTHER, token(OTHER)), (OTHER, ADMIN), (MATCH, token(role="player")), (MATCH, ADMIN)):
            async with watching(streams, match_id) as viewer:
                replay, _playback, _state = await viewer.start(auth)
                assert replay["match"] == match_id
        async with watching(streams, OTHER) as viewer:
            await viewer.send(t="auth", token=token(OTHER, role="player"))
            closed = await viewer.closed()
            assert closed.code == protocol.CLOSE_AUTH_FAILED and "once the match is over" in closed.reason
    finally:
        live.store.close()


async def test_streams_past_the_limit_are_closed_with_1013(tmp_path, autojump_clock):
    record(tmp_path, arena_batches(20))
    streams = streams_for(tmp_path, limit=2)
    async with watching(streams) as one, watching(streams) as two:
        await one.start()
        await two.start()
        assert streams.active == 2
        async with watching(streams) as three:
            closed = await three.closed()
            assert closed.code == protocol.CLOSE_TRY_AGAIN and "too many replay streams" in closed.reason
    await trio.testing.wait_all_tasks_blocked()
    assert streams.active == 0  # the streams' clients went away: their places are free
    async with watching(streams) as four:
        await four.start()


async def test_a_diverging_file_closes_with_1011(tmp_path, autojump_clock):
    recording = record(tmp_path, arena_batches(40))
    with sqlite3.connect(recording.path) as conn:  # a checksum altered outside Arbiter
        conn.execute("UPDATE steps SET checksum = checksum + 1 WHERE tick = 25")
    async with watching(streams_for(tmp_path)) as viewer:
        await viewer.start()
        await viewer.send(t="speed", speed=8)
        closed = await viewer.closed()
        assert closed == Closed(protocol.CLOSE_INTERNAL, "the replay diverged from the recording at tick 25")


async def test_a_client_that_does_not_read_is_closed_with_4010(tmp_path, autojump_clock):
    record(tmp_path, arena_batches(400))
    streams = streams_for(tmp_path)
    to_server, inbound = trio.open_memory_channel(64)
    outbound, from_server = trio.open_memory_channel(0)  # nothing buffered: every frame waits for the reader
    transport = MemoryTransport(inbound, outbound)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(streams.serve, MATCH, transport)
        await to_server.send(json.dumps({"t": "auth", "token": token()}))
        start = trio.current_time()
        await trio.sleep(60)  # never reads
        assert transport.closed == Closed(protocol.CLOSE_SLOW_CONSUMER, "slow consumer")
        assert streams.active == 0
        assert [item async for item in from_server] == []  # nothing was sent after all
    assert trio.current_time() - start == 60


# -- the route on a real server, over loopback ----------------------------------------------------------

@pytest.fixture
async def server(tmp_path, nursery):
    stop = trio.Event()
    config = ServerConfig(node=NodeConfig(data_dir=tmp_path), games=builtin_games(), port=0, ws_port=0)
    running = await nursery.start(run_server, config, stop)
    yield running
    stop.set()


def replay_url(running, match_id: str) -> str:
    return running.http_url.replace("http://", "ws://") + f"/v1/matches/{match_id}/replay"


async def frames_of(ws, kind: str) -> dict:
    while (frame := json.loads(await ws.get_message()))["t"] != kind:
        pass
    return frame


async def test_watching_a_recorded_match_over_loopback(server, tmp_path):
    recording = record(tmp_path, arena_batches(200))
    async with ArbiterHTTP(server.http_url) as http:
        grant = await http.join_token(MATCH, "watcher", "spectator")  # a finished match: spectators still get one
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await http.join_token(MATCH, "p9", "player")  # but no player may join it
        assert refused.value.response.status_code == 409 and refused.value.response.json()["code"] == "match_over"
    with trio.fail_after(20):
        async with open_websocket_url(replay_url(server, MATCH), subprotocols=["arbiter.json.v1"]) as ws:
            assert ws.subprotocol == "arbiter.json.v1"
            await ws.send_message(json.dumps({"t": "auth", "token": grant["token"]}))
            replay = json.loads(await ws.get_message())
            assert replay["t"] == "replay" and replay["last_tick"] == 201 and replay["game"] == "arena"
            assert (await frames_of(ws, "state"))["tick"] == 0
            await ws.send_message(json.dumps({"t": "speed", "speed": 8}))
            ticks = [(await frames_of(ws, "state"))["tick"] for _ in range(10)]
            assert ticks == list(range(ticks[0], ticks[0] + 10))  # every tick, in order
            await ws.send_message(json.dumps({"t": "seek", "tick": 150}))
            while (await frames_of(ws, "playback"))["tick"] != 150:
                pass
            state = await frames_of(ws, "state")
            assert state["tick"] == 150
            assert json.dumps(state["state"], separators=(",", ":")).encode() == recording.states[150]
            await ws.send_message(json.dumps({"t": "speed", "speed": 100}))
            error = await frames_of(ws, "error")
            assert error["code"] == "out_of_range"
    with trio.fail_after(10):
        async with open_websocket_url(replay_url(server, OTHER)) as ws:
            await ws.send_message(json.dumps({"t": "auth", "token": grant["token"]}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
        assert closed.value.reason.code == protocol.CLOSE_AUTH_FAILED  # the token is for another match


async def test_watching_a_live_match_over_loopback(server):
    async with ArbiterHTTP(server.http_url) as http:
        match = await http.create_match("arena")
        player = await http.join_token(match["match_id"], "alice")
        spectator = await http.join_token(match["match_id"], "watcher", "spectator")
    url = replay_url(server, match["match_id"])
    with trio.fail_after(20):
        async with MatchClient(player["ws_url"], player["token"]) as alice:
            await alice.receive()
            seq = await alice.send_input({"dx": 1, "dy": 0})
            while alice.acked < seq:
                await alice.receive()
            async with open_websocket_url(url) as ws:
                await ws.send_message(json.dumps({"t": "auth", "token": spectator["token"]}))
                replay = json.loads(await ws.get_message())
                assert not replay["finished"] and replay["status"] == "running"
                await ws.send_message(json.dumps({"t": "speed", "speed": 8}))
                while (state := await frames_of(ws, "state"))["acks"].get("alice", 0) < seq:
                    pass
                assert state["state"]["players"]["alice"]["vx"] == 5.0  # alice's input, replayed
                await ws.send_message(json.dumps({"t": "seek", "tick": 1}))
                assert (await frames_of(ws, "state"))["tick"] == 1
            async with open_websocket_url(url) as ws:  # her own token: not while the match runs
                await ws.send_message(json.dumps({"t": "auth", "token": player["token"]}))
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
            assert closed.value.reason.code == protocol.CLOSE_AUTH_FAILED


@pytest.mark.slow
async def test_the_http_process_replays_matches_its_workers_run(tmp_path, nursery):
    """arbiter up --workers 2: the HTTP API's process runs no match, yet streams a worker's live match
    from the shared data directory."""
    stop = trio.Event()
    config = ServerConfig(node=NodeConfig(data_dir=tmp_path), games=builtin_games(), port=0, ws_port=0, workers=2)
    running = await nursery.start(run_server, config, stop)
    try:
        async with ArbiterHTTP(running.http_url) as http:
            match = await http.create_match("arena")
            player = await http.join_token(match["match_id"], "alice")
            spectator = await http.join_token(match["match_id"], "watcher", "spectator")
        with trio.fail_after(30):
            async with MatchClient(player["ws_url"], player["token"]) as alice:
                await alice.receive()
                seq = await alice.send_input({"dx": 0, "dy": 1})
                while alice.acked < seq:
                    await alice.receive()
                async with open_websocket_url(replay_url(running, match["match_id"])) as ws:
                    await ws.send_message(json.dumps({"t": "auth", "token": spectator["token"]}))
                    assert json.loads(await ws.get_message())["t"] == "replay"
                    await ws.send_message(json.dumps({"t": "speed", "speed": 8}))
                    while (state := await frames_of(ws, "state"))["acks"].get("alice", 0) < seq:
                        pass
                    assert state["state"]["players"]["alice"]["vy"] == 5.0
    finally:
        stop.set()
