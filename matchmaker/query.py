"""Query parameters: each read from `Request.query()` (name -> values), checked, or ApiError 422
`invalid_request` naming the parameter. A parameter given more than once counts by its last value,
except for lists; names no route reads are ignored."""

from __future__ import annotations

import math
import re

from matchmaker.http_app import ApiError

_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})

Query = dict[str, list[str]]


def _invalid(name: str, message: str) -> ApiError:
    return ApiError(422, "invalid_request", f"query.{name}: {message}")


def number(query: Query, name: str, default: float, *, low: float, high: float) -> float:
    if name not in query:
        return default
    text = query[name][-1]
    try:
        value = float(text)
    except ValueError:
        raise _invalid(name, f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise _invalid(name, f"must be from {low:g} to {high:g}")
    return value


def integer(query: Query, name: str, default: int | None, *, low: int, high: int | None = None) -> int | None:
    if name not in query:
        return default
    text = query[name][-1].strip()
    if not _INTEGER.fullmatch(text):
        raise _invalid(name, f"expected an integer, got {text!r}")
    value = int(text)
    if value < low or (high is not None and value > high):
        raise _invalid(name, f"must be at least {low}" if high is None else f"must be from {low} to {high}")
    return value


def boolean(query: Query, name: str) -> bool | None:
    if name not in query:
        return None
    text = query[name][-1].lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _invalid(name, f"expected true or false, got {text!r}")


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
