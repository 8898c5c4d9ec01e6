"""`arbiter faults`: fault runs against a real server. `arbiter faults crash` kills `arbiter up` with
SIGKILL at many points under bot load and checks that nothing acknowledged was lost (the run is
tools/faults_crash.py, the checks tools/faults_check.py; docs/operations.md#crashes-and-storage-faults).

Exit status: 0 every check passed; 1 something was lost or is wrong (the report says what); 2 it could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tools.arguments import integer


def add_parser(commands: argparse._SubParsersAction) -> None:
    faults = commands.add_parser("faults", help="fault runs against a real server (kill -9 under load)")
    kinds = faults.add_subparsers(dest="fault", required=True, metavar="FAULT")
    crash = kinds.add_parser("crash", help="kill -9 `arbiter up` at many points under bot load, restart it, and "
                                           "check every acknowledged input, state, match file and alarm")
    crash.add_argument("--kills", type=integer(2), default=20, help="kill points, one per restart (default 20)")
    crash.add_argument("--arena-bots", type=integer(0), default=4, help="arena bots (default 4)")
    crash.add_argument("--connect-four-bots", type=integer(0), default=4,
                       help="connect four bots (default 4)")
    crash.add_argument("--workers", type=integer(1), default=None, metavar="N",
                       help="`arbiter up --workers N` (default: its default, one per usable CPU)")
    crash.add_argument("--seed", type=int, default=1, help="kill kinds, crash points, delays and bots (default 1)")
    crash.add_argument("--keep", type=Path, default=None, metavar="DIR",
                       help="run in this new or empty directory and keep it: DIR/data the data directory, "
                            "DIR/server.log the server's log (default: a temporary directory, removed)")
    crash.add_argument("--json", action="store_true", help="print the report as one JSON object")
    crash.add_argument("--verbose", "-v", action="store_true", help="say each kill on stderr")


def run_cli(args: argparse.Namespace) -> int:
    import logging

    import trio

    from tools.faults_crash import Options, RunFailed, crash

    if args.arena_bots + args.connect_four_bots == 0:
        print("arbiter faults crash: no bots (--arena-bots, --connect-four-bots)", file=sys.stderr)
        return 2
    if args.keep is not None and args.keep.exists() and (not args.keep.is_dir() or any(args.keep.iterdir())):
        print(f"arbiter faults crash: {args.keep} is not an empty directory", file=sys.stderr)
        return 2
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request otherwise
    options = Options(kills=args.kills, arena_bots=args.arena_bots, connect_four_bots=args.connect_four_bots,
                      seed=args.seed, keep=args.keep, verbose=args.verbose,
                      workers=args.workers)
    try:
        report = trio.run(crash, options)
    except RunFailed as error:
        print(f"arbiter faults crash: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arbiter faults crash: interrupted", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print(render(report))
    return 0 if report["ok"] else 1


def render(report: dict) -> str:
    kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(report["kills_by_kind"].items()))
    lines = [
        f"kills survived      {report['kills']} ({kinds}); {report['server_starts']} server starts",
        f"bots                {report['bots']['arena']} arena, {report['bots']['connect_four']} connect four "
        f"against {report['workers']} worker process(es); "
        f"{report['matches_played_by_bots']} matches played, {report['reconnects']} reconnects",
        f"inputs              {report['inputs_sent']} sent, {report['acked_inputs_checked']} acknowledged and "
        f"checked against the logs, {report['inputs_lost']} lost",
        f"states              {report['states_checked']} seen by clients, checked against re-simulation",
        f"match files         {report['match_files']} ({', '.join(f'{n} {s}' for s, n in sorted(report['statuses'].items()))}), "
        f"{report['files_verified']} verify ({report['ticks_verified']} ticks)",
        f"alarms              {report['matches_unfinished_at_last_kill']} matches unfinished at the last kill, "
        f"{report['matches_finished_by_alarms_after_restart']} finished by their alarms after the restart",
        f"seconds             {report['seconds']}",
    ]
    if report["bot_errors"]:
        lines.append(f"bot errors          {report['bot_errors']} (expected around kills: connections refused or reset)")
    if report["problems"]:
        lines.append("PROBLEMS")
        for kind, examples in report["problems"].items():
            lines.append(f"  {kind}")
            lines += [f"    {example}" for example in examples]
    else:
        lines.append("OK: nothing lost")
    return "\n".join(lines)
