"""`arbiter replay`: verify, inspect and export a match file, or rebuild its state at any tick.

Files are only ever read (see tools/replay_open.py). Exit status: 0 done, 1 the re-simulation
diverged from the recorded checksums (verify, state) or the reader of stdout went away (any action),
2 a file or game that cannot be used, or bad arguments. See docs/replay.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

from gameserver.recovery import Diverged, restore
from gameserver.simulation import GameCrashed
from gameserver.storage import FINISHED, MatchFileError, MatchStore

from tools.replay_export import FORMATS, export, open_output
from tools.replay_open import (Unusable, code_check, file_bytes, game_for, open_match, resolve_games,
                               schema_version)
from tools.replay_progress import Progress
from tools.replay_verify import render, verify


def _tick(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("a tick is 0 or more")
    return value


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The `replay` command and its actions, added to `arbiter`'s subcommands."""
    replay = commands.add_parser("replay", help="verify, inspect or export a match file, or its state at a tick "
                                                "(read-only)")
    actions = replay.add_subparsers(dest="replay_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("file", type=Path, metavar="FILE", help="a match file (DATA_DIR/matches/MATCH_ID.sqlite3)")
    common.add_argument("--game", action="append", default=[], metavar="MODULE:CLASS",
                        help="a game besides the built-in ones (repeatable)")
    verify_ = actions.add_parser("verify", parents=[common], help="re-simulate the match and check every checksum "
                                 "(exit 1 at the first divergence)")
    verify_.add_argument("--json", action="store_true", help="print one JSON object")
    state = actions.add_parser("state", parents=[common], help="the state after a tick, from the nearest snapshot")
    state.add_argument("--tick", "-t", type=_tick, default=None, help="the tick (default: the last one)")
    export_ = actions.add_parser("export", parents=[common], help="ticks, inputs and events as JSON lines or CSV")
    export_.add_argument("--format", choices=FORMATS, default="jsonl", help="jsonl (default) or csv")
    export_.add_argument("--output", "-o", type=Path, default=None, help="write here instead of stdout")
    inspect = actions.add_parser("inspect", parents=[common], help="what the file holds: game, players, ticks, "
                                 "result, alarms, schema, size")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")


def run_cli(args: argparse.Namespace) -> int:
    try:
        return ACTIONS[args.replay_command](args)
    except Unusable as error:
        print(f"arbiter replay {args.replay_command}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout left (`| head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so exiting does not flush into the closed pipe
        os.close(devnull)
        return 1


def _print(text: str) -> None:
    """The answer on stdout, flushed here: a reader that left raises BrokenPipeError now (see `run_cli`),
    not when the interpreter flushes stdout at exit."""
    print(text)
    sys.stdout.flush()


def _warn(check: Any) -> None:
    warning = check.warning()
    if warning is not None:
        print(warning, file=sys.stderr)


def run_verify(args: argparse.Namespace) -> int:
    games = resolve_games(args.game)
    store = open_match(args.file)
    try:
        game, check = game_for(store.meta(), games)
        _warn(check)
        result = verify(store, game, check, Progress("verify", store.meta().tick))
    finally:
        store.close()
    _print(json.dumps(result) if args.json else render(result, check))
    return 0 if result["ok"] else 1


def run_state(args: argparse.Namespace) -> int:
    games = resolve_games(args.game)
    store = open_match(args.file, check=False)  # reads a snapshot and a few ticks: no whole-file check
    try:
        store.conn.execute("BEGIN")
        meta = store.meta()
        game, check = game_for(meta, games)
        _warn(check)
        tick = meta.tick if args.tick is None else args.tick
        if tick > meta.tick:
            raise Unusable(f"tick {tick} is past the match's last committed tick, {meta.tick}")
        try:
            snapshot_tick = store.conn.execute("SELECT MAX(tick) FROM snapshots WHERE tick <= ?", (tick,)).fetchone()[0]
            sim = restore(store, game, until=tick)
        except Diverged as diverged:
            print(f"arbiter replay state: {diverged}; run `arbiter replay verify` for the cause and a diff",
                  file=sys.stderr)
            return 1
        except GameCrashed as crash:
            print(f"arbiter replay state: {crash} (on replay; run `arbiter replay verify`)", file=sys.stderr)
            return 1
        except (MatchFileError, sqlite3.DatabaseError) as error:
            raise Unusable(str(error)) from None
    finally:
        store.close()
    _print(json.dumps({"match_id": meta.match_id, "game": meta.game, "tick": sim.tick, "checksum": sim.checksum(),
                      "from_snapshot": snapshot_tick, "resimulated_ticks": sim.tick - snapshot_tick,
                      "started": sim.started, "seated": sim.seated, "last_seq": sim.last_seq, "timers": sim.timers,
                      "roster": sim.roster, "state": json.loads(sim.canonical())}, indent=2))
    return 0


def run_export(args: argparse.Namespace) -> int:
    store = open_match(args.file)
    try:
        try:
            out = open_output(args.output, args.file)
        except (OSError, ValueError) as error:
            raise Unusable(f"--output: {error}") from None
        try:
            counts = export(store, args.format, out, Progress("export", store.meta().tick))
            out.flush()  # (a reader of stdout that left: BrokenPipeError, see run_cli)
        except MatchFileError as error:
            raise Unusable(str(error)) from None
        except sqlite3.DatabaseError as error:
            raise Unusable(f"{args.file}: cannot read ({error})") from None
        finally:
            if out is not sys.stdout:
                out.close()
    finally:
        store.close()
    if args.output is not None:
        print(f"wrote {counts['tick']} ticks, {counts['input']} inputs and {counts['event']} events to {args.output}",
              file=sys.stderr)
    return 0


def describe(store: MatchStore, games: dict[str, type]) -> dict[str, Any]:
    """Everything `inspect` shows, as one JSON-able object."""
    conn = store.conn
    conn.execute("BEGIN")
    try:
        meta = store.meta()
        inputs = dict(conn.execute("SELECT player_id, COUNT(*) FROM inputs WHERE kind = 'input' GROUP BY player_id"))
        commands = dict(conn.execute("SELECT kind, COUNT(*) FROM inputs GROUP BY kind ORDER BY kind"))
        players = [{"player_id": p, "joined_tick": joined, "left_tick": left, "inputs": inputs.get(p, 0)}
                   for p, joined, left in store.players()]
        snapshots = conn.execute("SELECT COUNT(*) FROM snapshots").fetchone()[0]
        events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        alarms = [{"name": a.name, "due": a.due, "retries": a.retries, "failed": a.failed, "last_error": a.last_error}
                  for a in store.alarms()]
        schema = schema_version(store)
    finally:
        conn.execute("COMMIT")
    end = meta.ended_at if meta.ended_at is not None else meta.updated_at
    begin = meta.started_at if meta.started_at is not None else meta.created_at
    return {"file": str(store.path), "bytes": file_bytes(store.path), "schema_version": schema,
            "match_id": meta.match_id, "game": meta.game, "game_version": meta.game_version,
            "code_fingerprint": meta.code_fingerprint, "here": code_check(meta, games.get(meta.game)).as_json(),
            "status": meta.status, "status_reason": meta.status_reason, "finished": meta.status in FINISHED,
            "ticks": meta.tick, "tick_rate": meta.tick_rate,
            "game_seconds": round(meta.tick / meta.tick_rate, 3) if meta.tick_rate else None,
            "created_at": meta.created_at, "started_at": meta.started_at, "ended_at": meta.ended_at,
            "updated_at": meta.updated_at, "wall_seconds": round(max(end - begin, 0.0), 3),
            "players": players, "inputs": sum(inputs.values()), "commands": commands, "events": events,
            "snapshots": snapshots, "snapshot_every": meta.snapshot_every, "result": meta.result, "alarms": alarms,
            "seed": meta.seed, "params": meta.params}


def run_inspect(args: argparse.Namespace) -> int:
    games = resolve_games(args.game)
    store = open_match(args.file)
    try:
        info = describe(store, games)
    except MatchFileError as error:
        raise Unusable(str(error)) from None
    except sqlite3.DatabaseError as error:
        raise Unusable(f"{args.file}: cannot read ({error})") from None
    finally:
        store.close()
    _print(json.dumps(info) if args.json else render_inspect(info))
    return 0


def render_inspect(info: dict[str, Any]) -> str:
    here = info["here"]
    if here["version"] is None:
        code = "not available to this command (add it with --game MODULE:CLASS)"
    else:
        same = {True: "the same code", False: "DIFFERENT code", None: "code not comparable (no fingerprint recorded)"}
        code = f"{info['game']} {here['version']}, {same[here['same_code']]}"
    size = info["bytes"]
    rate = f" at {info['tick_rate']} Hz = {_duration(info['game_seconds'])} of game time" if info["tick_rate"] else \
        " (turn-based: a tick per move or alarm)"
    players = ", ".join(f"{p['player_id']} (joined at tick {p['joined_tick']}"
                        + (f", left at {p['left_tick']})" if p["left_tick"] is not None else ")")
                        for p in info["players"]) or "none"
    inputs = ", ".join(f"{p['player_id']} {p['inputs']}" for p in info["players"])
    others = ", ".join(f"{kind} {n}" for kind, n in info["commands"].items() if kind != "input")
    times = [f"created {_when(info['created_at'])}"]
    times += [f"started {_when(info['started_at'])}"] if info["started_at"] is not None else []
    times += [f"ended {_when(info['ended_at'])}"] if info["ended_at"] is not None else \
        [f"last written {_when(info['updated_at'])}"]
    alarms = [f"{a['name']} due {_when(a['due'])}" + (f", FAILED after {a['retries']} retries: {a['last_error']}"
                                                      if a["failed"] else f", {a['retries']} retries")
              for a in info["alarms"]]
    status = info["status"] + (f" ({info['status_reason']})" if info["status_reason"] else "")
    rows = [
        ("file", f"{info['file']} ({_size(size['file'])}; write-ahead log {_size(size['wal'])})"),
        ("schema", str(info["schema_version"])),
        ("match", info["match_id"]),
        ("game", f"{info['game']} {info['game_version']}, code {(info['code_fingerprint'] or 'not recorded')[:16]}"),
        ("replayed by", code),
        ("status", status + ("" if info["finished"] else " (not finished: live, hibernated or its node stopped)")),
        ("ticks", f"{info['ticks']}{rate}; a snapshot every {info['snapshot_every']} ({info['snapshots']} stored)"),
        ("time", ", ".join(times) + f" ({_duration(info['wall_seconds'])} of wall time)"),
        ("players", f"{len(info['players'])}: {players}"),
        ("inputs", f"{info['inputs']}" + (f": {inputs}" if inputs else "") + (f" (other commands: {others})"
                                                                              if others else "")),
        ("events", str(info["events"])),
        ("result", json.dumps(info["result"]) if info["result"] is not None else "none yet"),
        ("alarms", "\n".join(alarms) if alarms else "none"),
        ("seed", str(info["seed"])),
        ("params", json.dumps(info["params"])),
    ]
    return "\n".join(f"{name:<12} {value}".replace("\n", "\n" + " " * 13) for name, value in rows)


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}")


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KiB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.1f} MiB"


ACTIONS = {"verify": run_verify, "state": run_state, "export": run_export, "inspect": run_inspect}
