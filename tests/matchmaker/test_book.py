"""The ticket book: statuses, limits per player, requeue with the original waiting time, purge.
A hypothesis state machine checks the book's invariants under any sequence of operations."""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from matchmaker.book import (CANCELLED, EXPIRED, MATCHED, NO_SHOW, QUEUED, Assignment, BookError, TicketBook)
from matchmaker.ticket_api import ticket_view
from matchmaker.tickets import Ticket


def ticket(ticket_id, *players, queue="q", at=0.0):
    return Ticket(ticket_id=ticket_id, queue=queue, players=players, created_at=at)


def assignment(match_id="m1", *players):
    return Assignment(match_id, "ws://x", {p: f"token-{p}" for p in players})


def test_a_ticket_is_queued_matched_and_settled():
    book = TicketBook(["q"])
    entry = book.create(ticket("t1", "ann"), "ann", 10.0)
    assert entry.status == QUEUED and book.pool("q") == [entry.ticket]
    book.assign("t1", assignment("m1", "ann"), 11.0)
    assert entry.status == MATCHED and book.pool("q") == [] and book.tickets_of_match("m1") == ["t1"]
    book.settle("m1", 12.0)
    assert book.tickets_of_match("m1") == []
    assert book.purge(12.0 + 599) == [] and book.purge(12.0 + 600) == ["t1"] and book.get("t1") is None


def test_limits_one_ticket_per_queue_and_a_few_in_all():
    book = TicketBook(["a", "b", "c", "d"], max_per_player=3)
    book.create(ticket("t1", "ann", queue="a"), "ann", 0)
    with pytest.raises(BookError) as error:
        book.create(ticket("t2", "bob", "ann", queue="a"), "bob", 0)  # ann is in a party ticket too
    assert error.value.code == "already_queued" and error.value.status == 409
    book.create(ticket("t3", "ann", queue="b"), "ann", 0)
    book.create(ticket("t4", "ann", queue="c"), "ann", 0)
    with pytest.raises(BookError) as error:
        book.create(ticket("t5", "ann", queue="d"), "ann", 0)
    assert error.value.code == "too_many_tickets" and error.value.status == 429
    with pytest.raises(BookError) as error:
        book.create(ticket("t6", "bob", queue="x"), "bob", 0)
    assert error.value.code == "unknown_queue"
    with pytest.raises(BookError) as error:
        book.create(ticket("t7", "bob", queue="a"), "cid", 0)
    assert error.value.code == "not_in_ticket"


def test_only_its_players_cancel_a_queued_ticket():
    book = TicketBook(["q"])
    book.create(ticket("t1", "ann", "bob"), "ann", 0)
    with pytest.raises(BookError) as error:
        book.cancel("t1", "eve", 1)
    assert error.value.code == "not_your_ticket"
    assert book.cancel("t1", "bob", 1).status == CANCELLED
    with pytest.raises(BookError) as error:
        book.cancel("t1", "ann", 2)
    assert error.value.code == "not_queued"
    book.create(ticket("t2", "ann"), "ann", 3)  # cancelled: ann may queue again


def test_a_requeued_ticket_keeps_its_waiting_time_and_a_conflicting_one_is_cancelled():
    book = TicketBook(["q"])
    first = book.create(ticket("t1", "ann", at=5.0), "ann", 5.0)
    book.create(ticket("t2", "bob", at=6.0), "bob", 6.0)
    book.assign("t1", assignment("m1", "ann"), 7.0)
    book.assign("t2", assignment("m1", "bob"), 7.0)
    book.create(ticket("t3", "bob", at=8.0), "bob", 8.0)  # bob queued again meanwhile
    book.requeue("t1", "someone did not come", 20.0)
    assert first.status == QUEUED and first.requeued == 1 and book.pool("q")[-1].created_at == 5.0
    second = book.requeue("t2", "someone did not come", 20.0)
    assert second.status == CANCELLED and "bob is in another ticket" in second.reason
    assert book.expire("t3", NO_SHOW, 21.0).status == EXPIRED


def test_a_ticket_waits_while_it_is_queued_and_its_wait_stops_when_it_leaves_the_queue():
    book = TicketBook(["q"])
    for ticket_id, leave in (("t1", book.cancel), ("t2", lambda t, _player, now: book.expire(t, "max_wait", now)),
                             ("t3", lambda t, player, now: book.assign(t, assignment("m1", player), now))):
        entry = book.create(ticket(ticket_id, f"p{ticket_id}", at=10.0), f"p{ticket_id}", 10.0)
        assert entry.wait_s(14.0) == 4.0 and ticket_view(entry, f"p{ticket_id}", 14.0)["wait_s"] == 4.0
        leave(ticket_id, f"p{ticket_id}", 15.0)
        assert entry.wait_s(100.0) == 5.0 and ticket_view(entry, f"p{ticket_id}", 100.0)["wait_s"] == 5.0
    again = book.requeue("t3", "someone did not come", 20.0)  # back in the queue: counts from created_at
    assert again.wait_s(30.0) == 20.0


