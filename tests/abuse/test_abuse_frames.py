"""Hostile clients over real loopback sockets, part 1: frames that break RFC 6455, frames that are
not messages, messages of the wrong type, and frames past the size limit. Each gets the answer
docs/protocol.md gives it (an error code, or a close code), before and after authentication, and
the match of the well-behaved player beside the attacker goes on, with nothing recorded from them.
"""

import json
import struct

import msgpack
import pytest
import trio

from abuse_helpers import (BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, Closed, RawWS, client_frame,
                           metric)
from gameserver import protocol

KIB = 1024
LIMIT = protocol.MAX_FRAME_BYTES  # 64 KiB


def close_frame(code: int, reason: bytes = b"") -> bytes:
    return client_frame(CLOSE, struct.pack("!H", code) + reason)


# What breaks RFC 6455, and the close code the server must answer it with.
VIOLATIONS = {
    "unmasked frame": (client_frame(TEXT, b"{}", masked=False), 1002),
    "reserved bit 1 set": (client_frame(TEXT, b"{}", rsv=0x40), 1002),
    "reserved bit 2 set": (client_frame(TEXT, b"{}", rsv=0x20), 1002),
    "reserved bit 3 set": (client_frame(TEXT, b"{}", rsv=0x10), 1002),
    "reserved data opcode 0x3": (client_frame(0x3, b"x"), 1002),
    "reserved data opcode 0x7": (client_frame(0x7, b"x"), 1002),
    "reserved control opcode 0xB": (client_frame(0xB, b""), 1002),
    "reserved control opcode 0xF": (client_frame(0xF, b""), 1002),
    "fragmented ping": (client_frame(PING, b"x", fin=False), 1002),
    "ping of 126 bytes": (client_frame(PING, b"x" * 126), 1002),
    "close of 126 bytes": (close_frame(1000, b"x" * 124), 1002),
    "continuation with nothing to continue": (client_frame(CONTINUATION, b"x"), 1002),
    "new message inside a fragmented one": (client_frame(TEXT, b"{", fin=False) + client_frame(TEXT, b"}"), 1002),
    "text that is not UTF-8": (client_frame(TEXT, b"\xc3\x28"), 1007),
    "fragments that join into bad UTF-8": (client_frame(TEXT, b"\xe2\x82", fin=False)
                                           + client_frame(CONTINUATION, b"\x28"), 1007),
    "close with a 1-byte payload": (client_frame(CLOSE, b"\x03"), 1002),
    "close with code 1005 (never sent)": (close_frame(1005), 1002),
    "close with code 999": (close_frame(999), 1002),
    "close with code 5000": (close_frame(5000), 1002),
    "close reason not UTF-8": (close_frame(1000, b"\xff\xfe"), 1007),
    "length with its top bit set": (struct.pack("!BBQ", 0x81, 0xFF, 1 << 63) + b"mask", 1002),
    "length of a terabyte and no body": (struct.pack("!BBQ", 0x81, 0xFF, 1 << 40) + b"mask", 1009),
    "one frame of 64 KiB + 1": (client_frame(TEXT, b" " * (LIMIT + 1)), 1009),
    "fragments adding up to 64 KiB + 1": (client_frame(TEXT, b" " * (40 * KIB), fin=False)
                                          + client_frame(CONTINUATION, b" " * (LIMIT + 1 - 40 * KIB)), 1009),
}


async def close_code_after(ws: RawWS, data: bytes) -> int:
    await ws.send(data)
    with trio.fail_after(10):  # answered at once; 10 s only guards against a server that waits for more
        _, closed = await ws.until_close()
    return closed.code


async def test_protocol_violations_before_auth_close_with_their_code(stack):
    match_id = await stack.match()
    seen = {}
    for kind, (data, _) in VIOLATIONS.items():
        ws = await stack.connect(match_id)
        seen[kind] = await close_code_after(ws, data)
        await ws.aclose()
    assert seen == {kind: code for kind, (_, code) in VIOLATIONS.items()}


