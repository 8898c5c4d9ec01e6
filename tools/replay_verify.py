"""`arbiter replay verify`: re-simulate a match from its parameters, seed and input log, checking
every stored checksum, and explain the first divergence (a checksum that differs, a logged command
the replay refuses, game code that raises, or a completed tick missing from the log).

The match is rebuilt from the game's `init` (not from the snapshot at tick 0, which is checked
against it), then stepped through the logged commands by `gameserver.recovery.resimulate`, the
code path of recovery after a crash. Everything is read in one read transaction, so a live match
is verified as it was when the command started, while its node goes on writing (WAL).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from gameserver import canonical
from gameserver.game import Game
from gameserver.recovery import Diverged, MissingStep, resimulate
from gameserver.simulation import GameCrashed, Simulation
from gameserver.storage import FINISHED, MatchFileError, MatchMeta, MatchStore

from tools.replay_open import DAMAGED, DIFFERENT_CODE, NON_DETERMINISM, CodeCheck, Unusable
from tools.replay_progress import Progress

DIFF_LINES = 40
_ABSENT = object()


def verify(store: MatchStore, game: Game, check: CodeCheck, progress: Progress | None = None) -> dict[str, Any]:
    """The verdict as one JSON-able object: `ok`, `verified_ticks`, and on divergence `divergence`."""
    started = time.perf_counter()
    store.conn.execute("BEGIN")  # one read snapshot for everything below
    try:
        meta = store.meta()
        result: dict[str, Any] = {"file": str(store.path), "match_id": meta.match_id, "game": meta.game,
                                  "status": meta.status, "live": meta.status not in FINISHED, "last_tick": meta.tick,
                                  "code": check.as_json()}
        try:
            verified, divergence = _run(store, game, meta, check, progress)
        except MatchFileError as error:  # damaged content (Diverged and MissingStep are caught inside)
            raise Unusable(str(error)) from None
        except sqlite3.DatabaseError as error:
            raise Unusable(f"{store.path}: cannot read ({error})") from None
    finally:
        store.conn.execute("COMMIT")
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - started
    result.update(ok=divergence is None, verified_ticks=verified, seconds=round(seconds, 3),
                  ticks_per_s=round(verified / seconds) if seconds > 0 else None, divergence=divergence)
    return result


def _run(store: MatchStore, game: Game, meta: MatchMeta, check: CodeCheck,
         progress: Progress | None) -> tuple[int, dict[str, Any] | None]:
    """(ticks verified, the divergence or None)."""
    snapshot = store.latest_snapshot(at_or_before=0)
    try:
        params = canonical.converter.structure(meta.params, game.params_type)
        sim = Simulation.new(game, match_id=meta.match_id, seed=meta.seed, params=params, now=meta.created_at,
                             roster=snapshot.roster)
        sim.normalize()  # as create_match_file's snapshot did
    except GameCrashed as crash:
        return 0, _divergence(store, check, 0, snapshot.checksum, None, None, None,
                              f"the game's init raised on replay: {crash.error!r}")
    except Exception as error:  # the recorded parameters do not fit this game's code
        return 0, _divergence(store, check, 0, snapshot.checksum, None, None, None,
                              f"the recorded parameters do not fit {game.name} {game.version}: "
                              f"{canonical.describe_error(error)}")
    if sim.checksum() != snapshot.checksum or sim.started != snapshot.started or sim.timers != snapshot.timers:
        return 0, _divergence(store, check, 0, snapshot.checksum, sim.checksum(), sim.canonical(), None,
                              "the game's init made a different match")
    if progress is not None:
        progress.total = max(meta.tick, 1)
    try:
        resimulate(store, sim, meta, meta.tick, progress)
    except MissingStep as missing:  # a hole in the log: nothing to re-simulate the tick from
        return missing.tick - 1, _divergence(store, check, missing.tick, None, None, None, None, missing.reason,
                                             cause=DAMAGED)
    except Diverged as diverged:
        reason = str(diverged.__cause__) if diverged.__cause__ is not None else "the state's checksum differs"
        actual = diverged.sim.canonical() if diverged.sim is not None else None
        return diverged.tick - 1, _divergence(store, check, diverged.tick, diverged.expected, diverged.actual,
                                              actual, diverged.previous, reason)
    except GameCrashed as crash:  # raised on replay where the live match completed the tick
        return crash.tick - 1, _divergence(store, check, crash.tick, None, None, None, None,
                                           f"game code raised on replay: {type(crash.error).__name__}: {crash.error}")
    return meta.tick, None


def _divergence(store: MatchStore, check: CodeCheck, tick: int, expected: int | None, actual: int | None,
                actual_state: bytes | None, previous: bytes | None, reason: str,
                cause: str | None = None) -> dict[str, Any]:
    snapshot = store.latest_snapshot(at_or_before=tick)
    found: dict[str, Any] = {"tick": tick, "cause": cause or check.cause, "reason": reason,
                             "expected_checksum": expected, "actual_checksum": actual,
                             "commands": _commands_at(store, tick)}
    after = json.loads(actual_state) if actual_state is not None else _ABSENT
    if after is _ABSENT:
        found["compared"] = "none"  # the replay made no state at the tick (it raised, or the tick is not logged)
        before = _ABSENT
    elif snapshot.tick == tick:
        found["compared"] = "snapshot"  # the stored state at the tick, against the re-simulated one
        found["expected_state"] = before = json.loads(snapshot.state)
    elif previous is not None:
        found["compared"] = "previous"  # the last verified state (tick - 1), against the re-simulated one
        found["previous_state"] = before = json.loads(previous)
    else:
        found["compared"] = "none"
        before = _ABSENT
    found["actual_state"] = None if after is _ABSENT else after
    found["diff"] = [] if before is _ABSENT or after is _ABSENT else [
        {"path": path, **({} if a is _ABSENT else {"before": a}), **({} if b is _ABSENT else {"after": b})}
        for path, a, b in diff(before, after)]
    return found


def _commands_at(store: MatchStore, tick: int) -> list[dict[str, Any]]:
    rows = store.conn.execute("SELECT kind, player_id, seq, data FROM inputs WHERE tick = ? ORDER BY idx", (tick,))
    return [{"kind": kind, "player": player, "seq": seq, "data": json.loads(data) if data is not None else None}
            for kind, player, seq, data in rows]


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """JSON as {path: leaf}: `players.p1.x`, `board[0][3]`."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix or "(the state)": value}


