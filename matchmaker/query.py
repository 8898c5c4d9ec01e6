"""Query parameters: each read from `Request.query()` (name -> values), checked, or ApiError 422
`invalid_request` naming the parameter. A parameter given more than once counts by its last value,
except for lists; names no route reads are ignored.

Values are written one way only: numbers in plain decimal digits (`2`, `2.5`: no sign, spaces,
exponent or `_`, which Python's float() and int() would take), booleans `true` or `false`.
"""

from __future__ import annotations

import re

from matchmaker.http_app import ApiError

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")  # [0-9], not \d: \d takes the digits of every script
_INTEGER = re.compile(r"[0-9]{1,18}")
_BOOLEANS = {"true": True, "false": False}

Query = dict[str, list[str]]


def _invalid(name: str, message: str) -> ApiError:
    return ApiError(422, "invalid_request", f"query.{name}: {message}")


def number(query: Query, name: str, default: float, *, low: float, high: float) -> float:
    if name not in query:
        return default
    text = query[name][-1]
    if not _DECIMAL.fullmatch(text):
        raise _invalid(name, f"expected decimal digits with an optional fraction (2.5), got {text!r}")
    value = float(text)
    if not low <= value <= high:
        raise _invalid(name, f"must be from {low:g} to {high:g}")
    return value


def integer(query: Query, name: str, default: int | None, *, low: int, high: int | None = None) -> int | None:
    if name not in query:
        return default
    text = query[name][-1]
    if not _INTEGER.fullmatch(text):
        raise _invalid(name, f"expected decimal digits (at most 18), got {text!r}")
    value = int(text)
    if value < low or (high is not None and value > high):
        raise _invalid(name, f"must be at least {low}" if high is None else f"must be from {low} to {high}")
    return value


def boolean(query: Query, name: str) -> bool | None:
    if name not in query:
        return None
    text = query[name][-1]
    if text not in _BOOLEANS:
        raise _invalid(name, f"expected true or false, got {text!r}")
    return _BOOLEANS[text]


def text(query: Query, name: str, *, max_length: int) -> str | None:
    if name not in query:
        return None
    value = query[name][-1]
    if len(value) > max_length:
        raise _invalid(name, f"at most {max_length} characters")
    return value


def texts(query: Query, name: str, *, max_items: int) -> list[str]:
    values = query.get(name, [])
    if len(values) > max_items:
        raise _invalid(name, f"at most {max_items} values")
    return values