async def test_protocol_violations_of_a_seated_player_close_only_that_connection(stack):
    match_id = await stack.match()
    witness, _ = await stack.join(match_id, "witness")
    seen = {}
    for kind, (data, _) in VIOLATIONS.items():
        ws, _ = await stack.join(match_id, "mallory")
        seen[kind] = await close_code_after(ws, data)
        await ws.aclose()
    assert seen == {kind: code for kind, (_, code) in VIOLATIONS.items()}
    first = (await witness.until("state"))["tick"]
    assert (await witness.until("state"))["tick"] > first  # the match goes on for the others
    assert await stack.node.logged_inputs(match_id) == {}


async def test_the_limit_is_64_kib_exactly_and_fragments_may_split_characters(stack):
    match_id = await stack.match()
    ws = await stack.connect(match_id)
    head = b'{"t":"ping","id":"\xc3\xa9"'
    exact = head + b" " * (LIMIT - len(head) - 1) + b"}"
    assert len(exact) == LIMIT
    await ws.send_frame(TEXT, exact)
    assert await ws.message() == {"t": "pong", "id": "é"}
    # the same message in three fragments, "é" cut in two, a ping between the fragments
    cut = head.index(b"\xa9")
    await ws.send(client_frame(TEXT, exact[:cut], fin=False) + client_frame(PING, b"hi")
                  + client_frame(CONTINUATION, exact[cut:cut + 100], fin=False)
                  + client_frame(CONTINUATION, exact[cut + 100:]))
    assert await ws.frame() == (PONG, b"hi")
    assert await ws.message() == {"t": "pong", "id": "é"}
    # a client's unsolicited pong is ignored; a close with a reason is echoed, then the TCP connection ends
    await ws.send(client_frame(PONG, b"unasked") + close_frame(4321, "adiós".encode()))
    assert await ws.frame() == (CLOSE, struct.pack("!H", 4321))
    with pytest.raises(Closed) as closed:
        await ws.frame()
    assert closed.value.code == 1006