def diff(before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """(path, before, after) for every leaf that differs; `_ABSENT` where a side has no such path."""
    a, b = flatten(before), flatten(after)
    changed = [(path, value, b.get(path, _ABSENT)) for path, value in a.items()
               if path not in b or b[path] != value or type(b[path]) is not type(value)]
    changed += [(path, _ABSENT, value) for path, value in b.items() if path not in a]
    # an empty object or list on one side whose other side has members: its members say it all
    inside = [path for path, _, _ in changed]
    return [c for c in changed if c[1] not in ({}, []) and c[2] not in ({}, [])
            or not any(p.startswith((c[0] + ".", c[0] + "[")) for p in inside)]


def render(result: dict[str, Any], check: CodeCheck) -> str:
    """The verdict for a person."""
    if result["ok"]:
        live = (f" (an unfinished match, {result['status']}: up to its last committed tick when read)"
                if result["live"] else "")
        return f"verified {result['verified_ticks']} ticks{live}"
    d = result["divergence"]
    lines = [f"DIVERGED at tick {d['tick']} of {result['last_tick']}: {d['reason']}"]
    if d["expected_checksum"] is not None:
        lines.append(f"  stored checksum {d['expected_checksum']}, re-simulated {d['actual_checksum']}")
    lines.append(f"  ticks 0 to {d['tick'] - 1} matched" if d["tick"] > 1 else
                 "  tick 0 (the initial state) matched" if d["tick"] == 1 else "  the initial state (tick 0) differs")
    lines.append("cause: " + (_DAMAGED_CAUSE if d["cause"] == DAMAGED else _cause(check)))
    if d["commands"]:
        lines.append(f"commands logged at tick {d['tick']}:")
        lines += ["  " + " ".join([c["kind"], c["player"]] + ([f"seq {c['seq']}"] if c["seq"] else [])
                                  + ([canonical.encode(c["data"]).decode()] if c["data"] is not None else []))
                  for c in d["commands"][:DIFF_LINES]]
    if d["compared"] == "snapshot":
        lines.append(f"state: the stored snapshot at tick {d['tick']} (expected) -> the re-simulated state (actual):")
    elif d["compared"] == "previous":
        lines.append(f"state: there is no snapshot at tick {d['tick']}, so its stored state is known only by its "
                     "checksum and cannot be shown. Shown instead: the last verified state "
                     f"(tick {d['tick'] - 1}) -> the re-simulated state at tick {d['tick']} (what the replayed "
                     "tick changed; the recorded tick changed something else):")
    else:
        lines.append("state: no state to compare (the replay did not produce one)")
    for change in d["diff"][:DIFF_LINES]:
        a = json.dumps(change["before"]) if "before" in change else "(absent)"
        b = json.dumps(change["after"]) if "after" in change else "(absent)"
        lines.append(f"  {change['path']}: {a} -> {b}")
    if len(d["diff"]) > DIFF_LINES:
        lines.append(f"  ... and {len(d['diff']) - DIFF_LINES} more (--json shows both states whole)")
    if d["compared"] != "none" and not d["diff"]:
        lines.append("  (no difference in the game state: the divergence is in what the runtime tracks, "
                     "such as the seats or timers)")
    return "\n".join(lines)


_DAMAGED_CAUSE = (f"{DAMAGED}: the log lacks a step the match completed (rows lost or removed outside Arbiter), "
                  "so the match cannot be re-simulated past it, whatever the code.")


def _cause(check: CodeCheck) -> str:
    if check.cause == DIFFERENT_CODE:
        return (f"{DIFFERENT_CODE}: {check.describe('recorded with', check.recorded_version, check.recorded_fingerprint)}"
                f", {check.describe('replayed with', check.version, check.fingerprint)}. A changed game is expected "
                "to diverge; replay with the recorded version to look for non-determinism.")
    if check.cause == NON_DETERMINISM:
        return (f"{NON_DETERMINISM}: the game is the recorded version ({check.version}) with the same code "
                f"(fingerprint {check.fingerprint[:12] if check.fingerprint else '?'}), so the same inputs gave a "
                "different result: the game reads something besides its state, inputs, ctx.random and ctx.now "
                "(a clock, a global, the environment, set order), a library it uses changed, or the file was "
                "altered outside Arbiter.")
    return (f"{check.cause}: the version is the recorded one ({check.version}), but the file records no code "
            "fingerprint to compare.")
