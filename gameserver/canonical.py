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
import struct
from collections.abc import Callable
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
    if isinstance(error, (TypeError, ValueError)) and error.args and isinstance(error.args[0], str) and error.args[0]:
        # our strict hooks' and attrs validators' own words (a validator adds the attribute, its
        # options and the value as further arguments: not for clients)
        return error.args[0]
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


_BLAKE2B_8 = hashlib.blake2b(digest_size=8)  # never updated: copied for each checksum
_SIGNED_64 = struct.Struct(">q").unpack


def checksum(canonical: bytes) -> int:
    """A signed 64-bit checksum (fits an SQLite INTEGER) of a canonical encoding: the BLAKE2b-64 digest
    as a big-endian signed integer. (Copying a fresh 8-byte BLAKE2b and unpacking its digest costs
    less than building one with its keyword and `int.from_bytes`; the same number.)"""
    blake = _BLAKE2B_8.copy()
    blake.update(canonical)
    return _SIGNED_64(blake.digest())[0]


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


def flat_key(data: dict) -> tuple:
    """A key for a flat object of scalars (an input's data) that tells apart values that compare equal
    but are not the same input: 1, 1.0 and True (by type), 0.0 and -0.0 (a float by its exact bits:
    encoded and simulated, the sign of a zero shows). TypeError if a value is a list or an object."""
    key = tuple((name, type(value), value.hex() if type(value) is float else value) for name, value in data.items())
    hash(key)
    return key


class InputCache:
    """Structured inputs by their raw data, for input types whose instances are frozen.

    Players send the same few inputs again and again (a direction, a move); structuring one costs
    several microseconds. Only successes are kept, only flat objects of scalars are keyed, and
    the cache is emptied when it holds `size` entries, so it stays small.

    `by_identity`: also keep each result by the identity of the object it came from, for callers
    whose objects are shared and never changed: the input log read back by `commands_after`, where
    one decoded object stands for every input with the same text. It holds a reference to each
    object (so an identity is never reused while it is cached): for a re-simulation, not a live match.
    Such a caller may look an object up itself first, `known(id(data))` (None when not seen: a dict's
    lookup, cheaper than calling `structure`)."""

    def __init__(self, input_type: type, size: int = 4096, by_identity: bool = False):
        self.input_type = input_type
        self.enabled = is_frozen(input_type)
        self.size = size
        self._cache: dict[tuple, Any] = {}
        self._identities: dict[int, Any] = {}  # id(data) -> its structured input, while `_held` holds data
        self._held: list[dict] = []
        # `structure(data)`: the structured input (chosen once here, not tested on every call). Closures
        # over the containers, not bound methods kept on self: a cache referring to itself would be a
        # reference cycle, left for the garbage collector (and never freed if frozen, see memory.py)
        # when its match hibernates, instead of freed with it.
        cache, identities, held = self._cache, self._identities, self._held

        def uncached(data: dict) -> Any:
            return converter.structure(data, input_type)

        def structure(data: dict) -> Any:
            try:
                key = flat_key(data)
            except TypeError:  # a list or an object inside: not a key
                return converter.structure(data, input_type)
            found = cache.get(key)
            if found is None:
                found = converter.structure(data, input_type)
                if len(cache) >= size:
                    cache.clear()
                cache[key] = found
            return found

        def by_id(data: dict) -> Any:
            found = identities.get(id(data))
            if found is not None:
                return found
            found = structure(data)
            if len(identities) >= size:
                identities.clear()
                held.clear()
            identities[id(data)] = found
            held.append(data)
            return found

        self.structure: Callable[[dict], Any] = (
            uncached if not self.enabled else by_id if by_identity else structure)
        self.known: Callable[[int], Any] | None = identities.get if by_identity and self.enabled else None
