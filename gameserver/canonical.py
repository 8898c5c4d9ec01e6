"""One converter for game data, the canonical encoding of a state, and its checksum.

The converter is strict: a float field takes an int or a finite float, never a string, a bool or
NaN; an int field takes an int, never a bool or a float; extra keys are refused. That is what
makes "bad input gets a clear error" true for game inputs without each game writing checks.

The canonical encoding is compact JSON in field order (dicts keep their insertion order, which is
deterministic because the simulation is). Snapshots store it; the checksum is taken over it.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import cattrs


def _strict_float(value: Any, _type: type) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    result = float(value)
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def _strict_int(value: Any, _type: type) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def _strict_str(value: Any, _type: type) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _strict_bool(value: Any, _type: type) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {type(value).__name__}")
    return value


def make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(float, _strict_float)
    converter.register_structure_hook(int, _strict_int)
    converter.register_structure_hook(str, _strict_str)
    converter.register_structure_hook(bool, _strict_bool)
    return converter


converter = make_converter()


def _format_leaf(error: BaseException, _type: type | None) -> str:
    if isinstance(error, KeyError):
        return "required field missing"
    if isinstance(error, cattrs.ForbiddenExtraKeysError):
        return f"unknown fields {', '.join(sorted(map(str, error.extra_fields)))}"
    if isinstance(error, (TypeError, ValueError)) and str(error):
        return str(error)  # our strict hooks' and attrs validators' own words
    return f"invalid value ({type(error).__name__})"


def describe_error(error: BaseException) -> str:
    """A one-line, client-safe description of a structuring error."""
    if isinstance(error, cattrs.BaseValidationError):
        parts = cattrs.transform_error(error, format_exception=_format_leaf)
        return "; ".join(parts)[:300] if parts else str(error)[:300]
    return str(error)[:300]


def encode(data: Any) -> bytes:
    """Compact JSON of already-unstructured data, UTF-8, no NaN."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encode_state(state: Any) -> bytes:
    return encode(converter.unstructure(state))


def checksum(canonical: bytes) -> int:
    """A signed 64-bit checksum (fits an SQLite INTEGER) of a canonical encoding."""
    return int.from_bytes(hashlib.blake2b(canonical, digest_size=8).digest(), "big", signed=True)
