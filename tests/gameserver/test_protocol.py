import json

import msgpack
import pytest
from hypothesis import given, strategies as st

from gameserver import protocol
from gameserver.protocol import Auth, Input, Leave, Ping, ProtocolError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
seqs = st.integers(1, protocol.MAX_SEQ)
messages = st.one_of(
    st.builds(Auth, st.text(min_size=1, max_size=200), st.none() | st.integers(0, protocol.MAX_SEQ)),
    st.builds(Input, seqs, json_values),
    st.builds(Ping, st.none() | st.integers(-1000, 1000) | st.text(max_size=64)),
    st.just(Leave()),
)


def to_wire(message):
    if isinstance(message, Auth):
        body = {"t": "auth", "token": message.token}
        if message.resume_tick is not None:
            body["resume_tick"] = message.resume_tick
    elif isinstance(message, Input):
        body = {"t": "input", "seq": message.seq, "data": message.data}
    elif isinstance(message, Ping):
        body = {"t": "ping", "id": message.id}
    else:
        body = {"t": "leave"}
    return body


@given(messages)
def test_round_trip_json(message):
    assert protocol.decode_client(json.dumps(to_wire(message)), protocol.JSON) == message


@given(messages)
def test_round_trip_msgpack(message):
    frame = msgpack.packb(to_wire(message), use_bin_type=True)
    assert protocol.decode_client(frame, protocol.MSGPACK) == message


@given(st.text(max_size=200))
def test_any_text_decodes_or_raises_protocol_error(text):
    try:
        protocol.decode_client(text, protocol.JSON)
    except ProtocolError as error:
        assert error.code == "bad_frame"


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_protocol_error(data):
    try:
        protocol.decode_client(data, protocol.MSGPACK)
    except ProtocolError as error:
        assert error.code == "bad_frame"


@given(json_values)
def test_any_json_value_decodes_or_raises_protocol_error(value):
    try:
        protocol.decode_client(json.dumps(value), protocol.JSON)
    except ProtocolError as error:
        assert error.code == "bad_frame"


@pytest.mark.parametrize("frame", [
    '{"t":"input","seq":0,"data":{}}',  # seq starts at 1
    '{"t":"input","seq":true,"data":{}}',
    '{"t":"input","seq":1.5,"data":{}}',
    '{"t":"input","seq":9007199254740992,"data":{}}',  # past 2**53 - 1
    '{"t":"input","seq":1}',
    '{"t":"input","seq":1,"data":{},"x":1}',
    '{"t":"auth"}',
    '{"t":"auth","token":""}',
    '{"t":"auth","token":"x","resume_tick":-1}',
    '{"t":"ping","id":[1]}',
    '{"t":"nope"}',
    '[]',
    '"input"',
    '{"t":"input","seq":1,"data":{}',
    '[' * 100000,
])
def test_bad_frames_are_refused(frame):
    with pytest.raises(ProtocolError):
        protocol.decode_client(frame, protocol.JSON)


def test_format_is_enforced():
    with pytest.raises(ProtocolError):
        protocol.decode_client(b'{"t":"leave"}', protocol.JSON)
    with pytest.raises(ProtocolError):
        protocol.decode_client('{"t":"leave"}', protocol.MSGPACK)


def test_state_frame_is_valid_json():
    frame = protocol.state_frame_json(7, b'{"a":3}', b'{"tick":7}')
    assert json.loads(frame) == {"t": "state", "tick": 7, "acks": {"a": 3}, "state": {"tick": 7}}


def test_an_auth_may_carry_an_attachment_of_at_most_16_kib():
    message = protocol.decode_client(json.dumps({"t": "auth", "token": "x", "attachment": {"v": "1.2"}}), protocol.JSON)
    assert message == Auth("x", None, {"v": "1.2"})
    with pytest.raises(ProtocolError):
        protocol.decode_client(json.dumps({"t": "auth", "token": "x", "attachment": "z" * 17000}), protocol.JSON)
