"""The ticket book: every ticket's status, the queued pool of each queue, and the limits per player.

Pure (no clock, no I/O): the matchmaker service passes `now` in and does the placing.

A ticket's life:
    pending (a party: until every member accepted) -> queued  |  pending -> cancelled (a member declined)
                                                              |  pending -> expired (not_accepted, after accept_s)
    queued -> matched (with an assignment) -> [back to queued, if its match was cancelled because
                                               someone else never showed up: no new acceptance]
    queued -> cancelled (by one of its players)  |  queued -> expired (max wait, or a no-show)
A solo ticket is queued at once. A party ticket is pending, with its creator's acceptance, until each
other member accepts it; it then enters the queue, and its `created_at` becomes that moment (its
waiting time, and its place in the fairness order, count from then). A ticket that returns to the
queue keeps its `created_at`: its waiting time goes on counting, so it is not sent to the back of
the queue. Finished tickets (cancelled, expired, and matched ones whose match started) stay readable
for `keep_finished_s`, then `purge` forgets them.

Limits. A player's *held* tickets are the queued tickets they are in and the pending ones they have
accepted: a player holds at most one ticket per queue and at most `max_per_player` in all, so nobody
can flood the pool. Naming a player in a party does not count against their limits until they
accept; it counts against `max_invitations`, the pending tickets a player is named in and has not
accepted, so nobody can flood a player with invitations either.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from matchmaker.tickets import Ticket

PENDING = "pending"
QUEUED = "queued"
MATCHED = "matched"
CANCELLED = "cancelled"
EXPIRED = "expired"
STATUSES = (PENDING, QUEUED, MATCHED, CANCELLED, EXPIRED)

# expiry reasons
MAX_WAIT = "max_wait"
NO_SHOW = "no_show"  # this ticket's player(s) never joined the match they were placed in
NOT_ACCEPTED = "not_accepted"  # a party ticket that not every member accepted within its queue's window

DEFAULT_ACCEPT_S = 60.0
MAX_INVITATIONS = 16


class BookError(Exception):
    """A refused change. `code` is stable; `status` is the HTTP status that fits."""

    def __init__(self, code: str, status: int, message: str):
        super().__init__(message)
        self.code, self.status = code, status


@attrs.frozen
class Assignment:
    match_id: str
    ws_url: str
    tokens: Mapping[str, str]  # player id -> that player's join token
    region: str | None = None
    teams: tuple[tuple[str, ...], ...] = ()
    backfill: bool = False  # placed into a running match that lost players


@attrs.define
class Entry:
    ticket: Ticket
    owner: str  # the player who created it
    status: str
    updated_at: float
    reason: str | None = None
    assignment: Assignment | None = None
    requeued: int = 0  # times it went back to the queue after a cancelled match
    version: int = 0  # bumped on every change (long-polls wait for it to move)
    accepted: tuple[str, ...] = ()  # the members who accepted it, in that order (the owner first)
    accept_by: float | None = None  # while pending: it expires (not_accepted) at this time
    entered_queue: bool = True  # False while it has never been queued (a party ticket not yet accepted)

    @property
    def finished(self) -> bool:
        return self.status in (CANCELLED, EXPIRED)

    def wait_s(self, now: float) -> float:
        """How long the ticket has waited in its queue: until `now` while it is queued, else until it left
        the queue (`updated_at`: matched, cancelled or expired); 0 if it never entered it. A ticket back in
        the queue counts from its `created_at` again, its matched time included, as forming does."""
        if not self.entered_queue:
            return 0.0
        return self.ticket.wait_s(now if self.status == QUEUED else self.updated_at)


class TicketBook:
    def __init__(self, queues: Iterable[str], *, max_per_player: int = 3, keep_finished_s: float = 600.0,
                 max_invitations: int = MAX_INVITATIONS):
        self.entries: dict[str, Entry] = {}
        self.queued: dict[str, dict[str, Ticket]] = {queue: {} for queue in queues}  # insertion order
        self.pending: dict[str, dict[str, Entry]] = {queue: {} for queue in self.queued}
        self.max_per_player = max_per_player
        self.max_invitations = max_invitations
        self.keep_finished_s = keep_finished_s
        self._held_by_player: dict[str, dict[str, str]] = {}  # player -> {queue: ticket id} (queued, or accepted)
        self._invited: dict[str, dict[str, None]] = {}  # player -> ids of pending tickets they have not accepted
        self._by_player: dict[str, dict[str, None]] = {}  # player -> ids of every ticket kept that names them
        self._by_match: dict[str, list[str]] = {}  # match id -> ids of the tickets placed in it
        self._finished_at: dict[str, float] = {}  # ticket id -> when it stopped changing (insertion order)

    # -- reading ------------------------------------------------------------------------------

    def get(self, ticket_id: str) -> Entry | None:
        return self.entries.get(ticket_id)

    def pool(self, queue: str) -> list[Ticket]:
        return list(self.queued[queue].values())

    def tickets_of_match(self, match_id: str) -> list[str]:
        return list(self._by_match.get(match_id, ()))

    def held_count(self, player: str) -> int:
        """The tickets counted toward `player`'s limits: queued ones they are in, pending ones they accepted."""
        return len(self._held_by_player.get(player, ()))

    def invited_count(self, player: str) -> int:
        """The pending tickets that name `player` and that they have not accepted."""
        return len(self._invited.get(player, ()))

    def tickets_of(self, player: str, limit: int, status: str | None = None) -> list[Entry]:
        """The tickets kept that name `player` (of `status`, if given), newest (created last) first, at most `limit`."""
        found: list[Entry] = []
        if limit <= 0:
            return found
        for ticket_id in reversed(self._by_player.get(player, {})):
            entry = self.entries[ticket_id]
            if status is None or entry.status == status:
                found.append(entry)
                if len(found) >= limit:
                    break
        return found

    # -- changing -----------------------------------------------------------------------------

    def create(self, ticket: Ticket, owner: str, now: float, *, accept_s: float = DEFAULT_ACCEPT_S) -> Entry:
        """A solo ticket is queued; a party ticket is pending until every other member accepts it, for
        at most `accept_s`. The limits are checked for the owner only: the others have not accepted."""
        if ticket.queue not in self.queued:
            raise BookError("unknown_queue", 404, f"no queue {ticket.queue!r}; there are: "
                            f"{', '.join(sorted(self.queued)) or 'none'}")
        if owner not in ticket.players:
            raise BookError("not_in_ticket", 403, "a ticket's creator is one of its players")
        if ticket.ticket_id in self.entries:
            raise BookError("ticket_exists", 409, f"ticket {ticket.ticket_id} exists")
        self._check_limits(owner, ticket.queue)
        others = [player for player in ticket.players if player != owner]
        for player in others:
            invited = len(self._invited.get(player, ()))
            if invited >= self.max_invitations:  # no ids: they are the invited player's business
                raise BookError("too_many_invitations", 429, f"{player} is already named in {invited} pending "
                                f"tickets they have not accepted (at most {self.max_invitations})")
        ticket_id = ticket.ticket_id
        for player in ticket.players:
            self._by_player.setdefault(player, {})[ticket_id] = None
        if not others:
            entry = Entry(ticket, owner, QUEUED, now, accepted=(owner,))
            self.entries[ticket_id] = entry
            self._enqueue(ticket)
            return entry
        entry = Entry(ticket, owner, PENDING, now, accepted=(owner,), accept_by=now + accept_s, entered_queue=False)
        self.entries[ticket_id] = entry
        self.pending[ticket.queue][ticket_id] = entry
        self._held_by_player.setdefault(owner, {})[ticket.queue] = ticket_id
        for player in others:
            self._invited.setdefault(player, {})[ticket_id] = None
        return entry

    def accept(self, ticket_id: str, player: str, now: float) -> Entry:
        """`player` accepts the party ticket; with the last acceptance it is queued (its `created_at`
        becomes `now`). Accepting again is no change. The limits are checked for `player` now."""
        entry = self._entry(ticket_id)
        if player not in entry.ticket.players:
            raise BookError("not_your_ticket", 403, "only a ticket's players can accept it")
        if entry.finished:
            raise BookError("not_pending", 409, f"ticket {ticket_id} is {entry.status}: only a pending ticket "
                            "can be accepted")
        if player in entry.accepted:
            return entry  # pending, queued or matched: this player has accepted it already
        ticket = entry.ticket
        self._check_limits(player, ticket.queue)
        entry.accepted += (player,)
        self._uninvite(player, ticket_id)
        self._held_by_player.setdefault(player, {})[ticket.queue] = ticket_id
        entry.updated_at = now
        entry.version += 1
        if len(entry.accepted) == ticket.size:
            del self.pending[ticket.queue][ticket_id]
            entry.ticket = attrs.evolve(ticket, created_at=now)
            entry.status, entry.accept_by, entry.entered_queue = QUEUED, None, True
            self._enqueue(entry.ticket)
        return entry

    def cancel(self, ticket_id: str, player: str, now: float) -> Entry:
        """One of its players cancels a queued ticket, or cancels (declines, if they had not accepted) a
        pending one."""
        entry = self._entry(ticket_id)
        if player not in entry.ticket.players:
            raise BookError("not_your_ticket", 403, "only a ticket's players can cancel it")
        if entry.status == PENDING:
            reason = f"cancelled by {player}" if player in entry.accepted else f"declined by {player}"
            self._unpend(entry)
        elif entry.status == QUEUED:
            reason = f"cancelled by {player}"
            self._dequeue(entry.ticket)
        else:
            raise BookError("not_queued", 409, f"ticket {ticket_id} is {entry.status}: only a pending or queued "
                            "ticket can be cancelled")
        self._finish(entry, CANCELLED, reason, now)
        return entry

    def expire(self, ticket_id: str, reason: str, now: float) -> Entry:
        entry = self._entry(ticket_id)
        if entry.status == QUEUED:
            self._dequeue(entry.ticket)
        elif entry.status == PENDING:
            self._unpend(entry)
        self._finish(entry, EXPIRED, reason, now)
        return entry

    def expire_unaccepted(self, queue: str, now: float) -> list[Entry]:
        """Expire (`not_accepted`) the pending tickets of `queue` whose acceptance window ended by `now`."""
        due = [entry for entry in self.pending[queue].values() if entry.accept_by <= now]  # type: ignore[operator]
        for entry in due:
            self._unpend(entry)
            self._finish(entry, EXPIRED, NOT_ACCEPTED, now)
        return due

    def is_queued(self, ticket_ids: Iterable[str]) -> bool:
        """Whether every one of these tickets is still queued (a pass ran on a copy of the pool)."""
        return all((entry := self.entries.get(t)) is not None and entry.status == QUEUED for t in ticket_ids)

    def assign(self, ticket_id: str, assignment: Assignment, now: float) -> Entry:
        entry = self._entry(ticket_id)
        if entry.status != QUEUED:
            raise BookError("not_queued", 409, f"ticket {ticket_id} is {entry.status}")
        self._dequeue(entry.ticket)
        entry.status, entry.assignment, entry.reason, entry.updated_at = MATCHED, assignment, None, now
        entry.version += 1
        self._by_match.setdefault(assignment.match_id, []).append(ticket_id)
        return entry

    def requeue(self, ticket_id: str, reason: str, now: float) -> Entry:
        """A matched ticket goes back to its queue with its original waiting time (every member accepted it
        already: it is not pending again), unless one of its players holds another ticket in that queue, or
        as many as they may, meanwhile (then it is cancelled, saying so)."""
        entry = self._entry(ticket_id)
        if entry.status != MATCHED:
            raise BookError("not_matched", 409, f"ticket {ticket_id} is {entry.status}")
        ticket = entry.ticket
        self._forget_match(entry)
        for player in ticket.players:
            held = self._held_by_player.get(player, {})
            if ticket.queue in held or len(held) >= self.max_per_player:
                self._finish(entry, CANCELLED, f"{reason}; not queued again: {player} is in another ticket", now)
                return entry
        entry.status, entry.assignment, entry.reason, entry.updated_at = QUEUED, None, reason, now
        entry.requeued += 1
        entry.version += 1
        self._finished_at.pop(ticket_id, None)
        self._enqueue(ticket)
        return entry

    def settle(self, match_id: str, now: float) -> None:
        """The match these tickets were placed in started (or ended): they are done changing."""
        for ticket_id in self._by_match.pop(match_id, ()):
            entry = self.entries.get(ticket_id)
            if entry is not None and entry.status == MATCHED:
                self._finished_at[ticket_id] = now

    def purge(self, now: float) -> list[str]:
        """Forget finished tickets older than `keep_finished_s`; their ids."""
        gone = []
        for ticket_id, at in list(self._finished_at.items()):
            if at > now - self.keep_finished_s:
                break  # insertion order is time order
            del self._finished_at[ticket_id]
            entry = self.entries.pop(ticket_id, None)
            if entry is not None:
                self._forget_match(entry)
                for player in entry.ticket.players:
                    self._forget(self._by_player, player, ticket_id)
            gone.append(ticket_id)
        return gone

    # -- inside -------------------------------------------------------------------------------

    def _entry(self, ticket_id: str) -> Entry:
        entry = self.entries.get(ticket_id)
        if entry is None:
            raise BookError("ticket_not_found", 404, f"no ticket {ticket_id}")
        return entry

    def _check_limits(self, player: str, queue: str) -> None:
        held = self._held_by_player.get(player, {})
        if queue in held:
            raise BookError("already_queued", 409, f"{player} is already queued in {queue} "
                            f"(ticket {held[queue]})")
        if len(held) >= self.max_per_player:  # the ids: any player of a ticket can cancel it
            raise BookError("too_many_tickets", 429, f"{player} is already in {len(held)} queued or accepted "
                            f"tickets (at most {self.max_per_player}): {', '.join(held.values())}")

    def _enqueue(self, ticket: Ticket) -> None:
        self.queued[ticket.queue][ticket.ticket_id] = ticket
        for player in ticket.players:
            self._held_by_player.setdefault(player, {})[ticket.queue] = ticket.ticket_id

    def _dequeue(self, ticket: Ticket) -> None:
        del self.queued[ticket.queue][ticket.ticket_id]
        for player in ticket.players:
            self._release(player, ticket.queue)

    def _unpend(self, entry: Entry) -> None:
        ticket = entry.ticket
        del self.pending[ticket.queue][ticket.ticket_id]
        for player in ticket.players:
            if player in entry.accepted:
                self._release(player, ticket.queue)
            else:
                self._uninvite(player, ticket.ticket_id)

    def _release(self, player: str, queue: str) -> None:
        held = self._held_by_player[player]
        del held[queue]
        if not held:
            del self._held_by_player[player]

    def _uninvite(self, player: str, ticket_id: str) -> None:
        self._forget(self._invited, player, ticket_id)

    @staticmethod
    def _forget(index: dict[str, dict[str, None]], player: str, ticket_id: str) -> None:
        ids = index.get(player)
        if ids is not None:
            ids.pop(ticket_id, None)
            if not ids:
                del index[player]

    def _finish(self, entry: Entry, status: str, reason: str, now: float) -> None:
        self._forget_match(entry)
        entry.status, entry.reason, entry.updated_at, entry.assignment = status, reason, now, None
        entry.accept_by = None
        entry.version += 1
        self._finished_at.pop(entry.ticket.ticket_id, None)
        self._finished_at[entry.ticket.ticket_id] = now

    def _forget_match(self, entry: Entry) -> None:
        if entry.assignment is None:
            return
        placed = self._by_match.get(entry.assignment.match_id)
        if placed is not None and entry.ticket.ticket_id in placed:
            placed.remove(entry.ticket.ticket_id)
            if not placed:
                del self._by_match[entry.assignment.match_id]
