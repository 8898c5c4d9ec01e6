"""The ticket book: statuses, limits per player, requeue with the original waiting time, purge.
A hypothesis state machine checks the book's invariants under any sequence of operations."""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from matchmaker.book import (CANCELLED, EXPIRED, MATCHED, NO_SHOW, NOT_ACCEPTED, PENDING, QUEUED, Assignment, BookError,
                             TicketBook)
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
    book.create(ticket("t2", "bob", "ann", queue="a"), "bob", 0)  # names ann: pending, she has not accepted
    with pytest.raises(BookError) as error:
        book.accept("t2", "ann", 1)  # ann is queued in a already
    assert error.value.code == "already_queued" and error.value.status == 409 and "(ticket t1)" in str(error.value)
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
    book.accept("t1", "bob", 0)
    with pytest.raises(BookError) as error:
        book.cancel("t1", "eve", 1)
    assert error.value.code == "not_your_ticket"
    cancelled = book.cancel("t1", "bob", 1)
    assert cancelled.status == CANCELLED and cancelled.reason == "cancelled by bob"
    with pytest.raises(BookError) as error:
        book.cancel("t1", "ann", 2)
    assert error.value.code == "not_queued"
    book.create(ticket("t2", "ann"), "ann", 3)  # cancelled: ann may queue again


# -- parties: consent -------------------------------------------------------------------------------------


def test_a_party_ticket_is_pending_out_of_the_pool_until_every_member_accepts_then_waits_from_then():
    book = TicketBook(["q"])
    entry = book.create(ticket("t1", "ann", "bob", "cid", at=10.0), "ann", 10.0, accept_s=30.0)
    assert (entry.status, entry.accepted, entry.accept_by) == (PENDING, ("ann",), 40.0)
    assert book.pool("q") == [] and entry.wait_s(15.0) == 0.0 and ticket_view(entry, "bob", 15.0)["wait_s"] == 0.0
    assert book.accept("t1", "cid", 12.0) is entry and entry.version == 1
    assert (entry.status, entry.accepted, book.pool("q")) == (PENDING, ("ann", "cid"), [])
    book.accept("t1", "bob", 16.0)
    assert (entry.status, entry.accepted, entry.accept_by, entry.version) == (QUEUED, ("ann", "cid", "bob"), None, 2)
    assert book.pool("q") == [entry.ticket] and entry.ticket.created_at == 16.0 and entry.wait_s(20.0) == 4.0
    view = ticket_view(entry, "bob", 20.0)
    assert (view["owner"], view["accepted"], view["created_at"], view["wait_s"]) == ("ann", ["ann", "cid", "bob"],
                                                                                    16.0, 4.0)


def test_a_solo_ticket_is_queued_at_once_and_accepted_by_its_player():
    book = TicketBook(["q"])
    entry = book.create(ticket("t1", "ann"), "ann", 0.0)
    assert (entry.status, entry.accepted, entry.accept_by, book.pool("q")) == (QUEUED, ("ann",), None, [entry.ticket])


def test_a_pending_ticket_counts_only_for_the_members_who_accepted_it():
    """The griefing case: strangers name ann in party tickets; her limits are untouched until she accepts."""
    book = TicketBook(["a", "b", "c", "d"], max_per_player=3)
    for n, queue in enumerate("abcd"):
        book.create(ticket(f"g{n}", f"eve{n}", "ann", queue=queue), f"eve{n}", 0)
    assert book.held_count("ann") == 0 and book.invited_count("ann") == 4
    assert all(book.held_count(f"eve{n}") == 1 for n in range(4))  # their creators hold them
    for n, queue in enumerate("abc"):
        assert book.create(ticket(f"t{n}", "ann", queue=queue), "ann", 1).status == QUEUED
    assert book.held_count("ann") == 3
    with pytest.raises(BookError) as error:
        book.accept("g3", "ann", 2)
    assert error.value.code == "too_many_tickets" and all(f"t{n}" in str(error.value) for n in range(3))
    assert book.get("g3").status == PENDING and book.get("g3").accepted == ("eve3",)  # refused: no change
    book.cancel("t0", "ann", 3)
    assert book.accept("g3", "ann", 4).status == QUEUED and book.held_count("ann") == 3


