"""Match and player ids: random or derived from a name, always safe as a file name.

A match id is 26 characters of lowercase Crockford base32 (130 bits, the top two always
zero): no dots, no slashes, no case games on case-insensitive file systems. `match_id_from_name`
hashes the name, so the same name always gives the same id (Durable Objects' `idFromName`).
"""

from __future__ import annotations

import hashlib
import re
import secrets

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
MATCH_ID_LENGTH = 26
_MATCH_ID = re.compile(f"[{ALPHABET}]{{{MATCH_ID_LENGTH}}}")
# Player ids come from tokens and game code: printable, short, no path or control characters.
_PLAYER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_NAME_MAX = 256


class InvalidId(ValueError):
    """An id that is not of the documented form. The message says what is wrong."""


def _encode(raw: bytes) -> str:
    number = int.from_bytes(raw, "big")
    chars = []
    for _ in range(MATCH_ID_LENGTH):
        chars.append(ALPHABET[number & 31])
        number >>= 5
    return "".join(reversed(chars))


def new_match_id() -> str:
    """A random match id (`newUniqueId`)."""
    return _encode(secrets.token_bytes(16))


def match_id_from_name(name: str) -> str:
    """The match id for a name: the same name always gives the same id (`idFromName`)."""
    if not isinstance(name, str) or not 1 <= len(name) <= _NAME_MAX:
        raise InvalidId(f"a match name is 1 to {_NAME_MAX} characters")
    return _encode(hashlib.blake2b(name.encode(), digest_size=16, person=b"arbiter-match").digest())


def check_match_id(value: object) -> str:
    """Return `value` if it is a well-formed match id, else raise `InvalidId`."""
    if not isinstance(value, str) or not _MATCH_ID.fullmatch(value):
        raise InvalidId(f"a match id is {MATCH_ID_LENGTH} characters of {ALPHABET}")
    if value[0] not in "01234567":  # 130 bits encoded, 128 used: the top digit is < 8
        raise InvalidId("a match id starts with a digit from 0 to 7")
    return value


def check_player_id(value: object) -> str:
    """Return `value` if it is a well-formed player id, else raise `InvalidId`."""
    if not isinstance(value, str) or not _PLAYER_ID.fullmatch(value):
        raise InvalidId("a player id is 1 to 64 characters of A-Z a-z 0-9 _ . : @ -")
    return value
