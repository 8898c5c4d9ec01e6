"""The server's RFC 6455 codec (gameserver/websocket.py): frames from any split of the byte stream,
every protocol violation with its close code, and the handshake's checks."""

import base64
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gameserver import websocket
from gameserver.websocket import HandshakeError, Parser, WebSocketError
from ws_helpers import client_frame

LIMIT = 1024


def parse_all(data: bytes, cuts: list[int], limit: int = LIMIT) -> list:
    parser, out, at = Parser(limit), [], 0
    for cut in sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]:
        parser.feed(data[at:cut])
        at = cut
        while (item := parser.next()) is not None:
            out.append(item)
    return out


messages = st.one_of(st.text(max_size=300), st.binary(max_size=300))


@settings(max_examples=200)
@given(st.lists(st.tuples(messages, st.integers(1, 4)), max_size=8), st.lists(st.integers(0, 10_000), max_size=12),
       st.binary(max_size=40))
def test_messages_survive_any_split_fragmentation_and_interleaved_pings(items, cuts, ping):
    data, expected = b"", []
    for text_or_bytes, pieces in items:
        payload = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
        opcode = websocket.TEXT if isinstance(text_or_bytes, str) else websocket.BINARY
        step = max(1, -(-len(payload) // pieces))
        chunks = [payload[i:i + step] for i in range(0, len(payload), step)] or [b""]
        for index, chunk in enumerate(chunks):
            data += client_frame(opcode if index == 0 else websocket.CONTINUATION, chunk,
                                 fin=index == len(chunks) - 1)
            if index == 0 and len(chunks) > 1:
                data += client_frame(websocket.PING, ping[:125])  # control frames may interleave
                expected.append(("ping", ping[:125]))
        expected.append(text_or_bytes)
    assert parse_all(data, cuts) == expected


@given(st.binary(max_size=2000), st.binary(min_size=4, max_size=4))
def test_unmask_is_xor_with_the_repeated_key(data, mask):
    assert websocket.unmask(mask, data) == bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def test_length_forms_and_close_frames():
    payload = b"x" * 300
    assert parse_all(client_frame(websocket.BINARY, payload, length_form="long"), [], limit=1000) == [payload]
    close = client_frame(websocket.CLOSE, struct.pack("!H", 4000) + "bye ü".encode())
    assert parse_all(close, []) == [("close", 4000, "bye ü")]
    assert parse_all(client_frame(websocket.CLOSE, b""), []) == [("close", websocket.NO_STATUS, "")]


@pytest.mark.parametrize("data, code", [
    (client_frame(websocket.TEXT, b"hi", masked=False), websocket.PROTOCOL_ERROR),
    (client_frame(websocket.TEXT, b"hi", rsv=0x40), websocket.PROTOCOL_ERROR),
    (client_frame(0x3, b"hi"), websocket.PROTOCOL_ERROR),
    (client_frame(websocket.PING, b"x" * 126), websocket.PROTOCOL_ERROR),
    (client_frame(websocket.PING, b"x", fin=False), websocket.PROTOCOL_ERROR),
    (client_frame(websocket.CONTINUATION, b"x"), websocket.PROTOCOL_ERROR),
    (client_frame(websocket.TEXT, b"a", fin=False) + client_frame(websocket.TEXT, b"b"), websocket.PROTOCOL_ERROR),
    (client_frame(websocket.TEXT, b"\xff\xfe"), websocket.INVALID_DATA),
    (client_frame(websocket.TEXT, b"x" * (LIMIT + 1)), websocket.TOO_BIG),
    (client_frame(websocket.TEXT, b"x" * 600, fin=False) + client_frame(websocket.CONTINUATION, b"x" * 600),
     websocket.TOO_BIG),
    (client_frame(websocket.CLOSE, b"\x03"), websocket.PROTOCOL_ERROR),
    (client_frame(websocket.CLOSE, struct.pack("!H", 1005)), websocket.PROTOCOL_ERROR),
    (client_frame(websocket.CLOSE, struct.pack("!H", 999)), websocket.PROTOCOL_ERROR),
])
def test_protocol_violations_name_their_close_code(data, code):
    with pytest.raises(WebSocketError) as error:
        parse_all(data, [])
    assert error.value.code == code


def test_a_huge_length_header_is_refused_before_any_payload_arrives():
    head = struct.pack("!BBQ", 0x82, 0x80 | 127, 10**12)
    parser = Parser(LIMIT)
    parser.feed(head)
    with pytest.raises(WebSocketError) as error:
        parser.next()
    assert error.value.code == websocket.TOO_BIG
    parser = Parser(LIMIT)
    parser.feed(struct.pack("!BBQ", 0x82, 0x80 | 127, 1 << 63))
    with pytest.raises(WebSocketError):
        parser.next()


def test_server_frames_have_the_right_length_forms():
    for size in (0, 125, 126, 65535, 65536):
        wire = websocket.message(b"y" * size)
        assert wire[0] == 0x82 and not wire[1] & 0x80
        length = wire[1] & 0x7F
        if size < 126:
            assert length == size and len(wire) == 2 + size
        elif size < 65536:
            assert length == 126 and struct.unpack("!H", wire[2:4])[0] == size
        else:
            assert length == 127 and struct.unpack("!Q", wire[2:10])[0] == size
    assert websocket.message("é")[:2] == bytes((0x81, 2))
    assert websocket.close_frame(1000, "x" * 200)[1] == 125  # the reason is cut to fit a control frame


KEY = base64.b64encode(b"0123456789abcdef")
GOOD = [(b"host", b"x"), (b"upgrade", b"WebSocket"), (b"connection", b"keep-alive, Upgrade"),
        (b"sec-websocket-version", b"13"), (b"sec-websocket-key", KEY),
        (b"sec-websocket-protocol", b"arbiter.msgpack.v1, arbiter.json.v1")]


def test_a_good_handshake_is_accepted_with_rfc_6455s_key():
    accept, proposed = websocket.check_handshake(b"GET", GOOD)
    # RFC 6455 section 1.3's example
    assert websocket.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept == websocket.accept_key(KEY)
    assert proposed == ("arbiter.msgpack.v1", "arbiter.json.v1")


@pytest.mark.parametrize("method, drop, add, status", [
    (b"POST", None, None, 405),
    (b"GET", b"upgrade", None, 426),
    (b"GET", b"connection", None, 400),
    (b"GET", b"sec-websocket-version", (b"sec-websocket-version", b"8"), 426),
    (b"GET", b"sec-websocket-key", (b"sec-websocket-key", b"short"), 400),
    (b"GET", None, (b"sec-websocket-key", KEY), 400),  # two keys
])
def test_bad_handshakes_are_refused_with_a_status(method, drop, add, status):
    headers = [h for h in GOOD if h[0] != drop] + ([add] if add else [])
    with pytest.raises(HandshakeError) as error:
        websocket.check_handshake(method, headers)
    assert error.value.status == status