def test_pending_tickets_count_for_their_creator():
    book = TicketBook(["a", "b", "c", "d"], max_per_player=3)
    for n, queue in enumerate("abc"):
        book.create(ticket(f"t{n}", "eve", f"victim{n}", queue=queue), "eve", 0)
    with pytest.raises(BookError) as error:
        book.create(ticket("t9", "eve", "victim9", queue="d"), "eve", 0)
    assert error.value.code == "too_many_tickets"
    with pytest.raises(BookError) as error:
        book.create(ticket("t8", "eve", queue="a"), "eve", 0)
    assert error.value.code == "already_queued" and "(ticket t0)" in str(error.value)


def test_accepting_again_changes_nothing_and_a_finished_ticket_cannot_be_accepted():
    book = TicketBook(["q"])
    entry = book.create(ticket("t1", "ann", "bob", "cid"), "ann", 0)
    book.accept("t1", "bob", 1)
    assert book.accept("t1", "bob", 2) is entry and (entry.version, entry.updated_at) == (1, 1)
    assert book.accept("t1", "ann", 2).version == 1  # the creator accepted it by creating it
    with pytest.raises(BookError) as error:
        book.accept("t1", "eve", 2)
    assert error.value.code == "not_your_ticket"
    book.accept("t1", "cid", 3)
    assert book.accept("t1", "cid", 4).status == QUEUED and entry.version == 2  # queued: no change either
    book.cancel("t1", "ann", 5)
    with pytest.raises(BookError) as error:
        book.accept("t1", "bob", 6)
    assert (error.value.code, error.value.status) == ("not_pending", 409)
    declined = book.create(ticket("t2", "ann", "bob"), "ann", 7)
    book.cancel("t2", "bob", 8)
    with pytest.raises(BookError) as error:
        book.accept("t2", "bob", 9)
    assert error.value.code == "not_pending" and declined.status == CANCELLED


def test_a_member_declines_a_pending_ticket_and_everyone_is_free_again():
    book = TicketBook(["q"], max_per_player=1)
    entry = book.create(ticket("t1", "ann", "bob", "cid"), "ann", 0)
    book.accept("t1", "cid", 1)
    declined = book.cancel("t1", "bob", 2)
    assert (declined.status, declined.reason, declined.wait_s(10)) == (CANCELLED, "declined by bob", 0.0)
    assert [book.held_count(p) + book.invited_count(p) for p in ("ann", "bob", "cid")] == [0, 0, 0]
    assert book.create(ticket("t2", "cid"), "cid", 3).status == QUEUED
    withdrawn = book.create(ticket("t3", "ann", "bob"), "ann", 4)
    assert book.cancel("t3", "ann", 5).reason == "cancelled by ann" and entry is not withdrawn


def test_a_pending_ticket_expires_not_accepted_at_the_end_of_its_window():
    book = TicketBook(["q", "r"])
    entry = book.create(ticket("t1", "ann", "bob", at=100.0), "ann", 100.0, accept_s=60.0)
    other = book.create(ticket("t2", "cid", "dan", queue="r", at=100.0), "cid", 100.0, accept_s=60.0)
    book.accept("t1", "bob", 110.0)  # queued: no longer pending, it never expires for want of acceptance
    late = book.create(ticket("t3", "eve", "fay", at=130.0), "eve", 130.0, accept_s=60.0)
    assert book.expire_unaccepted("r", 159.9) == [] and book.expire_unaccepted("q", 160.0) == []
    assert book.expire_unaccepted("r", 160.0) == [other]
    assert (other.status, other.reason, other.accept_by, other.version) == (EXPIRED, NOT_ACCEPTED, None, 1)
    assert book.expire_unaccepted("q", 190.0) == [late] and entry.status == QUEUED
    assert [book.held_count(p) + book.invited_count(p) for p in ("cid", "dan", "eve", "fay")] == [0, 0, 0, 0]
    with pytest.raises(BookError) as error:
        book.accept("t2", "dan", 161.0)
    assert error.value.code == "not_pending"


