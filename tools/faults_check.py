"""The crash-safety checks of `arbiter faults crash`: what the bots saw, against the match files.

Run after the server has stopped, on its data directory, read-only:

- **No acknowledged input lost.** For every (match, player) a bot played: every seq from 1 to the
  last one it saw acknowledged (but those refused with an error frame) is in the match's input log,
  with the data the bot sent; no seq is logged twice.
- **No state a client saw is lost.** Every welcome and the last state frame before each drop: the
  match re-simulated from its file up to that tick (`recovery.restore`) is exactly that state, and
  the file's last committed tick is not before it.
- **Every match file verifies** (`arbiter replay verify`'s code: re-simulation from the game's init
  and the input log, every stored checksum compared).
- **No match ends twice, no result written twice.** A finished match has exactly one `end` event,
  at its last committed tick, with the status its match row has, and nothing is logged after it;
  no bot saw two `end` events of one match.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs

from gameserver import storage
from gameserver.game import Game
from gameserver.recovery import Diverged, restore
from gameserver.simulation import GameCrashed
from gameserver.storage import FAILED, FINISHED, MatchFileError, MatchStore
from tools.replay_open import code_check
from tools.replay_verify import verify

EXAMPLES = 5  # problems kept per kind


@attrs.define
class Claim:
    """What the bots (one or more clients of one player) saw of one match."""

    match_id: str
    player: str
    acked: int = 0  # the last seq seen acknowledged
    sent: dict[int, Any] = attrs.Factory(dict)  # seq -> the data sent with it
    refused: set[int] = attrs.Factory(set)  # refused with an error frame carrying the seq
    ends: int = 0  # `end` events seen
    states: list[tuple[int, Any]] = attrs.Factory(list)  # (tick, state): welcomes, the last state before a drop
    regressions: list[str] = attrs.Factory(list)  # a welcome before a tick already seen


@attrs.define
class Findings:
    """The figures of a check and what it found wrong (each problem kind with a few examples)."""

    figures: dict[str, int] = attrs.Factory(dict)
    problems: dict[str, list[str]] = attrs.Factory(dict)

    def count(self, name: str, n: int = 1) -> None:
        self.figures[name] = self.figures.get(name, 0) + n

    def problem(self, kind: str, example: str) -> None:
        self.count(f"problem_{kind}")
        examples = self.problems.setdefault(kind, [])
        if len(examples) < EXAMPLES:
            examples.append(example[:400])

    @property
    def ok(self) -> bool:
        return not self.problems


def check_data_dir(data_dir: Path, claims: Iterable[Claim], games: dict[str, type[Game]], *,
                   all_finished: bool = True) -> Findings:
    """Every check above, over every match file in `data_dir` and every claim."""
    found = Findings()
    by_match: dict[str, list[Claim]] = {}
    for claim in claims:
        by_match.setdefault(claim.match_id, []).append(claim)
    for path in sorted((data_dir / "matches").glob(f"*{storage.SUFFIX}")):
        _check_file(path, by_match.pop(path.stem, []), games, found, all_finished)
    for match_id, lost_claims in by_match.items():  # claims about a match that has no file
        for claim in lost_claims:
            found.problem("no_match_file", f"{match_id}: {claim.player} saw it, but it has no file")
            lost = [s for s in range(1, claim.acked + 1) if s not in claim.refused]
            if lost:
                found.count("inputs_lost", len(lost))
    return found


def _check_file(path: Path, claims: list[Claim], games: dict[str, type[Game]], found: Findings,
                all_finished: bool) -> None:
    found.count("match_files")
    try:
        store = MatchStore.open(path, read_only=True, check=True)
    except MatchFileError as error:
        found.problem("unusable_file", str(error))
        return
    try:
        meta = store.meta()
        cls = games.get(meta.game)
        if cls is None:
            found.problem("unknown_game", f"{path.name}: {meta.game}")
            return
        found.count(f"status_{meta.status}")
        if all_finished and meta.status not in FINISHED:
            found.problem("unfinished", f"{meta.match_id} is still {meta.status} at tick {meta.tick}")
        verdict = verify(store, cls(), code_check(meta, cls))
        if verdict["ok"]:
            found.count("files_verified")
            found.count("ticks_verified", verdict["verified_ticks"])
        else:
            found.problem("does_not_verify", f"{meta.match_id}: {verdict['divergence']['reason']} at tick "
                                             f"{verdict['divergence']['tick']}")
        _check_end(store, meta, found)
        logged = _check_inputs(store, meta, found)
        for claim in _merged(claims):
            _check_claim(store, cls(), meta, claim, logged, found)
    except (sqlite3.DatabaseError, MatchFileError) as error:
        found.problem("unreadable", f"{path.name}: {error}")
    finally:
        store.close()


def _check_end(store: MatchStore, meta: storage.MatchMeta, found: Findings) -> None:
    ends = store.conn.execute("SELECT tick, data FROM events WHERE kind = 'end' ORDER BY tick, idx").fetchall()
    expected = 1 if meta.status in FINISHED and meta.status != FAILED else 0
    if len(ends) > 1:
        found.problem("ended_twice", f"{meta.match_id}: {len(ends)} end events, at ticks {[t for t, _ in ends]}")
    elif len(ends) != expected:
        found.problem("end_event", f"{meta.match_id} is {meta.status} with {len(ends)} end events")
    if ends:
        tick, data = ends[-1]
        data = json.loads(data) if data is not None else {}
        if tick != meta.tick:
            found.problem("end_not_last", f"{meta.match_id}: ended at tick {tick}, last committed tick {meta.tick}")
        if isinstance(data, dict) and data.get("status") not in (None, meta.status):
            found.problem("result_differs", f"{meta.match_id}: end event says {data.get('status')}, "
                                            f"the match row {meta.status}")
    if meta.status in FINISHED and meta.ended_at is None:
        found.problem("result_missing", f"{meta.match_id} is {meta.status} with no ended_at")
    after = store.conn.execute(
        "SELECT (SELECT COUNT(*) FROM inputs WHERE tick > ?1) + (SELECT COUNT(*) FROM events WHERE tick > ?1)"
        " + (SELECT COUNT(*) FROM checksums WHERE tick > ?1)", (meta.tick,)).fetchone()[0]
    if after:
        found.problem("logged_after_last_tick", f"{meta.match_id}: {after} rows after its last tick {meta.tick}")


def _check_inputs(store: MatchStore, meta: storage.MatchMeta, found: Findings) -> dict[tuple[str, int], Any]:
    """(player, seq) -> logged data; a seq logged twice is a problem."""
    logged: dict[tuple[str, int], Any] = {}
    for player, seq, data in store.conn.execute(
            "SELECT player_id, seq, data FROM inputs WHERE kind = 'input' ORDER BY tick, idx"):
        if (player, seq) in logged:
            found.problem("input_logged_twice", f"{meta.match_id}: {player} seq {seq}")
        logged[(player, seq)] = json.loads(data) if data is not None else None
    found.count("inputs_logged", len(logged))
    return logged


def _merged(claims: list[Claim]) -> list[Claim]:
    """One claim per player: a bot may have used more than one client in a match."""
    merged: dict[str, Claim] = {}
    for claim in claims:
        into = merged.setdefault(claim.player, Claim(claim.match_id, claim.player))
        into.acked = max(into.acked, claim.acked)
        into.sent.update(claim.sent)
        into.refused |= claim.refused
        into.ends += claim.ends
        into.states += claim.states
        into.regressions += claim.regressions
    return list(merged.values())


def _check_claim(store: MatchStore, game: Game, meta: storage.MatchMeta, claim: Claim,
                 logged: dict[tuple[str, int], Any], found: Findings) -> None:
    where = f"{meta.match_id} {claim.player}"
    found.count("seats_checked")
    found.count("inputs_sent", len(claim.sent))
    for seq in range(1, claim.acked + 1):
        if seq in claim.refused:
            continue
        found.count("acked_inputs_checked")
        if (claim.player, seq) not in logged:
            found.count("inputs_lost")
            found.problem("input_lost", f"{where}: seq {seq} was acknowledged (up to {claim.acked}) but is not logged")
        elif seq in claim.sent and logged[(claim.player, seq)] != claim.sent[seq]:
            found.problem("input_differs", f"{where}: seq {seq} logged as {logged[(claim.player, seq)]!r}, "
                                           f"sent as {claim.sent[seq]!r}")
    if claim.ends > 1:
        found.problem("client_saw_two_ends", f"{where}: {claim.ends} end events")
    for regression in claim.regressions:
        found.problem("client_went_back", f"{where}: {regression}")
    for tick, state in claim.states:
        found.count("states_checked")
        if tick > meta.tick:
            found.problem("state_lost", f"{where}: saw tick {tick}, the file's last committed tick is {meta.tick}")
            continue
        try:
            rebuilt = json.loads(restore(store, game, until=tick).canonical())
        except (Diverged, GameCrashed, MatchFileError) as error:
            found.problem("state_not_rebuilt", f"{where}: tick {tick}: {error}")
            continue
        if rebuilt != state:
            found.problem("state_differs", f"{where}: the state seen at tick {tick} is not the file's")
