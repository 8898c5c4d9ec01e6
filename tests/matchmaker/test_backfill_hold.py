"""The end of a backfill hold (matchmaker/service.py `_hold_backfill`) when the match's worker cannot
answer right then, and the skill a backfill request asks for; with a stand-in placement."""

import logging

import pytest
import trio
import trio.testing

from gameserver.actor import MatchNotice
from gameserver.node import MatchOver
from matchmaker import service
from matchmaker.book import MATCHED, NO_SHOW
from matchmaker.hosts import WorkerError, WorkerUnavailable
from matchmaker.placement import Placed
from matchmaker.queues import parse_modes
from matchmaker.service import Matchmaker

QUEUES = """
[queues.ffa]
game = "arena"
players = { min = 2, max = 4 }
backfill_hold_s = 10
skill = { initial = 100, per_second = 10, max_width = 1000 }
"""
MATCH = "0" * 26


class StandInPlacement:
    """A running match of a, b, c (d left); `seated` raises `failures`, one per call, then answers."""

    def __init__(self, failures=()):
        self.roster = ["a", "b", "c"]
        self.failures = list(failures)
        self.calls = []

    async def create(self, game, params, *, roster, lobby_s, labels, name=None):
        self.roster = list(roster)
        return Placed(MATCH, self.ws_url(MATCH))

    async def reserve(self, match_id, players, *, release=False):
        self.calls.append(("release" if release else "reserve", list(players)))
        if release:
            self.roster = [p for p in self.roster if p not in players]
        else:
            self.roster += players
        return list(self.roster)

    async def seated(self, match_id):
        self.calls.append(("seated",))
        if self.failures:
            raise self.failures.pop(0)
        return ["a", "b", "c"]

    def token(self, match_id, player, role="player", ttl_s=None):
        return f"token-{player}", 0.0

    def ws_url(self, match_id):
        return "ws://127.0.0.1:1/v1/matches/" + match_id


def left(seated, roster):
    return MatchNotice(MATCH, "left", "running", None, tuple(seated), tuple(roster), True, 4, {"queue": "ffa"})


async def backfilled(nursery, placement):
    """A matchmaker whose match asked for a seat, which zed's ticket took: (matchmaker, zed's ticket id)."""
    matchmaker = Matchmaker(parse_modes(QUEUES, {"arena"}), placement, clock=lambda: 1.8e9 + trio.current_time())
    await nursery.start(matchmaker.run)
    matchmaker.on_notice(left(["a", "b", "c"], ["a", "b", "c"]))
    ticket_id = matchmaker.create_ticket("zed", "ffa").ticket.ticket_id
    with trio.fail_after(5):
        entry = await matchmaker.wait(ticket_id, None, timeout_s=5)
    assert entry.status == MATCHED and entry.assignment.backfill and placement.roster == ["a", "b", "c", "zed"]
    return matchmaker, ticket_id


@pytest.mark.parametrize("failure", [
    WorkerUnavailable("worker 1 is being restarted: try again in a moment"),
    WorkerError("KeyError: 'players'"),
], ids=["worker_unavailable", "worker_error"])
async def test_a_hold_that_ends_while_the_worker_cannot_answer_asks_again_and_gives_the_seat_back(
        nursery, autojump_clock, failure):
    placement = StandInPlacement(failures=[failure, failure])
    matchmaker, ticket_id = await backfilled(nursery, placement)
    with trio.fail_after(10 + 3 * service.HOLD_RETRY_S):
        while matchmaker.ticket(ticket_id).status == MATCHED:
            await matchmaker.wait(ticket_id, matchmaker.ticket(ticket_id).version, timeout_s=60)
    entry = matchmaker.ticket(ticket_id)
    assert entry.status == "expired" and entry.reason == NO_SHOW
    assert placement.calls[1:] == [("seated",)] * 3 + [("release", ["zed"])]
    assert placement.roster == ["a", "b", "c"]
    # the match asks for its seat again
    assert matchmaker._backfills[MATCH].request.open_seats == 1 and not matchmaker._backfills[MATCH].pending


async def test_a_hold_asks_a_bounded_number_of_times_then_leaves_the_seat_held(nursery, autojump_clock, caplog):
    caplog.set_level(logging.WARNING, logger="arbiter.matchmaker")
    placement = StandInPlacement(failures=[WorkerUnavailable("worker 1 is being restarted")] * 100)
    matchmaker, ticket_id = await backfilled(nursery, placement)
    await trio.sleep(10 + (service.HOLD_ATTEMPTS + 5) * service.HOLD_RETRY_S)
    assert placement.calls.count(("seated",)) == service.HOLD_ATTEMPTS
    assert matchmaker.ticket(ticket_id).status == MATCHED and placement.roster == ["a", "b", "c", "zed"]
    assert "could not end, the seats stay held" in caplog.text


async def test_a_hold_of_a_match_that_is_over_ends_without_asking_again(nursery, autojump_clock):
    placement = StandInPlacement(failures=[MatchOver(f"match {MATCH} is over or has no roster")])
    matchmaker, ticket_id = await backfilled(nursery, placement)
    await trio.sleep(10 + 5 * service.HOLD_RETRY_S)
    assert placement.calls[1:] == [("seated",)]
    assert matchmaker.ticket(ticket_id).status == MATCHED  # settled when the match's end is heard


async def test_a_bug_at_the_end_of_a_hold_is_logged_and_the_matchmaker_goes_on(nursery, autojump_clock, caplog):
    placement = StandInPlacement(failures=[RuntimeError("a bug")])
    matchmaker, ticket_id = await backfilled(nursery, placement)
    await trio.sleep(10 + service.HOLD_RETRY_S)
    assert "the backfill hold of" in caplog.text and "RuntimeError: a bug" in caplog.text
    # still forming: four new players are matched
    tickets = [matchmaker.create_ticket(player, "ffa") for player in ("amy", "ben", "cat", "dan")]
    with trio.fail_after(5):
        for ticket in tickets:
            assert (await matchmaker.wait(ticket.ticket.ticket_id, None, timeout_s=5)).status == MATCHED


@pytest.mark.parametrize("skill", [1e308, -1e308, 1.7976931348623157e308])
async def test_a_match_of_players_with_huge_skills_asks_for_backfill_at_their_mean(nursery, autojump_clock, skill):
    placement = StandInPlacement()
    matchmaker = Matchmaker(parse_modes(QUEUES, {"arena"}), placement, clock=lambda: 1.8e9 + trio.current_time())
    await nursery.start(matchmaker.run)
    tickets = [matchmaker.create_ticket(player, "ffa", numbers={"skill": skill}) for player in ("a", "b", "c", "d")]
    with trio.fail_after(5):
        for ticket in tickets:
            assert (await matchmaker.wait(ticket.ticket.ticket_id, None, timeout_s=5)).status == MATCHED
    matchmaker.on_notice(left(["a", "b", "c"], ["a", "b", "c"]))
    await trio.testing.wait_all_tasks_blocked()  # the notice is handled
    assert matchmaker._backfills[MATCH].request.skill == skill
