"""The `arbiter` command. argparse (standard library): subcommands, typed options, help."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from gameserver.config import MAX_SNAPSHOT_EVERY, NodeConfig
from gameserver.games import builtin_games, load_game

from tools.arguments import non_negative_float, non_negative_int, number, positive_float, positive_int


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 0 to 65535")
    return value


def _snapshot_every(text: str) -> int:
    value = int(text)
    if not 1 <= value <= MAX_SNAPSHOT_EVERY:
        raise argparse.ArgumentTypeError(f"1 to {MAX_SNAPSHOT_EVERY:,} ticks")
    return value


def _workers(text: str) -> int:
    from gameserver.shards import MAX_WORKERS

    value = int(text)
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"1 to {MAX_WORKERS}")
    return value


def default_workers() -> int:
    """One worker per CPU this process may run on."""
    from gameserver.shards import MAX_WORKERS

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on this platform
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arbiter", description="Durable multiplayer match server.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="run a server with the demo games on embedded defaults")
    up.add_argument("--data-dir", type=Path, default=Path("data"), help="where match files live (default ./data)")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: loopback only)")
    up.add_argument("--port", type=_port, default=7350, help="HTTP API port (default 7350; 0 picks a free one)")
    up.add_argument("--ws-port", type=_port, default=None, help="WebSocket port (default: --port + 1)")
    up.add_argument("--public-ws-url", default=None, help="WebSocket base URL given to clients, "
                    "if not ws://HOST:WS_PORT (behind a proxy); with several workers it names {worker} or {port}")
    up.add_argument("--workers", type=_workers, default=None, metavar="N",
                    help="processes that run matches, each with its own WebSocket port (default: one per CPU "
                         "this process may use; 1: everything in one process)")
    up.add_argument("--admin-token", default=os.environ.get("ARBITER_ADMIN_TOKEN"),
                    help="require this bearer token to create matches and tokens and to list unusable files "
                         "(default: $ARBITER_ADMIN_TOKEN; prefer the variable, arguments show in ps)")
    up.add_argument("--game", action="append", default=[], metavar="MODULE:CLASS",
                    help="add a game class (repeatable)")
    up.add_argument("--snapshot-every", type=_snapshot_every, default=100,
                    help="ticks between snapshots, 1 to 1,000,000 (default 100)")
    up.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL",
                    help="SQLite synchronous level: NORMAL survives kill -9, FULL also power loss (default NORMAL)")
    up.add_argument("--token-ttl", type=positive_float, default=3600.0, help="join token lifetime in seconds")
    up.add_argument("--hibernate-after", type=positive_float, default=10.0,
                    help="seconds of idleness after which a match that is not ticking leaves memory (default 10)")
    up.add_argument("--alarm-retries", type=non_negative_int, default=6,
                    help="retries of a raising alarm handler before it is recorded as failed (default 6)")
    up.add_argument("--stall-log-ms", type=non_negative_float, default=100.0, metavar="MS",
                    help="log an event-loop stall this long with what was running (default 100; 0: off)")
    up.add_argument("--retention-days", type=non_negative_float, default=0.0,
                    help="delete a finished match's file this many days after it ended (default 0: keep)")
    up.add_argument("--max-http-connections", type=positive_int, default=10_000, metavar="N",
                    help="HTTP connections open at once, long-polls included; past it: 503 (default 10000)")
    up.add_argument("--max-spectators", type=non_negative_int, default=64,
                    help="spectator connections one match admits; more are refused with 1013 (default 64)")
    up.add_argument("--max-spectator-connections", type=non_negative_int, default=4,
                    help="spectator connections one spectator id holds to one match; more are refused with "
                         "1013 (default 4)")
    up.add_argument("--ready-file", type=Path, default=None, help="write the URLs as JSON here once serving")
    up.add_argument("--queues", type=Path, default=None, metavar="FILE",
                    help="matchmaking queues (TOML, see docs/matchmaking.md; default: one queue per demo game)")
    up.add_argument("--guests", action=argparse.BooleanOptionalAction, default=None,
                    help="development mode: hand out guest player tokens at POST /v1/auth/guest "
                         "(default: on when --host is loopback, off otherwise)")
    up.add_argument("--auth-secret-file", type=Path, default=None, metavar="FILE",
                    help="the secret that signs player tokens (at least 32 bytes; default: $ARBITER_AUTH_SECRET, "
                         "else DATA_DIR/auth.key, created on first start)")

    commands.add_parser("openapi", help="print the HTTP API's OpenAPI document (matchmaker/openapi.json)")

    alarms = commands.add_parser("alarms", help="list the alarms of every match in a data directory (read-only)")
    alarms.add_argument("--data-dir", type=Path, default=Path("data"))
    alarms.add_argument("--failed", action="store_true", help="only failed alarms (exit 1 if there are any)")
    alarms.add_argument("--json", action="store_true", help="print one JSON array")

    bench = commands.add_parser("bench", help="run a benchmark workload and print its figures")
    workloads = bench.add_subparsers(dest="workload", required=True, metavar="WORKLOAD")
    arena = workloads.add_parser("arena", help="workload arena (../shared/workloads/arena.md)")
    arena.add_argument("--matches", "-R", type=positive_int, default=25, help="matches of 4 bots (default 25)")
    arena.add_argument("--duration", "-D", type=positive_float, default=20.0, help="measured window, s (default 20)")
    arena.add_argument("--warmup", type=number(0, 600), default=2.0, help="seconds after every bot joined (default 2)")
    arena.add_argument("--bot-processes", type=positive_int, default=None,
                       help="bot processes (default: one per 400 bots, at least 1)")
    arena.add_argument("--url", default=None, help="bench a running server at this HTTP URL instead of starting one")
    arena.add_argument("--workers", type=_workers, default=1, metavar="N",
                       help="the server it starts runs N worker processes (arbiter up --workers N; default 1)")
    arena.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    arena.add_argument("--seed", type=int, default=1, help="bots' random seed")
    arena.add_argument("--json", action="store_true", help="print only the JSON object")
    hibernation = workloads.add_parser("hibernation", help="hibernated-match memory, wake latency, alarm lateness")
    hibernation.add_argument("--matches", type=non_negative_int, default=10_000,
                             help="hibernated matches of 2 clients for the memory figure (default 10000; capped "
                                  "by the open-file limit per worker; 0 skips the memory phase)")
    hibernation.add_argument("--moves", type=positive_int, default=1000, help="moves logged before waking (1000)")
    hibernation.add_argument("--wake-matches", type=positive_int, default=20, help="matches woken (default 20)")
    hibernation.add_argument("--wakes", type=positive_int, default=25,
                             help="wakes per match (default 25: 500 wakes, so that p99 is not the slowest one)")
    hibernation.add_argument("--alarm-matches", type=positive_int, default=1000, help="matches with a timer (1000)")
    hibernation.add_argument("--bare", type=positive_int, default=1000,
                             help="spectator connections measured for a connection's own cost (1000)")
    hibernation.add_argument("--workers", type=_workers, default=1, metavar="N",
                             help="the server it starts runs N worker processes (arbiter up --workers N; default 1)")
    hibernation.add_argument("--json", action="store_true", help="print only the JSON object")
    recovery = workloads.add_parser("recovery", help="re-activation time of a long arena match")
    recovery.add_argument("--ticks", type=positive_int, default=12_000, help="logged ticks (default 12000: 10 min)")
    recovery.add_argument("--snapshot-every", type=_snapshot_every, default=100, help="ticks between snapshots")
    recovery.add_argument("--repeat", type=positive_int, default=5, help="activations to time (default 5)")
    recovery.add_argument("--seed", type=int, default=1)
    recovery.add_argument("--json", action="store_true", help="print only the JSON object")
    matchmaker = workloads.add_parser("matchmaker", help="forming pass, ticket API rate, time to assignment (issue 4)")
    matchmaker.add_argument("--form-tickets", type=positive_int, default=100_000,
                            help="tickets in the timed forming pass (default 100000)")
    matchmaker.add_argument("--api-tickets", type=positive_int, default=10_000,
                            help="tickets created then read over HTTP, 2 requests each (default 10000)")
    matchmaker.add_argument("--api-processes", type=positive_int, default=2, help="load processes (default 2)")
    matchmaker.add_argument("--api-connections", type=positive_int, default=8,
                            help="keep-alive connections per load process (default 8)")
    matchmaker.add_argument("--matches", type=positive_int, default=200, help="matches formed and timed (200)")
    matchmaker.add_argument("--match-players", type=int, choices=[2, 4], default=2,
                            help="players per match: 2 (connect four) or 4 (arena) (default 2)")
    matchmaker.add_argument("--concurrency", type=positive_int, default=4, help="matches formed at once (4)")
    matchmaker.add_argument("--profile", type=Path, default=None, metavar="DIR",
                            help="run the servers under cProfile, write DIR/server-{api,assign}.prof")
    matchmaker.add_argument("--seed", type=int, default=1, help="random seed: the forming pool, the API tickets' skills")
    matchmaker.add_argument("--json", action="store_true", help="print only the JSON object")
    from tools.bench_replay import add_parser as add_bench_replay
    from tools.replay import add_parser as add_replay

    add_bench_replay(workloads)
    from tools.bench_attack import add_parser as add_bench_attack

    add_bench_attack(workloads)
    from tools.bench_sweep import add_parser as add_bench_sweep

    add_bench_sweep(workloads)
    from tools.bench_floor import add_parser as add_bench_floor

    add_bench_floor(workloads)
    add_replay(commands)
    from tools.soak import add_parser as add_soak

    add_soak(commands)
    from tools.faults import add_parser as add_faults

    add_faults(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "up":
        return _up(args)
    if args.command == "alarms":
        from tools.alarms import run_cli as run_alarms

        return run_alarms(args)
    if args.command == "openapi":
        print(openapi_document())
        return 0
    if args.command == "bench" and args.workload == "arena":
        from tools.bench_arena import run_cli

        return run_cli(args)
    if args.command == "bench" and args.workload == "hibernation":
        from tools.bench_hibernation import run_cli as run_hibernation

        return run_hibernation(args)
    if args.command == "bench" and args.workload == "recovery":
        from tools.bench_recovery import run_cli as run_recovery

        return run_recovery(args)
    if args.command == "bench" and args.workload == "matchmaker":
        from tools.bench_matchmaker import run_cli as run_matchmaker

        return run_matchmaker(args)
    if args.command == "bench" and args.workload == "sweep":
        from tools.bench_sweep import run_cli as run_bench_sweep

        return run_bench_sweep(args)
    if args.command == "bench" and args.workload == "attack":
        from tools.bench_attack import run_cli as run_bench_attack

        return run_bench_attack(args)
    if args.command == "bench" and args.workload == "floor":
        from tools.bench_floor import run_cli as run_bench_floor

        return run_bench_floor(args)
    if args.command == "bench" and args.workload == "replay":
        from tools.bench_replay import run_cli as run_bench_replay

        return run_bench_replay(args)
    if args.command == "replay":
        from tools.replay import run_cli as run_replay

        return run_replay(args)
    if args.command == "soak":
        from tools.soak import run_cli as run_soak

        return run_soak(args)
    if args.command == "faults":
        from tools.faults import run_cli as run_faults

        return run_faults(args)
    return 2


def openapi_document() -> str:
    """The OpenAPI document of the HTTP API, as served at /openapi.json (matchmaker/openapi.json)."""
    from matchmaker.pages import openapi_text

    return openapi_text().rstrip("\n")


def _up(args: argparse.Namespace) -> int:
    import trio

    from matchmaker.queues import QueueFileError, parse_modes
    from tools.up import ServerConfig, is_loopback, main as serve

    games = builtin_games()
    for spec in args.game:
        try:
            cls = load_game(spec)
        except ValueError as error:
            print(f"arbiter up: --game {spec}: {error}", file=sys.stderr)
            return 2
        games[cls.name] = cls
    try:
        node = NodeConfig(data_dir=args.data_dir, snapshot_every=args.snapshot_every, synchronous=args.synchronous,
                          token_ttl_s=args.token_ttl, hibernate_after_s=args.hibernate_after,
                          alarm_max_retries=args.alarm_retries, retention_days=args.retention_days,
                          max_spectators=args.max_spectators,
                          max_spectator_connections=args.max_spectator_connections,
                          stall_log_s=args.stall_log_ms / 1000)
    except (TypeError, ValueError) as error:  # a setting past what NodeConfig takes (the types above check most)
        print(f"arbiter up: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    queues = None
    if args.queues is not None:
        try:
            queues = parse_modes(args.queues.read_text(), set(games))
        except (OSError, UnicodeDecodeError, QueueFileError) as error:
            print(f"arbiter up: --queues {args.queues}: {error}", file=sys.stderr)
            return 2
    auth_secret = None
    if args.auth_secret_file is not None or os.environ.get("ARBITER_AUTH_SECRET"):
        try:
            auth_secret = (args.auth_secret_file.read_bytes() if args.auth_secret_file is not None
                           else os.environ["ARBITER_AUTH_SECRET"].encode()).strip()
        except OSError as error:
            print(f"arbiter up: --auth-secret-file: {error}", file=sys.stderr)
            return 2
        if len(auth_secret) < 32:
            print("arbiter up: the auth secret has at least 32 bytes", file=sys.stderr)
            return 2
    guests = args.guests if args.guests is not None else is_loopback(args.host)
    workers = args.workers if args.workers is not None else default_workers()
    if workers > 1 and args.public_ws_url is not None and not any(
            key in args.public_ws_url for key in ("{worker}", "{port}")):
        print(f"arbiter up: with {workers} workers each has its own WebSocket port: --public-ws-url must name "
              "{worker} or {port} (e.g. wss://game.example/ws{worker}, routed to port WS_PORT + worker), "
              "or use --workers 1", file=sys.stderr)
        return 2
    if workers > 1 and args.ws_port is not None and args.ws_port and args.ws_port + workers - 1 > 65535:
        print(f"arbiter up: --ws-port {args.ws_port} leaves no room for {workers} workers' ports", file=sys.stderr)
        return 2
    config = ServerConfig(node=node, games=games, host=args.host, port=args.port, ws_port=args.ws_port,
                          public_ws_url=args.public_ws_url, admin_token=args.admin_token, queues=queues,
                          guests=guests, auth_secret=auth_secret, workers=workers,
                          max_http_connections=args.max_http_connections)
    try:
        trio.run(serve, config, args.ready_file)
    except BaseException as error:  # a port in use, an unreadable data dir, a bad secret.key
        found = _first_error(error, (OSError, ValueError))
        if found is None:
            raise
        print(f"arbiter up: {found}", file=sys.stderr)
        return 1
    return 0


def _first_error(error: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """`error` if it is one of `kinds`, else the first such in the exception groups it is."""
    if isinstance(error, kinds):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_error(inner, kinds)
            if found is not None:
                return found
    return None


if __name__ == "__main__":
    sys.exit(main())
