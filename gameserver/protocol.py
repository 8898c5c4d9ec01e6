"""The wire protocol: client messages, server frames, error codes and close codes (docs/protocol.md).

Sans-IO: bytes or text in, messages out; messages in, text or bytes out. JSON text frames by
default; msgpack binary frames when the client asks for the `arbiter.msgpack.v1` subprotocol.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import attrs
import msgpack

from .canonical import encode

JSON = "json"
MSGPACK = "msgpack"
SUBPROTOCOLS = {"arbiter.json.v1": JSON, "arbiter.msgpack.v1": MSGPACK}
SUBPROTOCOL_OF = {fmt: name for name, fmt in SUBPROTOCOLS.items()}

MAX_FRAME_BYTES = 64 * 1024
MAX_TOKEN_CHARS = 4096
MAX_PING_ID_CHARS = 64
MAX_ATTACHMENT_BYTES = 16 * 1024  # a connection's attachment, as JSON
MAX_SEQ = 2**53 - 1  # exact in every client's numbers, JavaScript's too
# Objects and arrays nested in one frame, the frame's own object included. Deeper data would pass
# here and fail where the match encodes it again (Python's recursion limit), for every match.
MAX_NESTING = 32

# Close codes. 1000-1013 are RFC 6455's; 4000-4999 are Arbiter's.
CLOSE_NORMAL = 1000  # the match ended, or the client left
CLOSE_GOING_AWAY = 1001  # the server is shutting down
CLOSE_POLICY = 1008  # too many protocol errors or inputs past the rate limit
CLOSE_TOO_BIG = 1009  # a frame over MAX_FRAME_BYTES
CLOSE_INTERNAL = 1011  # the server failed (storage); the match is marked failed
CLOSE_TRY_AGAIN = 1013  # the match's inbox stayed full; reconnect and resend
CLOSE_AUTH_FAILED = 4001  # missing, malformed, forged, expired or wrong-match token
CLOSE_AUTH_TIMEOUT = 4002  # no auth message in time
CLOSE_MATCH_NOT_FOUND = 4004  # no such match on this node, or its file is unusable
CLOSE_JOIN_REFUSED = 4005  # the match is full, or the game refused the player
CLOSE_REPLACED = 4009  # the same player connected again elsewhere
CLOSE_SLOW_CONSUMER = 4010  # the client did not read its frames in time
CLOSE_MATCH_CRASHED = 4011  # game code raised; the match is over with status "crashed"
CLOSE_MATCH_OVER = 4012  # the match had already ended when the client connected
CLOSE_UNSENDABLE = 4013  # the match's data does not fit this connection's format (msgpack: an int past 64 bits)


class ProtocolError(Exception):
    """A frame the client got wrong. `code` is the error code the client is sent."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class Auth:
    token: str
    resume_tick: int | None = None
    attachment: Any = None  # kept with the connection (through hibernation) and in the match file


@attrs.frozen
class Input:
    seq: int
    data: Any


@attrs.frozen
class Ping:
    id: Any = None


@attrs.frozen
class Leave:
    pass


ClientMessage = Auth | Input | Ping | Leave


def _int(value: Any, name: str, low: int = 0, high: int = MAX_SEQ) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ProtocolError("bad_frame", f"{name} must be an integer from {low} to {high}")
    return value


class _NotJSON(ValueError):
    pass


def _not_json(name: str) -> Any:
    raise _NotJSON(f"a frame is strict JSON: {name} is not a JSON value")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):  # 1e999: not a number JSON can carry back
        raise _NotJSON("a frame is strict JSON: a number is out of range")
    return value


# Python's json module reads NaN, Infinity and -Infinity, and turns 1e999 into inf: none of them is
# JSON, and none can be stored or sent back (the canonical encoding refuses them). One decoder for
# every frame: json.loads with options would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_not_json, parse_float=_finite_float)


_NOT_PLAIN = ("bad_frame", "a frame holds plain JSON data: text is valid Unicode, numbers are finite, "
                           "no binary or extension types")


