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

import attrs
import cattrs

from . import canonical_fast


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


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(data: Any) -> bytes:
    """Compact JSON of already-unstructured data, UTF-8, no NaN. (One encoder for every call:
    `json.dumps` with options builds a new one each time.)"""
    return _ENCODER.encode(data).encode()


_UNSEEN = object()
_fast_encoders: dict[type, Any] = {}  # state class -> canonical_fast's generated function, or None


def encode_state(state: Any) -> bytes:
    """The canonical encoding: JSON of the unstructured state. Written directly by generated code
    (canonical_fast) for the states it covers, with the same text; the reference way otherwise."""
    cls = type(state)
    fast = _fast_encoders.get(cls, _UNSEEN)
    if fast is _UNSEEN:
        fast = _fast_encoders[cls] = canonical_fast.compile_encoder(cls, converter)
    if fast is not None:
        try:
            return fast(state).encode()
        except (canonical_fast.Fallback, RecursionError):
            pass
    return encode_state_reference(state)


def encode_state_reference(state: Any) -> bytes:
    return encode(converter.unstructure(state))


def checksum(canonical: bytes) -> int:
    """A signed 64-bit checksum (fits an SQLite INTEGER) of a canonical encoding."""
    return int.from_bytes(hashlib.blake2b(canonical, digest_size=8).digest(), "big", signed=True)


def is_frozen(cls: type) -> bool:
    """Whether instances of an attrs class refuse changes (so that one can be shared)."""
    try:
        probe = object.__new__(cls)
        field = next(iter(attrs.fields(cls)), None)
        if field is None:
            return True
        setattr(probe, field.name, None)
    except attrs.exceptions.FrozenInstanceError:
        return True
    except Exception:
        return False
    return False


class InputCache:
    """Structured inputs by their raw data, for input types whose instances are frozen.

    Players send the same few inputs again and again (a direction, a move); structuring one costs
    several microseconds. Only successes are kept, only flat objects of scalars are keyed, and
    the cache is emptied when it holds `size` entries, so it stays small.

    `by_identity`: also keep each result by the identity of the object it came from, for callers
    whose objects are shared and never changed: the input log read back by `commands_after`, where
    one decoded object stands for every input with the same text. It holds a reference to each
    object (so an identity is never reused while it is cached): for a re-simulation, not a live match."""

    def __init__(self, input_type: type, size: int = 4096, by_identity: bool = False):
        self.input_type = input_type
        self.enabled = is_frozen(input_type)
        self.size = size
        self._cache: dict[tuple, Any] = {}
        self._by_identity = by_identity
        self._identities: dict[int, tuple[dict, Any]] = {}

    def structure(self, data: dict) -> Any:
        if not self.enabled:
            return converter.structure(data, self.input_type)
        if self._by_identity:
            hit = self._identities.get(id(data))
            if hit is not None and hit[0] is data:
                return hit[1]
            found = self._structure(data)
            if len(self._identities) >= self.size:
                self._identities.clear()
            self._identities[id(data)] = (data, found)
            return found
        return self._structure(data)

    def _structure(self, data: dict) -> Any:
        try:
            key = tuple((name, type(value), value) for name, value in data.items())
            hash(key)
        except TypeError:  # a list or an object inside: not a key
            return converter.structure(data, self.input_type)
        found = self._cache.get(key)
        if found is None:
            found = converter.structure(data, self.input_type)
            if len(self._cache) >= self.size:
                self._cache.clear()
            self._cache[key] = found
        return found