# Frames that are WebSocket-valid but not valid messages: (what, frame, error code). The connection
# stays open; each frame gets its error. Before auth:
BEFORE_AUTH = [
    ("not JSON", "hello", "bad_frame"),
    ("a binary frame on a JSON connection", msgpack.packb({"t": "ping"}), "bad_frame"),
    ("a JSON array", "[]", "bad_frame"),
    ("a JSON string", '"auth"', "bad_frame"),
    ("no type", "{}", "bad_frame"),
    ("an unknown type", '{"t":"hello"}', "bad_frame"),
    ("a type that is a number", '{"t":1}', "bad_frame"),
    ("auth without a token", '{"t":"auth"}', "bad_frame"),
    ("a token that is a number", '{"t":"auth","token":123}', "bad_frame"),
    ("an empty token", '{"t":"auth","token":""}', "bad_frame"),
    ("a token of 4097 characters", json.dumps({"t": "auth", "token": "x" * 4097}), "bad_frame"),
    ("a negative resume_tick", '{"t":"auth","token":"x","resume_tick":-1}', "bad_frame"),
    ("an attachment over 16 KiB", json.dumps({"t": "auth", "token": "x", "attachment": "z" * 17_000}), "bad_frame"),
    ("an unknown field", '{"t":"auth","token":"x","admin":true}', "bad_frame"),
]
BEFORE_AUTH_2 = [
    ("NaN", '{"t":"ping","id":NaN}', "bad_frame"),
    ("Infinity", '{"t":"ping","id":Infinity}', "bad_frame"),
    ("a lone surrogate in a ping id", '{"t":"ping","id":"\\ud800"}', "bad_frame"),
    ("a lone surrogate as a field name", '{"t":"ping","\\udfff":1}', "bad_frame"),
    ("a lone surrogate in a token", '{"t":"auth","token":"\\ud800"}', "bad_frame"),
    ("a ping id that is a list", '{"t":"ping","id":[1]}', "bad_frame"),
    ("a ping id of 65 characters", json.dumps({"t": "ping", "id": "x" * 65}), "bad_frame"),
    ("a ping id past 2^53", '{"t":"ping","id":9007199254740992}', "bad_frame"),
    ("JSON nested 60,000 deep", "[" * 60_000, "bad_frame"),
    ("an integer of 5,000 digits", '{"t":"ping","id":' + "9" * 5000 + "}", "bad_frame"),
    ("an input before auth", '{"t":"input","seq":1,"data":{}}', "not_authenticated"),
    ("a leave before auth", '{"t":"leave"}', "not_authenticated"),
]
# After the welcome, on a player's JSON connection (the error comes from the session, at once):
SEATED = [
    ("auth again", '{"t":"auth","token":"x"}', "already_authenticated"),
    ("seq 0", '{"t":"input","seq":0,"data":{"dx":1,"dy":0}}', "bad_frame"),
    ("seq -1", '{"t":"input","seq":-1,"data":{"dx":1,"dy":0}}', "bad_frame"),
    ("seq 1.5", '{"t":"input","seq":1.5,"data":{"dx":1,"dy":0}}', "bad_frame"),
    ("seq as a string", '{"t":"input","seq":"1","data":{"dx":1,"dy":0}}', "bad_frame"),
    ("seq true", '{"t":"input","seq":true,"data":{"dx":1,"dy":0}}', "bad_frame"),
    ("seq 2^53", '{"t":"input","seq":9007199254740992,"data":{"dx":1,"dy":0}}', "bad_frame"),
    ("no seq", '{"t":"input","data":{"dx":1,"dy":0}}', "bad_frame"),
    ("no data", '{"t":"input","seq":1}', "bad_frame"),
    ("an input naming another player", '{"t":"input","seq":1,"player":"witness","data":{"dx":1,"dy":0}}',
     "bad_frame"),
    ("NaN in data", '{"t":"input","seq":1,"data":{"dx":NaN,"dy":0}}', "bad_frame"),
    ("1e999 in data", '{"t":"input","seq":1,"data":{"dx":1e999,"dy":0}}', "bad_frame"),
    ("a lone surrogate in data", '{"t":"input","seq":1,"data":{"dx":"\\udc00","dy":0}}', "bad_frame"),
    ("a leave with a field", '{"t":"leave","now":true}', "bad_frame"),
]
# After the welcome, on a player's msgpack connection:
SEATED_MSGPACK = [
    ("a text frame on a msgpack connection", '{"t":"ping"}', "bad_frame"),
    ("a msgpack array", msgpack.packb([1, 2]), "bad_frame"),
    ("truncated msgpack", msgpack.packb({"t": "ping", "id": "abc"})[:-2], "bad_frame"),
    ("trailing bytes", msgpack.packb({"t": "ping"}) + b"\xc0", "bad_frame"),
    ("a binary key", msgpack.packb({b"t": "ping"}, use_bin_type=True), "bad_frame"),
    ("an integer key", b"\x81\x01\x02", "bad_frame"),
    ("bytes in data", msgpack.packb({"t": "input", "seq": 1, "data": {"dx": b"\x00", "dy": 0}},
                                    use_bin_type=True), "bad_frame"),
    ("an extension type in data", msgpack.packb({"t": "input", "seq": 1, "data": msgpack.ExtType(7, b"x")}),
     "bad_frame"),
    ("a timestamp in data", msgpack.packb({"t": "input", "seq": 1, "data": [msgpack.Timestamp(1)]}),
     "bad_frame"),
    ("NaN in data", msgpack.packb({"t": "input", "seq": 1, "data": {"dx": float("nan"), "dy": 0}}), "bad_frame"),
    ("a binary key in data", msgpack.packb({"t": "input", "seq": 1, "data": {b"dx": 1}}, use_bin_type=True),
     "bad_frame"),
    ("msgpack nested 60,000 deep", b"\x91" * 60_000 + b"\xc0", "bad_frame"),
]


def wire(ws: RawWS, frame: str | bytes) -> bytes:
    return client_frame(TEXT, frame.encode()) if isinstance(frame, str) else client_frame(BINARY, frame)


async def answers(ws: RawWS, cases: list) -> dict[str, str]:
    """Send each frame, read its error; then a ping, whose pong shows the connection is still open."""
    seen = {}
    with trio.fail_after(10):
        for what, frame, _ in cases:
            await ws.send(wire(ws, frame))
            seen[what] = (await ws.until("error"))["code"]
        await ws.send_json({"t": "ping", "id": "still open"})
        await ws.until("pong", id="still open")
    return seen