def test_a_player_is_named_in_a_bounded_number_of_pending_tickets_they_have_not_accepted():
    book = TicketBook(["q"], max_invitations=2)
    book.create(ticket("t1", "eve1", "ann"), "eve1", 0)
    book.create(ticket("t2", "eve2", "ann", "bob"), "eve2", 0)
    with pytest.raises(BookError) as error:
        book.create(ticket("t3", "eve3", "bob", "ann"), "eve3", 0)
    assert (error.value.code, error.value.status) == ("too_many_invitations", 429) and "ann" in str(error.value)
    assert book.get("t3") is None and book.invited_count("bob") == 1  # refused: nothing changed
    book.accept("t1", "ann", 1)  # an accepted one no longer counts as an invitation
    assert book.create(ticket("t3", "eve3", "bob", "ann"), "eve3", 2).status == PENDING
    book.cancel("t3", "ann", 3)  # nor does a declined one
    assert book.create(ticket("t4", "eve4", "ann"), "eve4", 4).status == PENDING


def test_a_requeued_party_ticket_is_queued_again_without_a_new_acceptance():
    book = TicketBook(["q"])
    entry = book.create(ticket("t1", "ann", "bob"), "ann", 0.0)
    book.accept("t1", "bob", 5.0)
    book.assign("t1", assignment("m1", "ann", "bob"), 6.0)
    again = book.requeue("t1", "match m1 was cancelled: players did not join: cid", 40.0)
    assert again is entry and (entry.status, entry.accepted, entry.ticket.created_at) == (QUEUED, ("ann", "bob"), 5.0)
    assert book.pool("q") == [entry.ticket] and book.held_count("bob") == 1


def test_tickets_of_a_player_newest_first_with_a_cap_and_a_status():
    book = TicketBook(["a", "b", "c", "d"])
    book.create(ticket("t1", "ann", queue="a"), "ann", 0)
    book.create(ticket("t2", "eve", "ann", queue="b"), "eve", 1)
    book.create(ticket("t3", "ann", queue="c"), "ann", 2)
    book.cancel("t1", "ann", 3)
    assert [e.ticket.ticket_id for e in book.tickets_of("ann", 10)] == ["t3", "t2", "t1"]
    assert [e.ticket.ticket_id for e in book.tickets_of("ann", 2)] == ["t3", "t2"]
    assert [e.ticket.ticket_id for e in book.tickets_of("ann", 10, PENDING)] == ["t2"]
    assert [e.ticket.ticket_id for e in book.tickets_of("eve", 10)] == ["t2"] and book.tickets_of("bob", 10) == []
    book.purge(3 + 600)
    assert [e.ticket.ticket_id for e in book.tickets_of("ann", 10)] == ["t3", "t2"]


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


PLAYERS = ("ann", "bob", "cid", "dan", "eve")


