"""A replay stream's match file: opened read-only, re-simulated, turned into frames.

The position is rebuilt the way `arbiter replay state` and recovery rebuild a match
(`recovery.restore`: the nearest snapshot, then the logged steps after it, every checksum
checked), and playing on steps it with `recovery.resimulate`. Frames are the live protocol's:
the spectator's view of the state (the game's `view` for the audience `audience(state, None)`),
with `acks`, and the events the live match stored for each tick.

Synchronous (SQLite and the game's code): the stream calls it from a worker thread, one call at
a time. Each call reads in its own short read transactions, so beside a live match's writer (WAL)
the log is never held back from being checkpointed while a viewer pauses.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import canonical, protocol
from .game import Game
from .recovery import Diverged, resimulate, restore
from .replay_stream import Frame
from .simulation import GameCrashed, Simulation, Step
from .storage import FINISHED, MatchFileError, MatchMeta, MatchStore

_BASE_VIEW = Game.view
_BASE_AUDIENCE = Game.audience


class Unavailable(Exception):
    """The match cannot be replayed here: no such file, an unusable file, or a game this node lacks."""


class ReplayFailed(Exception):
    """Reading or re-simulating the file failed part way (a divergence, a damaged file). The message
    is for the client (no paths); the cause, chained, is for the log."""


class ReplaySource:
    def __init__(self, store: MatchStore, game: Game, meta: MatchMeta):
        self.store = store
        self.game = game
        self.meta = meta
        self.sim: Simulation | None = None
        self._shared_view = type(game).view is _BASE_VIEW and type(game).audience is _BASE_AUDIENCE

    @classmethod
    def open(cls, path: Path, games: dict[str, Game]) -> ReplaySource:
        """Open a match file read-only (no migration, no write). Raises `Unavailable`."""
        try:
            store = MatchStore.open(path, read_only=True, check=False)
        except MatchFileError as error:
            raise Unavailable(str(error)) from None
        except sqlite3.Error as error:
            raise Unavailable(f"{path.name}: cannot read ({error})") from None
        try:
            meta = store.meta()
            known = games.get(meta.game)
            if known is None:
                raise Unavailable(f"the match is a {meta.game!r} match, a game this server does not have")
            game = type(known)()  # its own instance: this one runs in worker threads beside the live matches
        except (MatchFileError, sqlite3.Error) as error:
            store.close()
            raise Unavailable(f"{path.name}: cannot read ({error})") from None
        except BaseException:
            store.close()
            raise
        return cls(store, game, meta)

    def close(self) -> None:
        self.store.close()

    @property
    def last_tick(self) -> int:
        return self.meta.tick

    @property
    def finished(self) -> bool:
        return self.meta.status in FINISHED

    def players(self) -> list[str]:
        with _failures():
            return [player for player, _joined, _left in self.store.players()]

    def start(self) -> tuple[list[str], Frame]:
        """What a stream starts with: every player who took a seat, and the state after tick 0."""
        return self.players(), self.seek(0)

    def refresh(self) -> None:
        """Read the match's row again: a live match's last tick grows."""
        with _failures():
            self.meta = self.store.meta()

    def seek(self, tick: int) -> Frame:
        """The state after `tick` (0 to the last tick), rebuilt from the nearest snapshot."""
        with _failures():
            self.refresh()
            self.sim = restore(self.store, self.game, until=tick)
            _checksum, at, _ticked = self.store.steps_after(self.sim.tick - 1, self.sim.tick).get(
                self.sim.tick, (0, 0.0, True))
            return Frame(self.sim.tick, at, (self._state_text(),))

    def advance(self, count: int) -> list[Frame]:
        """The next `count` steps at most (fewer at the end of what the file holds), each as its
        event frames then its state frame. At the end of a finished match, the events stored after
        its last completed tick (a crash's `end`) follow the last state."""
        sim = self.sim
        if sim is None:
            raise RuntimeError("seek first")
        with _failures():
            if sim.tick + count > self.meta.tick and not self.finished:
                self.refresh()
            last = min(sim.tick + count, self.meta.tick)
            if last <= sim.tick:
                return []
            events: dict[int, list[str]] = {}
            for tick, kind, data in self._events(sim.tick, last):
                events.setdefault(tick, []).append(_event_text(tick, kind, data))
            frames: list[Frame] = []

            def on_step(step: Step) -> None:
                texts = events.get(step.tick, [])
                texts.append(self._state_text())
                frames.append(Frame(step.tick, step.at, tuple(texts)))

            resimulate(self.store, sim, self.meta, last, on_step=on_step)
            if frames and self.finished and last == self.meta.tick:
                trailing = [_event_text(t, k, d) for t, k, d in self.store.events_after(last, 100)]
                if trailing:
                    final = frames[-1]
                    frames[-1] = Frame(final.tick, final.at, final.texts + tuple(trailing))
            return frames

    def _events(self, after: int, until: int) -> list[tuple[int, str, Any]]:
        limit = 256
        while True:
            rows = self.store.events_after(after, limit)
            if len(rows) < limit or rows[-1][0] > until:
                return [row for row in rows if row[0] <= until]
            limit *= 4

    def _state_text(self) -> str:
        sim = self.sim
        if self._shared_view:
            state = sim.canonical()
        else:
            try:
                view = self.game.view(sim.state, self.game.audience(sim.state, None))
                state = canonical.encode(canonical.converter.unstructure(view))
            except Exception as error:  # as in the live match, which crashed there (see Actor._output_crashed)
                raise GameCrashed(sim.tick, [], error) from error
        return protocol.state_frame_json(sim.tick, canonical.encode(sim.last_seq), state)


def _event_text(tick: int, kind: str, data: Any) -> str:
    return protocol.encode_server({"t": "event", "tick": tick, "kind": kind, "data": data}, protocol.JSON)


@contextmanager
def _failures() -> Iterator[None]:
    """Turns what reading and re-simulating can raise into `ReplayFailed`, with a message for the client."""
    try:
        yield
    except Diverged as error:
        raise ReplayFailed(f"the replay diverged from the recording at tick {error.tick}") from error
    except (MatchFileError, sqlite3.Error) as error:
        raise ReplayFailed("the match file cannot be read") from error
    except GameCrashed as error:
        raise ReplayFailed(f"the game's code raised on replay at tick {error.tick}") from error
