"""The control channel's framing (gameserver/control.py): length-prefixed JSON objects."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gameserver.control import HEADER, ControlProtocolError, Decoder, encode

json_values = st.recursive(st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20)
                           | st.floats(allow_nan=False, allow_infinity=False),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                      max_size=4), max_leaves=20)
messages = st.dictionaries(st.text(max_size=8), json_values, max_size=5)


@given(st.lists(messages, max_size=5), st.data())
def test_messages_come_out_whole_and_in_order_however_the_bytes_are_split(sent, data):
    wire = b"".join(encode(m) for m in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder = Decoder()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(wire)]):
        decoder.feed(wire[start:end])
        while (message := decoder.next()) is not None:
            received.append(message)
    assert received == sent and decoder.pending == 0


def test_an_oversized_length_is_refused_before_the_body_arrives():
    decoder = Decoder(max_message=100)
    decoder.feed((101).to_bytes(HEADER, "big"))
    with pytest.raises(ControlProtocolError):
        decoder.next()


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(body):
    decoder = Decoder()
    decoder.feed(len(body).to_bytes(HEADER, "big") + body)
    with pytest.raises(ControlProtocolError):
        decoder.next()


def test_a_message_too_large_to_send_is_refused():
    with pytest.raises(ControlProtocolError):
        encode({"x": "y" * (64 * 1024 * 1024)})


def test_infinity_passes_as_it_does_within_one_process():
    decoder = Decoder()
    decoder.feed(encode({"lobby_s": float("inf")}))
    assert decoder.next() == {"lobby_s": float("inf")}