class BookMachine(RuleBasedStateMachine):
    """Any sequence of creates (solo and party), acceptances, declines, cancels, assignments, requeues,
    settles, expiries (max wait and not accepted) and purges."""

    @initialize()
    def start(self):
        self.book = TicketBook(["q", "r"], max_per_player=2, keep_finished_s=10.0, max_invitations=2)
        self.now = 0.0
        self.count = 0
        self.matches = 0

    def _ids(self, status):
        return sorted(t for t, e in self.book.entries.items() if e.status == status)

    def _not_accepted(self):
        return sorted((t, p) for t, e in self.book.entries.items() if e.status == PENDING
                      for p in e.ticket.players if p not in e.accepted)

    @rule(players=st.lists(st.sampled_from(PLAYERS), min_size=1, max_size=3, unique=True),
          queue=st.sampled_from(["q", "r"]), accept_s=st.sampled_from([1.0, 5.0, 20.0]))
    def create(self, players, queue, accept_s):
        self.count += 1
        owner = players[-1]  # not always the first
        held_before = {p: self.book.held_count(p) for p in PLAYERS}
        try:
            entry = self.book.create(ticket(f"t{self.count}", *players, queue=queue, at=self.now), owner, self.now,
                                     accept_s=accept_s)
        except BookError as error:
            assert error.code in ("already_queued", "too_many_tickets", "too_many_invitations")
            assert {p: self.book.held_count(p) for p in PLAYERS} == held_before
            return
        assert entry.status == (QUEUED if len(players) == 1 else PENDING) and entry.accepted == (owner,)
        assert all(self.book.held_count(p) == held_before[p] for p in players if p != owner)  # no consent, no count

    @precondition(lambda self: self._not_accepted())
    @rule(data=st.data())
    def accept(self, data):
        ticket_id, player = data.draw(st.sampled_from(self._not_accepted()))
        entry = self.book.entries[ticket_id]
        before = entry.accepted
        try:
            self.book.accept(ticket_id, player, self.now)
        except BookError as error:
            assert error.code in ("already_queued", "too_many_tickets") and entry.accepted == before
            return
        assert entry.accepted == (*before, player)
        assert entry.status == (QUEUED if len(entry.accepted) == entry.ticket.size else PENDING)
        assert self.book.accept(ticket_id, player, self.now + 1).version == entry.version  # again: no change

    @precondition(lambda self: self._not_accepted())
    @rule(data=st.data())
    def decline(self, data):
        ticket_id, player = data.draw(st.sampled_from(self._not_accepted()))
        entry = self.book.cancel(ticket_id, player, self.now)
        assert (entry.status, entry.reason) == (CANCELLED, f"declined by {player}")

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

    @precondition(lambda self: self._ids(QUEUED) + self._ids(PENDING))
    @rule(data=st.data())
    def expire(self, data):
        self.book.expire(data.draw(st.sampled_from(self._ids(QUEUED) + self._ids(PENDING))), "max_wait", self.now)

    @rule(seconds=st.floats(0, 8))
    def time_passes(self, seconds):
        self.now += seconds
        for queue in ("q", "r"):
            for entry in self.book.expire_unaccepted(queue, self.now):
                assert (entry.status, entry.reason) == (EXPIRED, NOT_ACCEPTED)
        for entry in self.book.entries.values():
            assert entry.status != PENDING or entry.accept_by > self.now
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
            assert sorted(self.book.pending[queue]) == sorted(t for t, e in self.book.entries.items()
                                                              if e.status == PENDING and e.ticket.queue == queue)

    @invariant()
    def a_player_counts_the_queued_tickets_and_the_pending_ones_they_accepted_within_the_limits(self):
        if not hasattr(self, "book"):
            return
        for player in PLAYERS:
            held = [e for e in self.book.entries.values() if player in e.ticket.players
                    and (e.status == QUEUED or (e.status == PENDING and player in e.accepted))]
            assert len(held) == self.book.held_count(player) <= 2
            assert len({e.ticket.queue for e in held}) == len(held)  # one per queue
            invited = sum(e.status == PENDING and player in e.ticket.players and player not in e.accepted
                          for e in self.book.entries.values())
            assert invited == self.book.invited_count(player) <= 2

    @invariant()
    def every_member_of_a_queued_or_matched_ticket_accepted_it(self):
        if not hasattr(self, "book"):
            return
        for entry in self.book.entries.values():
            assert entry.owner == entry.accepted[0] and set(entry.accepted) <= set(entry.ticket.players)
            assert len(set(entry.accepted)) == len(entry.accepted)
            if entry.status in (QUEUED, MATCHED):
                assert sorted(entry.accepted) == sorted(entry.ticket.players)
            assert (entry.accept_by is not None) == (entry.status == PENDING)

    @invariant()
    def a_ticket_waits_while_queued_and_not_after(self):
        if not hasattr(self, "book"):
            return
        for entry in self.book.entries.values():
            left = self.now if entry.status == QUEUED else entry.updated_at
            expected = max(0.0, left - entry.ticket.created_at) if entry.entered_queue else 0.0
            assert entry.wait_s(self.now) == expected
            if entry.status == PENDING:
                assert expected == 0.0
            if entry.status != QUEUED:
                assert entry.wait_s(self.now + 1000.0) == entry.wait_s(self.now)

    @invariant()
    def matched_tickets_have_assignments_and_others_do_not_count_as_placed(self):
        if not hasattr(self, "book"):
            return
        for entry in self.book.entries.values():
            assert (entry.assignment is not None) == (entry.status == MATCHED)

    @invariant()
    def every_kept_ticket_is_listed_for_each_of_its_players(self):
        if not hasattr(self, "book"):
            return
        for player in PLAYERS:
            listed = [e.ticket.ticket_id for e in self.book.tickets_of(player, 1000)]
            assert sorted(listed) == sorted(t for t, e in self.book.entries.items() if player in e.ticket.players)


TestBookMachine = BookMachine.TestCase
TestBookMachine.settings = settings(max_examples=100, stateful_step_count=50, deadline=None)
