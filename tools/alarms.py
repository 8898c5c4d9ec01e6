"""`arbiter alarms`: the alarms of every match in a data directory, read-only (safe beside a running node)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from gameserver import storage
from gameserver.storage import MatchFileError, MatchStore


def collect(data_dir, failed_only: bool) -> tuple[list[dict], list[str]]:
    rows, problems = [], []
    for path in sorted((data_dir / "matches").glob(f"*{storage.SUFFIX}")):
        try:
            store = MatchStore.open(path, read_only=True, check=False)
        except MatchFileError as error:
            problems.append(str(error))
            continue
        try:
            meta = store.meta()
            for alarm in store.alarms():
                if failed_only and not alarm.failed:
                    continue
                rows.append({"match_id": meta.match_id, "game": meta.game, "status": meta.status,
                             "name": alarm.name, "due_at": alarm.due, "retries": alarm.retries,
                             "failed": alarm.failed, "last_error": alarm.last_error})
        except Exception as error:  # a damaged file: report it, go on with the others
            problems.append(f"{path}: {error}")
        finally:
            store.close()
    return rows, problems


def run_cli(args: argparse.Namespace) -> int:
    if not (args.data_dir / "matches").is_dir():
        print(f"arbiter alarms: no match files under {args.data_dir}", file=sys.stderr)
        return 2
    rows, problems = collect(args.data_dir, args.failed)
    for problem in problems:
        print(f"arbiter alarms: skipped {problem}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows))
    else:
        now = time.time()
        print(f"{'match':26}  {'game':12}  {'status':9}  {'alarm':24}  {'due':>10}  {'retries':>7}  state")
        for r in rows:
            due = f"{r['due_at'] - now:+.1f}s"
            state = f"FAILED: {r['last_error']}" if r["failed"] else "scheduled"
            print(f"{r['match_id']:26}  {r['game'][:12]:12}  {r['status']:9}  {r['name'][:24]:24}  {due:>10}  "
                  f"{r['retries']:>7}  {state}")
    return 1 if args.failed and rows else 0