def _check_plain(value: Any) -> None:
    """Raise ValueError unless `value` is plain JSON data (what msgpack decodes may be bytes, an
    extension type, a timestamp, NaN or an infinity, or have binary keys: such a value would be
    accepted here and fail later, where the match stores it)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return
    if kind is float:
        if value - value != 0.0:  # NaN or an infinity
            raise ValueError("not finite")
    elif kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError("a key is not text")
            _check_plain(item)
    elif kind is list:
        for item in value:
            _check_plain(item)
    else:
        raise ValueError(f"{kind.__name__} is not JSON")


def nested_deeper(value: Any, levels: int) -> bool:
    """Whether objects and arrays nest more than `levels` deep in `value` (a scalar: 0 deep)."""
    kind = type(value)
    if kind is dict:
        inside = value.values()
    elif kind is list:
        inside = value
    else:
        return False
    return levels <= 0 or any(nested_deeper(item, levels - 1) for item in inside)


_TOO_DEEP = ("bad_frame", f"objects and arrays nest at most {MAX_NESTING} deep in a frame")


def decode_client(frame: str | bytes, fmt: str) -> ClientMessage:
    """Decode one client frame. Raises `ProtocolError` for anything that is not a valid message."""
    if fmt == JSON:
        if not isinstance(frame, str):
            raise ProtocolError("bad_frame", "this connection speaks JSON text frames")
        try:
            body = _DECODER.decode(frame)
        except _NotJSON as error:
            raise ProtocolError("bad_frame", str(error)) from None
        except (ValueError, RecursionError):
            raise ProtocolError("bad_frame", "a frame is one JSON object") from None
        # (no frame with fewer brackets than that can nest deeper: most are not looked at again)
        if frame.count("{") + frame.count("[") > MAX_NESTING and nested_deeper(body, MAX_NESTING):
            raise ProtocolError(*_TOO_DEEP)
        if "\\u" in frame:  # an escape may be a lone surrogate, which no UTF-8 encoder takes
            try:
                encode(body)
            except ValueError:
                raise ProtocolError(*_NOT_PLAIN) from None
    else:
        if not isinstance(frame, bytes):
            raise ProtocolError("bad_frame", "this connection speaks msgpack binary frames")
        try:
            body = msgpack.unpackb(frame, raw=False, strict_map_key=True)
        except (ValueError, TypeError, msgpack.UnpackException):
            raise ProtocolError("bad_frame", "a frame is one msgpack map") from None
        if nested_deeper(body, MAX_NESTING):
            raise ProtocolError(*_TOO_DEEP)
    if not isinstance(body, dict):
        raise ProtocolError("bad_frame", "a frame is an object with a type field 't'")
    kind = body.get("t")
    if kind == "input":
        _only(body, {"t", "seq", "data"})
        seq = _int(body.get("seq"), "seq", 1)
        if "data" not in body:
            raise ProtocolError("bad_frame", "an input has data")
        data = body["data"]
        if fmt != JSON:  # JSON text decodes to plain data already (see _DECODER and the escape check)
            try:
                _check_plain(data)
            except (ValueError, RecursionError):
                raise ProtocolError(*_NOT_PLAIN) from None
        return Input(seq, data)
    if kind == "ping":
        _only(body, {"t", "id"})
        ping_id = body.get("id")
        if ping_id is not None and not (
            (isinstance(ping_id, (int, float)) and not isinstance(ping_id, bool) and abs(ping_id) <= MAX_SEQ)
            or (isinstance(ping_id, str) and len(ping_id) <= MAX_PING_ID_CHARS)
        ):
            raise ProtocolError("bad_frame", f"a ping id is a number or a string of at most {MAX_PING_ID_CHARS}")
        return Ping(ping_id)
    if kind == "auth":
        _only(body, {"t", "token", "resume_tick", "attachment"})
        token = body.get("token")
        if not isinstance(token, str) or not 1 <= len(token) <= MAX_TOKEN_CHARS:
            raise ProtocolError("bad_frame", "auth needs a token string")
        resume = body.get("resume_tick")
        attachment = body.get("attachment")
        if attachment is not None:
            try:
                size = len(encode(attachment))
            except (TypeError, ValueError):
                raise ProtocolError("bad_frame", "an attachment is plain JSON data") from None
            if size > MAX_ATTACHMENT_BYTES:
                raise ProtocolError("bad_frame", f"an attachment encodes to at most {MAX_ATTACHMENT_BYTES} bytes")
        return Auth(token, None if resume is None else _int(resume, "resume_tick"), attachment)
    if kind == "leave":
        _only(body, {"t"})
        return Leave()
    raise ProtocolError("bad_frame", "t must be one of auth, input, ping, leave")


def _only(body: dict, allowed: set[str]) -> None:
    extra = body.keys() - allowed
    if extra:
        raise ProtocolError("bad_frame", f"unknown fields: {', '.join(sorted(map(str, extra)))[:100]}")


def encode_server(message: dict[str, Any], fmt: str) -> str | bytes:
    """Encode one server frame (a dict with its type in 't')."""
    if fmt == JSON:
        return encode(message).decode()
    return msgpack.packb(message, use_bin_type=True)


UNSENDABLE_REASON = "the match's data does not fit msgpack (an integer past 64 bits): connect with arbiter.json.v1"


def encode_game_data(message: dict[str, Any], fmt: str) -> str | bytes | None:
    """Encode a server frame that carries game data (a state, an event, a welcome) already known to
    be JSON data; None if msgpack cannot carry it (an integer past 64 bits, which JSON allows)."""
    if fmt == JSON:
        return encode(message).decode()
    try:
        return msgpack.packb(message, use_bin_type=True)
    except (OverflowError, ValueError, TypeError):
        return None


def event_frames(events: Iterable[tuple[int, str, Any]], fmt: str) -> list[str | bytes] | None:
    """The event frames of (tick, kind, data) in `fmt`; None if msgpack cannot carry one of them."""
    texts = [encode_game_data({"t": "event", "tick": tick, "kind": kind, "data": data}, fmt)
             for tick, kind, data in events]
    return None if None in texts else texts  # type: ignore[return-value]


def error_frame(code: str, message: str, seq: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"t": "error", "code": code, "message": message}
    if seq is not None:
        frame["seq"] = seq
    return frame


def state_frame_json(tick: int, acks_json: bytes, state_json: bytes) -> str:
    """A JSON state frame from already-encoded parts: the state is encoded once per tick."""
    return (b'{"t":"state","tick":%d,"acks":%b,"state":%b}' % (tick, acks_json, state_json)).decode()
