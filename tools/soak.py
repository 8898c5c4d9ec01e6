"""`arbiter soak`: N bots play through the real matchmaker for a while; nothing acknowledged may be lost.

1. Without --url, start `arbiter up --port 0` on a fresh data directory with the soak's queues
   (short arena matches: SOAK_QUEUES in tools/soak_run.py), pinned to the first usable CPU; the bots get the others.
2. Start the bot processes (tools/soak_worker.py, one per --bots-per-process bots) and, once all
   are up, tell them when to start and stop.
3. Each bot: a guest token, a ticket, a long-poll until its assignment, the match (the game's
   strategy from clients/bots.py, connection dropped at the churn rate), then again. As each
   match is over for a bot, its acknowledged inputs are checked against the server's own input
   log (GET /v1/matches/{id}/inputs; tools/soak_check.py).
4. At the end: the bot processes' results merged, a summary table, and with --json one JSON
   object on stdout. The server is stopped (SIGTERM to its PID).

Exit status: 0 nothing lost and no unexpected error; 1 inputs lost or errors; 2 it could not run.
"""

from __future__ import annotations

import argparse
import os
import sys

from tools.arguments import non_negative_float, positive_float, positive_int

BOTS_PER_PROCESS = 500
DEFAULT_INPUT_HZ = {"arena": 20.0, "connect_four": 2.0}


def add_parser(commands: argparse._SubParsersAction) -> None:
    soak = commands.add_parser("soak", help="bots play through the matchmaker for a while, with drops; checks "
                                            "that no acknowledged input is lost (docs/bots.md)")
    soak.add_argument("--url", default=None, help="the server's HTTP URL (default: start `arbiter up` on a temp "
                                                  "data directory for the run)")
    soak.add_argument("--bots", "-n", type=positive_int, default=20, help="bots (default 20)")
    soak.add_argument("--duration", "-d", type=positive_float, default=60.0, help="seconds (default 60)")
    soak.add_argument("--game", choices=sorted(DEFAULT_INPUT_HZ), default="arena", help="default arena")
    soak.add_argument("--queue", default=None, help="the queue to play (default: the game's name)")
    soak.add_argument("--churn", type=non_negative_float, default=0.0, metavar="RATE",
                      help="connection drops per bot per minute while in a match, at random (Poisson); the "
                           "client reconnects, resumes and resends (default 0)")
    soak.add_argument("--input-hz", type=positive_float, default=None,
                      help="how often a bot acts: arena inputs a second (default 20, the workload's rate); "
                           "connect_four looks at the board and moves if it is its turn (default 2)")
    soak.add_argument("--match-s", type=positive_float, default=30.0,
                      help="arena match length on a server the soak starts (default 30)")
    soak.add_argument("--bots-per-process", type=positive_int, default=BOTS_PER_PROCESS,
                      help=f"bots in one process, one trio loop (default {BOTS_PER_PROCESS})")
    soak.add_argument("--admin-token", default=os.environ.get("ARBITER_ADMIN_TOKEN"),
                      help="the server's admin token, to read its input logs (default: $ARBITER_ADMIN_TOKEN)")
    soak.add_argument("--seed", type=int, default=1, help="the bots' random seed (default 1)")
    soak.add_argument("--json", action="store_true", help="print one JSON object on stdout (the table goes "
                                                          "to stderr)")


def run_cli(args: argparse.Namespace) -> int:
    import json

    import trio

    from tools.soak_report import exit_status, table
    from tools.soak_run import SetupFailed, soak

    try:
        report = trio.run(soak, args)
    except SetupFailed as error:
        print(f"arbiter soak: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("arbiter soak: interrupted", file=sys.stderr)
        return 2
    table(report, sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(report))
    return exit_status(report)
