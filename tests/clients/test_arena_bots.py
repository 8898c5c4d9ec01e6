"""The arena bots' own logic (clients/arena_bots.py): the ack scan against json.loads on the
server's real state frames, acknowledgements and latency, and the one-task send schedule."""

import json
import socket

import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from clients import arena_bots, lightws
from clients.arena_bots import Bot, Figures, Players, Window, ack_key, read_ack
from gameserver import canonical, protocol, websocket
from gameserver.websocket import Parser

players = st.one_of(st.from_regex(r"bot-[0-9]{1,4}", fullmatch=True), st.text(max_size=8),
                    st.sampled_from(['a"b', "a:b", "a,", "}", '"', "\\", ":1,", "a}b", "é", "\n", ""]))
acks = st.dictionaries(players, st.integers(0, 2**53 - 1), max_size=5)
states = st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.text(max_size=5)), max_size=3)


def state_frame(tick: int, acks: dict, state) -> str:
    """Exactly what the server sends (gameserver/actor.py, protocol.state_frame_json)."""
    return protocol.state_frame_json(tick, canonical.encode(acks), canonical.encode(state))


@settings(max_examples=500)
@given(players, acks, states, st.integers(0, 2**40))
def test_the_scan_finds_what_json_finds_or_says_it_cannot_tell(player, acks, state, tick):
    if player in acks or tick % 2:  # often the player's own entry, sometimes none
        acks = {**acks, player: tick}
    frame = state_frame(tick, acks, state)
    found = read_ack(frame, ack_key(player))
    assert found is None or found == json.loads(frame)["acks"].get(player, 0)


@given(st.from_regex(r"bot-[0-9]{1,4}", fullmatch=True), st.dictionaries(
    st.from_regex(r"[a-z0-9-]{1,10}", fullmatch=True), st.integers(0, 2**53 - 1), max_size=4),
    st.integers(0, 2**40))
def test_the_scan_is_sure_for_plain_player_ids(player, acks, tick):
    frame = state_frame(tick, acks, {"players": {p: {"x": 1.5, "last_seq": s} for p, s in acks.items()}})
    assert read_ack(frame, ack_key(player)) == acks.get(player, 0)


def test_the_scan_gives_up_on_frames_it_does_not_know():
    key = ack_key("bot-1")
    assert read_ack('{"t":"state","tick":5,"state":{},"acks":{"bot-1":3}}', key) is None  # another order
    assert read_ack('{"t":"state","tick":5,"x":{",\\"acks\\":{":1},"acks":{"bot-1":3}}', key) is None
    assert read_ack('{"t":"state","tick":5,"acks":{"bot-1":-3}}', key) is None
    assert read_ack('{"t":"state","tick":5,"acks":{"bot-1":3', key) is None
    assert read_ack('{"t":"state","tick":5,"acks":{"bot-1":3}}', None) is None
    assert ack_key('a"b') is None and ack_key("a:b") is None and ack_key("") is None
    assert ack_key("bot-1") == '"bot-1":'


class FakeWS:
    closed = None


def playing_bot(index: int, seed: int = 7) -> Bot:
    bot = Bot(index, "ws://unused", "token", seed)
    bot.ws = FakeWS()
    bot.player = f"bot-{index}"
    bot.key = ack_key(bot.player)
    return bot


class Linked:
    """A playing bot whose WebSocket is one end of a socket pair; the test is the server."""

    def __init__(self, index: int):
        self.bot = playing_bot(index)
        client, self.server = socket.socketpair()
        client.setblocking(False)
        self.server.setblocking(False)
        self.bot.ws = lightws.WebSocket(client, None, 1 << 20)
        self.parser = Parser(1 << 20)  # the server's: it refuses unmasked frames

    def inputs(self) -> list[dict]:
        while True:
            try:
                data = self.server.recv(65536)
            except BlockingIOError:
                break
            self.parser.feed(data)
        found = []
        while (item := self.parser.next()) is not None:
            found.append(json.loads(item))
        return found

    def sent_at(self) -> list[float]:
        return [at for _, at in self.bot.unacked]


