"""The JSON bodies the HTTP API accepts, as attrs classes, and the strict converter that builds them.

Strict: nothing is coerced. A string is a JSON string, a number a JSON number (`true` is not a number of
seconds), a list a JSON array, an object a JSON object, and a field the class does not have is refused.
Each class states the limits that matchmaker/openapi.json documents for the same body:
tests/matchmaker/test_bodies.py checks each class against the document's schema, and
tests/matchmaker/test_schema.py the live server against the whole document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError

from matchmaker.http_app import ApiError, Request
from matchmaker.tickets import MAX_PARTY_SIZE, MAX_PROPERTIES

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by people
CODE_LENGTH = 8  # 40 bits
MAX_TOKEN_TTL_S = 7 * 24 * 3600
MAX_ERRORS_SHOWN = 5


@attrs.frozen
class Limits:
    """What a field's value must also be, besides its type; checked after structuring."""

    pattern: str | None = None  # for re.fullmatch, without ^ and $ ("$" would let "a\n" through)
    min_len: int | None = None
    max_len: int | None = None
    gt: float | None = None
    le: float | None = None

    def check(self, value: Any) -> str | None:
        """What is wrong with `value`, or None."""
        unit = "character" if type(value) is str else "entry" if type(value) is dict else "item"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return f"must match ^{self.pattern}$"
        if self.min_len is not None and len(value) < self.min_len:
            return f"at least {_count(self.min_len, unit)}"
        if self.max_len is not None and len(value) > self.max_len:
            return f"at most {_count(self.max_len, unit)}"
        if self.gt is not None and not value > self.gt:
            return f"must be greater than {self.gt:g}"
        if self.le is not None and not value <= self.le:
            return f"must be at most {self.le:g}"
        return None


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" if n == 1 else f"{n} {unit[:-1]}ies" if unit.endswith("y") else f"{n} {unit}s"


def field(**limits: Any) -> Any:
    """An attrs field (`default`, `factory`) with Limits (`pattern`, `min_len`, `max_len`, `gt`, `le`)."""
    known = {name: limits.pop(name) for name in ("pattern", "min_len", "max_len", "gt", "le") if name in limits}
    return attrs.field(metadata={"limits": Limits(**known)}, **limits)


# Patterns for re.fullmatch (the document's have ^ and $).
NAME = r"[A-Za-z0-9_.:@-]{1,64}"  # queues, player ids
TICKET_ID = re.compile(r"[0-9a-f]{32}")
CODE = f"[{CODE_ALPHABET}]{{{CODE_LENGTH}}}"


@attrs.frozen
class CreateMatch:
    game: str = field(min_len=1, max_len=64)
    params: dict[str, Any] = attrs.field(factory=dict)
    name: str | None = field(default=None, min_len=1, max_len=256)


@attrs.frozen
class TokenRequest:
    player_id: str = field(pattern=NAME)
    role: Literal["player", "spectator"] = "player"
    ttl_s: float | None = field(default=None, gt=0, le=MAX_TOKEN_TTL_S)


@attrs.frozen
class NewTicket:
    queue: str = field(pattern=NAME)
    party: list[str] | None = field(default=None, min_len=1, max_len=MAX_PARTY_SIZE)
    numbers: dict[str, float] = field(factory=dict, max_len=MAX_PROPERTIES)
    strings: dict[str, str] = field(factory=dict, max_len=MAX_PROPERTIES)
    string_sets: dict[str, list[str]] = field(factory=dict, max_len=MAX_PROPERTIES)
    latencies: dict[str, float] = field(factory=dict, max_len=MAX_PROPERTIES)


@attrs.frozen
class NewCustomMatch:
    game: str = field(min_len=1, max_len=64)
    params: dict[str, Any] = attrs.field(factory=dict)
    private: bool = False


@attrs.frozen
class JoinByCode:
    code: str = field(pattern=CODE)


class NotStrict(TypeError):
    """A JSON value of another type than the field's."""


def _expect(kind: type, name: str) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _type: Any) -> Any:
        if type(value) is not kind:
            raise NotStrict(f"expected {name}, got {_json_type(value)}")
        return value

    return structure