def expected(cases: list) -> dict[str, str]:
    return {what: code for what, _, code in cases}


async def test_wrong_messages_before_auth_get_their_error_and_the_connection_stays(stack):
    match_id = await stack.match()
    for cases in (BEFORE_AUTH, BEFORE_AUTH_2):  # each batch within the error budget (bursts of 20)
        ws = await stack.connect(match_id)
        assert await answers(ws, cases) == expected(cases)
        await ws.auth(stack.token(match_id, "late"))  # and it can still authenticate
        await ws.aclose()


async def test_wrong_messages_of_a_seated_player_get_their_error_and_change_nothing(stack):
    match_id = await stack.match()
    witness, _ = await stack.join(match_id, "witness")
    ws, _ = await stack.join(match_id, "mallory")
    assert await answers(ws, SEATED) == expected(SEATED)
    ws, _ = await stack.join(match_id, "mallory", fmt=protocol.MSGPACK)  # replaces the JSON connection
    assert await answers(ws, SEATED_MSGPACK) == expected(SEATED_MSGPACK)
    await ws.send_json({"t": "input", "seq": 1, "data": {"dx": 1, "dy": 0}})  # a valid one is still applied
    while (await ws.until("state"))["acks"].get("mallory", 0) < 1:
        pass
    assert await stack.node.logged_inputs(match_id) == {"mallory": [[1, 1]]}
    assert (await witness.until("state"))["acks"]["witness"] == 0


async def test_inputs_the_game_cannot_take_are_refused_by_the_match_with_their_seq(stack):
    """`invalid_input` comes from the match at the next tick, carries the seq, and moves no ack."""
    match_id = await stack.match()
    ws, _ = await stack.join(match_id, "mallory")
    cases = [[1, 2], "left", None, {"dx": 1}, {"dx": 1, "dy": 0, "dz": 0}, {"dx": "far", "dy": 0},
             {"dx": True, "dy": 0}, {"dx": 10 ** 400, "dy": 0}]
    for seq, data in enumerate(cases, start=1):
        await ws.send_json({"t": "input", "seq": seq, "data": data})
    refused = set()
    with trio.fail_after(10):
        while len(refused) < len(cases):
            error = await ws.until("error")
            assert error["code"] == "invalid_input", error
            refused.add(error["seq"])
    assert refused == set(range(1, len(cases) + 1))
    state = await ws.until("state")
    assert state["acks"]["mallory"] == 0
    assert await stack.node.logged_inputs(match_id) == {}


async def test_errors_past_the_budget_close_with_1008(stack):
    """2 error frames a second, bursts of 20; then close 1008 "too many errors"."""
    match_id = await stack.match()
    for seated in (False, True):
        ws = (await stack.join(match_id, "mallory"))[0] if seated else await stack.connect(match_id)
        started = trio.current_time()
        await ws.send(wire(ws, "garbage") * 60)
        with trio.fail_after(10):
            seen, closed = await ws.until_close()
        elapsed = trio.current_time() - started
        errors = [m for m in seen if m["t"] == "error"]
        assert {e["code"] for e in errors} == {"bad_frame"}
        assert 20 <= len(errors) <= 20 + 2 * elapsed + 1, (len(errors), elapsed)
        assert (closed.code, closed.reason) == (1008, "too many errors")


async def test_a_spectator_cannot_send_inputs_and_spends_its_error_budget(stack):
    match_id = await stack.match()
    ws, welcome = await stack.join(match_id, "watcher", role="spectator")
    assert welcome["role"] == "spectator"
    await ws.send(b"".join(ws.encode({"t": "input", "seq": seq, "data": {"dx": 1, "dy": 0}})
                           for seq in range(1, 41)))
    with trio.fail_after(10):
        seen, closed = await ws.until_close()
    errors = [m for m in seen if m["t"] == "error"]
    assert errors and all(e["code"] == "forbidden" for e in errors)
    assert [e["seq"] for e in errors] == list(range(1, len(errors) + 1))
    assert closed.code == 1008
    assert await stack.node.logged_inputs(match_id) == {}
    assert metric(stack.node, "arbiter_inputs_total") == 0