def test_acks_pop_every_input_up_to_the_ack_and_time_only_those_in_the_window():
    figures, window = Figures(), Window()
    window.start, window.end = 10.0, 20.0
    bot = playing_bot(1)
    bot.unacked.extend([(1, 9.0), (2, 10.0), (3, 10.05), (4, 10.1)])
    bot.take(state_frame(7, {"bot-1": 3, "bot-2": 9}, {}), 10.2, figures, window)
    assert [seq for seq, _ in bot.unacked] == [4]
    assert figures.acked == 2 and figures.latency_buckets.total() == 2  # seq 1 was sent before the window
    assert abs(figures.latency_max_ms - 200.0) < 1e-6
    assert figures.state_frames == 1
    bot.take('{"t":"error","code":"invalid_input","message":"no"}', 10.3, figures, window)
    bot.take('{"t":"event","tick":8,"kind":"join","data":{"player":"bot-3"}}', 10.3, figures, window)
    bot.take('{"t":"state", "tick":8, "acks":{"bot-1":4}, "state":{}}', 20.5, figures, window)  # not the fast form
    assert not bot.unacked and figures.acked == 3  # json.loads read that one
    assert figures.state_frames == 1  # that frame came after the window
    assert figures.errors == {"error_frame_invalid_input": 1}


def sends_until(first: float, end: float) -> int:
    return int((end - first) / arena_bots.PERIOD_S + 1e-9) + 1


async def test_one_task_sends_every_bot_at_its_own_absolute_deadlines_and_reads_their_acks(autojump_clock):
    figures, window = Figures(), Window()
    window.start, window.end = 0.0, 1000.0
    players = Players()
    links = [Linked(i) for i in range(3)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(players.run, figures, window)
        await trio.sleep(0.01)
        for link in links:
            players.add(link.bot, link.bot.first_deadline())
        await trio.sleep(1.0)
        links[1].server.close()  # a connection that ends leaves the schedule, counted once
        closed_at = trio.current_time()
        await trio.sleep(1.0)
        end = trio.current_time()
        sent = {link: link.sent_at() for link in links}
        acked = links[0].bot.unacked[9][0]
        links[0].server.send(websocket.message(state_frame(99, {"bot-0": acked, "bot-1": 5}, {})))
        await trio.sleep(0.0001)
        nursery.cancel_scope.cancel()
    for link in links:
        times = sent[link]
        assert 0.01 <= times[0] < 0.01 + arena_bots.PERIOD_S
        assert len(times) == sends_until(times[0], closed_at if link is links[1] else end)
        assert all(abs((b - a) - arena_bots.PERIOD_S) < 1e-9 for a, b in zip(times, times[1:]))
    for link in (links[0], links[2]):
        inputs = link.inputs()  # masked frames, read with the server's parser
        assert [i["seq"] for i in inputs] == list(range(1, link.bot.seq + 1))
        moves = [i["data"] for i in inputs]
        assert all(m == moves[0] for m in moves[:20]) and all(m == moves[20] for m in moves[20:40])
    assert figures.sent == sum(link.bot.seq for link in links) and figures.late_sends == 0
    assert figures.acked == 10 and figures.state_frames == 1
    assert links[0].bot.unacked[0][0] == acked + 1
    assert figures.errors == {"disconnected_1006": 1}


async def test_a_bot_due_before_the_task_would_wake_wakes_it(autojump_clock):
    figures, window = Figures(), Window()
    players = Players()
    far, near = Linked(0), Linked(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(players.run, figures, window)
        await trio.sleep(0.5)  # nothing to do: it waits without a deadline
        players.add(far.bot, trio.current_time() + 10.0)
        await trio.sleep(1.0)  # now it waits until far's deadline
        due = trio.current_time() + 0.001
        players.add(near.bot, due)
        await trio.sleep(0.002)
        assert near.sent_at() == [due] and not far.sent_at()
        nursery.cancel_scope.cancel()


async def test_a_connection_lost_while_writing_is_counted_once_and_stops_the_inputs():
    figures, window = Figures(), Window()
    link = Linked(0)
    link.server.close()
    assert link.bot.send_input(0.0, figures, window)  # the write fails: the connection is closed
    assert link.bot.ws.closed is not None and link.bot.ws.closed.code == websocket.ABNORMAL
    assert not link.bot.send_input(0.05, figures, window)
    assert not link.bot.send_input(0.10, figures, window)
    assert figures.errors == {"disconnected_1006": 1}
    assert [seq for seq, _ in link.bot.unacked] == [1]  # sent, never acknowledged: lost if in the window
