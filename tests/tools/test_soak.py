"""`arbiter soak` and the bots: short real soaks (server and bots as processes), the loss check
against a real server's input log, the strategies, and the bot example of docs/bots.md.

Timing figures are reported, never asserted."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from clients.bots import ArenaWalker, ConnectFourPlayer
from clients.client import ArbiterHTTP, MatchClient, State, Welcome
from gameserver.config import NodeConfig
from gameserver.games import builtin_games
from tools.soak_check import Claim, check, lost_seqs
from tools.soak_report import exit_status, merge
from tools.soak_worker import Worker
from tools.up import ServerConfig, run_server

ROOT = Path(__file__).resolve().parents[2]
NUMBER = (int, float)


def soak(*options: str) -> tuple[int, dict, str]:
    done = subprocess.run([sys.executable, "-m", "tools.cli", "soak", "--json", *options], cwd=ROOT,
                          capture_output=True, text=True, timeout=90, check=False)
    return done.returncode, json.loads(done.stdout), done.stderr


def assert_clean(report: dict, stderr: str) -> None:
    assert report["inputs_lost"] == 0, report["lost_examples"]
    assert report["errors"] == {}, (report["error_examples"], stderr)
    assert report["matches_played"] > 0
    assert report["inputs_sent"] > 0 and report["inputs_acked"] > 0
    assert report["inputs_acked"] + report["inputs_unacked"] + report["inputs_refused"] == report["inputs_sent"]
    assert report["seats_checked"] > 0
    lat = report["latency_ms"]
    assert all(isinstance(lat[k], NUMBER) for k in ("p50", "p95", "p99", "max"))
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert isinstance(report["bot_cpu_s"], NUMBER) and report["bot_cpu_s"] > 0
    assert isinstance(report["bot_cpu_per_1000_bots"], NUMBER)
    assert report["server"]["log_errors"] == 0, report["server"]["log_error_examples"]


@pytest.mark.slow
def test_arena_soak_plays_matches_and_loses_nothing():
    status, report, stderr = soak("--bots", "4", "--duration", "4", "--match-s", "1")
    assert status == 0, stderr
    assert (report["bots"], report["game"], report["bot_processes"]) == (4, "arena", 1)
    assert_clean(report, stderr)
    assert report["reconnects"] == 0 and report["drops"] == 0
    assert "arbiter soak: arena, 4 bots" in stderr  # the summary table (on stderr with --json)


@pytest.mark.slow
def test_connect_four_soak_with_churn_reconnects_and_loses_nothing():
    status, report, stderr = soak("--game", "connect_four", "--bots", "4", "--duration", "3", "--churn", "60",
                                  "--input-hz", "20")
    assert status == 0, stderr
    assert_clean(report, stderr)
    assert report["drops"] > 0 and report["reconnects"] > 0
    assert report["reconnect_ms"]["max"] is not None


@pytest.mark.slow
def test_arena_soak_with_churn_resends_every_unacknowledged_input():
    """Arena bots send while a reconnect resends: the resends must reach the server first."""
    status, report, stderr = soak("--bots", "6", "--duration", "4", "--churn", "60", "--match-s", "2")
    assert status == 0, stderr
    assert_clean(report, stderr)
    assert report["drops"] > 0 and report["reconnects"] > 0 and report["inputs_lost"] == 0


# -- the loss check, against a real server ---------------------------------------------------


@pytest.fixture
async def server(tmp_path, nursery):
    stop = trio.Event()
    config = ServerConfig(node=NodeConfig(data_dir=tmp_path), games=builtin_games(), port=0, ws_port=0)
    running = await nursery.start(run_server, config, stop)
    yield running
    stop.set()


async def test_an_acknowledgement_the_server_never_logged_is_lost_and_fails_the_soak(server):
    async with ArbiterHTTP(server.http_url) as http:
        match = await http.create_match("arena")
        grant = await http.join_token(match["match_id"], "alice")
    with trio.fail_after(10):
        async with MatchClient(grant["ws_url"], grant["token"]) as alice:
            assert isinstance(await alice.receive(), Welcome)
            for dx in (1, 0, -1):
                await alice.send_input({"dx": dx, "dy": 0})
            while alice.acked < 3:
                await alice.receive_state()
    match_id = match["match_id"]
    spec = {"game": "arena", "queue": "arena", "first": 0, "count": 0, "seed": 1, "churn_per_min": 0}
    async with httpx.AsyncClient(base_url=server.http_url) as admin:
        assert await check(admin, Claim(match_id, "alice", 3)) == (0, [])
        # A bot that claims acknowledgements up to 5: seqs 4 and 5 are not in the log.
        assert await check(admin, Claim(match_id, "alice", 5)) == (2, [4, 5])
        assert await check(admin, Claim(match_id, "alice", 5, frozenset({5}))) == (1, [4])  # 5 was refused

        worker = Worker(spec, admin, admin, 0.0, 0.0)  # the bot processes' own check path
        worker.claims_in.send_nowait(Claim(match_id, "alice", 3))
        worker.claims_in.send_nowait(Claim(match_id, "alice", 5))
        worker.claims_in.send_nowait(Claim("0" * 26, "alice", 1))  # no such match: the check fails
        worker.claims_in.close()
        await worker.check_claims(worker.claims_out)
    result = worker.result()
    assert (result["lost"], result["seats_checked"]) == (2, 2)
    assert result["lost_examples"] == [{"match_id": match_id, "player": "alice", "acked": 5, "lost": 2,
                                        "first_lost_seqs": [4, 5]}]
    assert result["errors_by_kind"] == {"check_failed": 1}
    report = merge([result], bots=1, run_s=1.0)
    assert report["inputs_lost"] == 2 and exit_status(report) == 1
    assert exit_status({**report, "inputs_lost": 0}) == 1  # the failed check alone fails the soak too
    assert exit_status({**report, "inputs_lost": 0, "errors": {}}) == 0


def test_lost_seqs_are_the_acknowledged_seqs_outside_the_logged_ranges():
    assert lost_seqs(10, (), [[1, 10]]) == []
    assert lost_seqs(10, (), [[1, 3], [6, 12]]) == [4, 5]
    assert lost_seqs(10, {4}, [[1, 3], [6, 12]]) == [5]
    assert lost_seqs(3, (), []) == [1, 2, 3]
    assert lost_seqs(0, (), []) == []
    assert lost_seqs(8, (), [[6, 7], [1, 2]]) == [3, 4, 5, 8]  # ranges in any order
    assert lost_seqs(100, (), [], limit=2) == [1, 2]


# -- strategies --------------------------------------------------------------------------------


def test_the_arena_walker_changes_direction_every_20_inputs_within_minus_one_to_one():
    walker = ArenaWalker(seed=3)
    inputs = [walker.next_input() for _ in range(200)]
    assert all(set(i) == {"dx", "dy"} and i["dx"] in (-1, 0, 1) and i["dy"] in (-1, 0, 1) for i in inputs)
    for start in range(0, 200, 20):
        assert len({(i["dx"], i["dy"]) for i in inputs[start:start + 20]}) == 1
    assert len({(i["dx"], i["dy"]) for i in inputs}) > 1
    again = ArenaWalker(seed=3)
    assert [again.next_input() for _ in range(40)] == inputs[:40]  # seeded


def connect_four_state(turn: str, moves: int, full: tuple[int, ...] = ()) -> dict:
    board = [[""] * 7 for _ in range(6)]
    for column in full:
        for row in range(6):
            board[row][column] = "x"
    return {"board": board, "players": ["me", "you"], "turn": turn, "moves": moves}


def test_the_connect_four_player_moves_legally_once_per_turn():
    bot = ConnectFourPlayer(seed=1)
    bot.on_welcome(Welcome("m", "me", "player", 1, 0, 0, {}, connect_four_state("you", 0)))
    assert bot.next_input() is None  # not its turn
    for moves in range(2, 60, 2):
        bot.on_state(State(moves, {}, connect_four_state("me", moves, full=(0, 2, 3, 5, 6))))
        move = bot.next_input()
        assert move in ({"column": 1}, {"column": 4})
        assert bot.next_input() is None  # its move is on its way: no second move this turn
    bot.on_state(State(99, {}, connect_four_state("me", 99, full=tuple(range(7)))))
    assert bot.next_input() is None  # a full board has no legal move


# -- the example of docs/bots.md ---------------------------------------------------------------


async def test_the_bot_example_in_the_docs_plays_a_match(server, capsys):
    text = (ROOT / "docs" / "bots.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "class LeftmostBot" in block)
    namespace = {"__name__": "bots_example"}
    exec(compile(code, "docs/bots.md", "exec"), namespace)
    with trio.fail_after(15):
        await namespace["main"](server.http_url)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert all(" ended four winners: ['" in line for line in lines)
