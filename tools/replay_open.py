"""Opening a match file for the replay tool: read-only, checked, with its game and how its code compares.

Every replay command opens the file through `open_match`, which never writes to it: SQLite's
read-only mode (`?mode=ro`), no migration (a file that needs one is refused). A file that cannot
be used raises `Unusable`, which the commands turn into a message and exit status 2.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import attrs

from gameserver.game import Game, fingerprint
from gameserver.games import builtin_games, load_game
from gameserver.storage import MatchFileError, MatchMeta, MatchStore

DIFFERENT_CODE = "different game version/code"
NON_DETERMINISM = "non-determinism"
UNKNOWN_CODE = "non-determinism, or a code change the file cannot show"
DAMAGED = "damaged file"  # the log lacks a completed step: whatever the code (recovery.MissingStep)


class Unusable(Exception):
    """The file, or the game it needs, cannot be used: exit status 2."""


@attrs.frozen
class CodeCheck:
    """The game code a match was recorded with, against the code replaying it."""

    game: str
    recorded_version: str
    recorded_fingerprint: str | None  # None: the file predates fingerprints
    version: str | None  # None: this Arbiter does not have the game
    fingerprint: str | None

    @property
    def same_version(self) -> bool:
        return self.version == self.recorded_version

    @property
    def same_code(self) -> bool | None:
        """Whether the code is the recorded code (None: cannot tell, no fingerprint recorded)."""
        if self.recorded_fingerprint is None or self.fingerprint is None:
            return None
        return self.fingerprint == self.recorded_fingerprint

    @property
    def cause(self) -> str:
        """What a divergence means with this code: one of the three constants above."""
        if not self.same_version or self.same_code is False:
            return DIFFERENT_CODE
        return NON_DETERMINISM if self.same_code else UNKNOWN_CODE

    def describe(self, which: str, version: str | None, code: str | None) -> str:
        return f"{which} {self.game} {version} (code {code[:12] if code else 'unknown'})"

    def warning(self) -> str | None:
        """A warning when the replaying code is not the recorded code, else None."""
        if self.version is None or (self.same_version and self.same_code is not False):
            return None
        return (f"warning: {self.describe('recorded with', self.recorded_version, self.recorded_fingerprint)}, "
                f"{self.describe('replayed with', self.version, self.fingerprint)}: "
                "results may differ because the code differs")

    def as_json(self) -> dict[str, Any]:
        return {"game": self.game, "recorded_version": self.recorded_version,
                "recorded_code_fingerprint": self.recorded_fingerprint, "version": self.version,
                "code_fingerprint": self.fingerprint, "same_version": self.same_version, "same_code": self.same_code}


def resolve_games(specs: list[str]) -> dict[str, type[Game]]:
    """The built-in games plus each `--game MODULE:CLASS`, as `arbiter up` does. Raises `Unusable`."""
    games = builtin_games()
    for spec in specs:
        try:
            cls = load_game(spec)
        except ValueError as error:
            raise Unusable(f"--game {spec}: {error}") from None
        games[cls.name] = cls
    return games


def open_match(path: Path, *, check: bool = True) -> MatchStore:
    """Open a match file read-only (with SQLite's quick_check when `check`). Raises `Unusable`."""
    try:
        return MatchStore.open(path, read_only=True, check=check)
    except MatchFileError as error:
        message = str(error)
        wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
        if "cannot open" in message and wal.exists() and not shm.exists():
            message += (f" ({wal.name} is there without {shm.name}: SQLite needs to create it to read the log "
                        "read-only; make the directory writable, or open it once with sqlite3)")
        raise Unusable(message) from None
    except sqlite3.Error as error:  # anything SQLite says that storage did not name
        raise Unusable(f"{path}: cannot read ({error})") from None


def game_for(meta: MatchMeta, games: dict[str, type[Game]]) -> tuple[Game, CodeCheck]:
    """An instance of the match's game and the comparison of its code. Raises `Unusable`."""
    cls = games.get(meta.game)
    if cls is None:
        raise Unusable(f"the match is a {meta.game!r} match, a game this command does not have "
                       f"(it has {', '.join(sorted(games))}); add it with --game MODULE:CLASS")
    return cls(), code_check(meta, cls)


def code_check(meta: MatchMeta, cls: type[Game] | None) -> CodeCheck:
    return CodeCheck(game=meta.game, recorded_version=meta.game_version, recorded_fingerprint=meta.code_fingerprint,
                     version=None if cls is None else cls.version,
                     fingerprint=None if cls is None else fingerprint(cls))


def schema_version(store: MatchStore) -> int:
    return store.conn.execute("PRAGMA user_version").fetchone()[0]


def file_bytes(path: Path) -> dict[str, int]:
    """The sizes of the file and of its write-ahead log (a live or crashed match has one)."""
    wal = Path(f"{path}-wal")
    return {"file": path.stat().st_size, "wal": wal.stat().st_size if wal.exists() else 0}