def _number(value: Any, _type: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is not int:  # bool is not a number here
        raise NotStrict(f"expected a number, got {_json_type(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError("a number beyond the range of a float") from None


def _json_type(value: Any) -> str:
    return {str: "a string", int: "a number", float: "a number", bool: "a boolean", list: "an array",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _list_hook(type_: Any) -> Callable[[Any, Any], list]:
    item_type = get_args(type_)[0]
    item = _converter.get_structure_hook(item_type)

    def structure(value: Any, _type: Any) -> list:
        if type(value) is not list:
            raise NotStrict(f"expected an array, got {_json_type(value)}")
        structured = []
        for index, member in enumerate(value):
            try:
                structured.append(item(member, item_type))
            except (TypeError, ValueError) as error:
                raise type(error)(f"[{index}]: {error}") from None
        return structured

    return structure


def _dict_hook(type_: Any) -> Callable[[Any, Any], dict]:
    value_type = get_args(type_)[1]
    if value_type is Any:
        return _expect(dict, "an object")
    item = _converter.get_structure_hook(value_type)

    def structure(value: Any, _type: Any) -> dict:
        if type(value) is not dict:
            raise NotStrict(f"expected an object, got {_json_type(value)}")
        structured = {}
        for key, member in value.items():
            try:
                structured[key] = item(member, value_type)  # JSON keys are strings
            except (TypeError, ValueError) as error:
                raise type(error)(f"{key!r}: {error}") from None
        return structured

    return structure


def _literal_hook(type_: Any) -> Callable[[Any, Any], Any]:
    allowed = get_args(type_)

    def structure(value: Any, _type: Any) -> Any:
        if type(value) is not str or value not in allowed:
            raise ValueError("expected one of " + ", ".join(repr(a) for a in allowed))
        return value

    return structure


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(str, _expect(str, "a string"))
_converter.register_structure_hook(bool, _expect(bool, "a boolean"))
_converter.register_structure_hook(float, _number)
_converter.register_structure_hook_factory(lambda t: get_origin(t) is Literal, _literal_hook)
_converter.register_structure_hook_factory(lambda t: get_origin(t) is list, _list_hook)
_converter.register_structure_hook_factory(lambda t: get_origin(t) is dict, _dict_hook)


def _message(error: BaseException, _type: Any) -> str:
    if isinstance(error, KeyError):
        return "required field missing"
    if isinstance(error, ForbiddenExtraKeysError):
        return "fields not allowed: " + ", ".join(sorted(error.extra_fields))
    return str(error) or type(error).__name__


T = TypeVar("T")


def parse(request: Request, cls: type[T]) -> T:
    """The request's JSON body as a `cls`; ApiError 422 `invalid_request` saying what is wrong (at most
    5 things)."""
    media_type = (request.header(b"content-type") or "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not (media_type.startswith("application/") and
                                                  media_type.endswith("+json")):
        raise ApiError(422, "invalid_request", "body: expected a JSON body (Content-Type: application/json)")
    try:
        text = request.body.decode()  # strict UTF-8 (json.loads would let encoded surrogates through)
        decoded = json.loads(text)
        if "\\u" in text:  # an escape may be a lone surrogate, which no UTF-8 encoder takes (SQLite's, the wire's)
            json.dumps(decoded, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ApiError(422, "invalid_request", "body: a string with a lone surrogate (\\ud800 to \\udfff)") from None
    except (ValueError, RecursionError) as error:  # UnicodeDecodeError is a ValueError
        raise ApiError(422, "invalid_request", f"body: not JSON ({error})") from None
    if type(decoded) is not dict:
        raise ApiError(422, "invalid_request", f"body: expected an object, got {_json_type(decoded)}")
    try:
        structured = _converter.structure(decoded, cls)
    except Exception as error:  # cattrs gathers every field's error (an ExceptionGroup)
        shown = [f"{where}: {message}" for message, _, where in (
            line.rpartition(" @ ") for line in cattrs.transform_error(error, path="body", format_exception=_message))]
    else:
        shown = []
        for attribute in attrs.fields(cls):
            limits, value = attribute.metadata.get("limits"), getattr(structured, attribute.name)
            wrong = None if limits is None or value is None else limits.check(value)
            if wrong is not None:
                shown.append(f"body.{attribute.name}: {wrong}")
        if not shown:
            return structured
    raise ApiError(422, "invalid_request", "; ".join(shown[:MAX_ERRORS_SHOWN]))
