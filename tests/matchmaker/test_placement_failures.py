"""A placement that fails leaves the formed tickets queued and the matchmaker forming: whatever the
failure, a node's refusal (NodeError), a worker that is gone (WorkerUnavailable) or a worker that
failed on the request (WorkerError, what tools/control_link.py raises for a worker's bug)."""

import logging

import pytest
import trio

from gameserver.node import StorageFailed
from matchmaker.book import MATCHED, QUEUED
from matchmaker.hosts import WorkerUnavailable
from matchmaker.placement import Placed
from matchmaker.queues import parse_modes
from matchmaker.service import Matchmaker
from tools.control_link import WorkerError, error_from_wire, error_to_wire

QUEUES = """
[queues.duel]
game = "connect_four"
players = { min = 2, max = 2 }
"""


class FlakyPlacement:
    """Fails with `failures`, one per call, then places; records the tickets' status at each call."""

    def __init__(self, matchmaker_of, failures):
        self.matchmaker_of = matchmaker_of
        self.failures = list(failures)
        self.seen: list[list[str]] = []

    async def create(self, game, params, *, roster, lobby_s, labels, name=None):
        book = self.matchmaker_of().book
        self.seen.append(sorted(entry.status for entry in book.entries.values()))
        if self.failures:
            raise self.failures.pop(0)
        return Placed("0" * 26, "ws://127.0.0.1:1/v1/matches/" + "0" * 26)

    def token(self, match_id, player, role="player", ttl_s=None):
        return f"token-{player}", 0.0

    def ws_url(self, match_id):
        return "ws://127.0.0.1:1/v1/matches/" + match_id


def test_a_workers_bug_reaches_the_matchmaker_as_the_class_it_catches():
    error = error_from_wire(error_to_wire(KeyError("boom")))
    assert type(error) is WorkerError and "KeyError" in str(error)


@pytest.mark.parametrize("failure", [
    WorkerError("KeyError: 'match_id'"),
    WorkerUnavailable("worker 1 is being restarted: try again in a moment"),
    StorageFailed("cannot create a match now: storage error (disk full)"),
    OSError(28, "No space left on device"),
], ids=["worker_error", "worker_unavailable", "storage_failed", "os_error"])
async def test_a_failed_placement_keeps_the_tickets_queued_and_the_next_pass_places_them(
        nursery, autojump_clock, caplog, failure):
    caplog.set_level(logging.ERROR, logger="arbiter.matchmaker")
    matchmaker = None
    placement = FlakyPlacement(lambda: matchmaker, [failure, failure])
    matchmaker = Matchmaker(parse_modes(QUEUES, {"connect_four"}), placement,
                            clock=lambda: 1_800_000_000.0 + trio.current_time())
    await nursery.start(matchmaker.run)
    first = matchmaker.create_ticket("ann", "duel")
    second = matchmaker.create_ticket("bob", "duel")
    with trio.fail_after(30):
        entry = await matchmaker.wait(first.ticket.ticket_id, None, timeout_s=30)
    assert entry.status == MATCHED and matchmaker.ticket(second.ticket.ticket_id).status == MATCHED
    # two failed placements, each with both tickets still queued, then a third that placed them
    assert placement.seen == [[QUEUED, QUEUED]] * 3
    assert caplog.text.count("placing a duel match failed") == 2
    assert entry.assignment.tokens == {"ann": "token-ann"}