def test_too_many_tickets_names_the_tickets_so_that_the_player_can_cancel_them():
    """A party ticket names its members without their consent; any of them can cancel it, by its id."""
    book = TicketBook(["a", "b", "c", "d"], max_per_player=3)
    for n, queue in enumerate("abc"):
        book.create(ticket(f"t{n}", f"eve{n}", "ann", queue=queue), f"eve{n}", 0)
    with pytest.raises(BookError) as error:
        book.create(ticket("t9", "ann", queue="d"), "ann", 0)
    assert error.value.code == "too_many_tickets" and all(f"t{n}" in str(error.value) for n in range(3))
    with pytest.raises(BookError) as error:
        book.create(ticket("t8", "ann", queue="a"), "ann", 0)
    assert error.value.code == "already_queued" and "(ticket t0)" in str(error.value)
    assert book.cancel("t0", "ann", 1).status == CANCELLED
    assert book.create(ticket("t8", "ann", queue="a"), "ann", 1).status == QUEUED


class BookMachine(RuleBasedStateMachine):
    """Any sequence of creates, cancels, assignments, requeues, settles, expiries and purges."""

    @initialize()
    def start(self):
        self.book = TicketBook(["q", "r"], max_per_player=2, keep_finished_s=10.0)
        self.now = 0.0
        self.count = 0
        self.matches = 0

    def _ids(self, status):
        return sorted(t for t, e in self.book.entries.items() if e.status == status)

    @rule(players=st.lists(st.sampled_from(["ann", "bob", "cid", "dan"]), min_size=1, max_size=3, unique=True),
          queue=st.sampled_from(["q", "r"]))
    def create(self, players, queue):
        self.count += 1
        try:
            self.book.create(ticket(f"t{self.count}", *players, queue=queue, at=self.now), players[0], self.now)
        except BookError as error:
            assert error.code in ("already_queued", "too_many_tickets")

    @precondition(lambda self: self._ids(QUEUED))
    @rule(data=st.data())
    def cancel(self, data):
        ticket_id = data.draw(st.sampled_from(self._ids(QUEUED)))
        self.book.cancel(ticket_id, self.book.entries[ticket_id].ticket.players[0], self.now)

    @precondition(lambda self: self._ids(QUEUED))
    @rule(data=st.data())
    def assign(self, data):
        ticket_id = data.draw(st.sampled_from(self._ids(QUEUED)))
        self.matches += 1
        self.book.assign(ticket_id, assignment(f"m{self.matches}", *self.book.entries[ticket_id].ticket.players),
                         self.now)

    @precondition(lambda self: self._ids(MATCHED))
    @rule(data=st.data())
    def requeue(self, data):
        ticket_id = data.draw(st.sampled_from(self._ids(MATCHED)))
        created = self.book.entries[ticket_id].ticket.created_at
        entry = self.book.requeue(ticket_id, "no-show", self.now)
        assert entry.status in (QUEUED, CANCELLED) and entry.ticket.created_at == created

    @precondition(lambda self: self._ids(MATCHED))
    @rule(data=st.data())
    def settle(self, data):
        ticket_id = data.draw(st.sampled_from(self._ids(MATCHED)))
        self.book.settle(self.book.entries[ticket_id].assignment.match_id, self.now)

    @precondition(lambda self: self._ids(QUEUED))
    @rule(data=st.data())
    def expire(self, data):
        self.book.expire(data.draw(st.sampled_from(self._ids(QUEUED))), "max_wait", self.now)

    @rule(seconds=st.floats(0, 8))
    def time_passes(self, seconds):
        self.now += seconds
        for ticket_id in self.book.purge(self.now):
            assert ticket_id not in self.book.entries

    @invariant()
    def the_pools_hold_exactly_the_queued_tickets_and_nobody_twice_per_queue(self):
        if not hasattr(self, "book"):
            return
        for queue, pool in self.book.queued.items():
            assert sorted(pool) == sorted(t for t, e in self.book.entries.items()
                                          if e.status == QUEUED and e.ticket.queue == queue)
            players = [p for t in pool.values() for p in t.players]
            assert len(players) == len(set(players))
        for player in ("ann", "bob", "cid", "dan"):
            queued = sum(player in e.ticket.players for e in self.book.entries.values() if e.status == QUEUED)
            assert queued == self.book.queued_count(player) <= 2

    @invariant()
    def a_ticket_waits_while_queued_and_not_after(self):
        if not hasattr(self, "book"):
            return
        for entry in self.book.entries.values():
            left = self.now if entry.status == QUEUED else entry.updated_at
            assert entry.wait_s(self.now) == max(0.0, left - entry.ticket.created_at)
            if entry.status != QUEUED:
                assert entry.wait_s(self.now + 1000.0) == entry.wait_s(self.now)

    @invariant()
    def matched_tickets_have_assignments_and_others_do_not_count_as_placed(self):
        if not hasattr(self, "book"):
            return
        for entry in self.book.entries.values():
            assert (entry.assignment is not None) == (entry.status == MATCHED)


TestBookMachine = BookMachine.TestCase
TestBookMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
