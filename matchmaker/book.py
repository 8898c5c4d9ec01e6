"""The ticket book: every ticket's status, the queued pool of each queue, and the limits per player.

Pure (no clock, no I/O): the matchmaker service passes `now` in and does the placing.

A ticket's life:
    queued -> matched (with an assignment) -> [back to queued, if its match was cancelled because
                                               someone else never showed up]
    queued -> cancelled (by its owner)  |  queued -> expired (max wait, or a no-show)
A ticket that returns to the queue keeps its `created_at`: its waiting time goes on counting, so it
is not sent to the back of the queue. Finished tickets (cancelled, expired, and matched ones whose
match started) stay readable for `keep_finished_s`, then `purge` forgets them.

Limits: a player is in at most one queued ticket per queue, and in at most `max_per_player`
queued tickets in all (a party's members count too), so nobody can flood the pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import attrs

from matchmaker.tickets import Ticket

QUEUED = "queued"
MATCHED = "matched"
CANCELLED = "cancelled"
EXPIRED = "expired"
STATUSES = (QUEUED, MATCHED, CANCELLED, EXPIRED)

# expiry reasons
MAX_WAIT = "max_wait"
NO_SHOW = "no_show"  # this ticket's player(s) never joined the match they were placed in


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

    @property
    def finished(self) -> bool:
        return self.status in (CANCELLED, EXPIRED)

    def wait_s(self, now: float) -> float:
        """How long the ticket has waited in its queue: until `now` while it is queued, else until it left
        the queue (`updated_at`: matched, cancelled or expired). A ticket back in the queue counts from its
        `created_at` again, its matched time included, as forming does."""
        return self.ticket.wait_s(now if self.status == QUEUED else self.updated_at)


class TicketBook:
    def __init__(self, queues: Iterable[str], *, max_per_player: int = 3, keep_finished_s: float = 600.0):
        self.entries: dict[str, Entry] = {}
        self.queued: dict[str, dict[str, Ticket]] = {queue: {} for queue in queues}  # insertion order
        self.max_per_player = max_per_player
        self.keep_finished_s = keep_finished_s
        self._queued_by_player: dict[str, dict[str, str]] = {}  # player -> {queue: ticket id}
        self._by_match: dict[str, list[str]] = {}  # match id -> ids of the tickets placed in it
        self._finished_at: dict[str, float] = {}  # ticket id -> when it stopped changing (insertion order)

    # -- reading ------------------------------------------------------------------------------

    def get(self, ticket_id: str) -> Entry | None:
        return self.entries.get(ticket_id)

    def pool(self, queue: str) -> list[Ticket]:
        return list(self.queued[queue].values())

    def tickets_of_match(self, match_id: str) -> list[str]:
        return list(self._by_match.get(match_id, ()))

    def queued_count(self, player: str) -> int:
        return len(self._queued_by_player.get(player, ()))

    # -- changing -----------------------------------------------------------------------------

    def create(self, ticket: Ticket, owner: str, now: float) -> Entry:
        if ticket.queue not in self.queued:
            raise BookError("unknown_queue", 404, f"no queue {ticket.queue!r}; there are: "
                            f"{', '.join(sorted(self.queued)) or 'none'}")
        if owner not in ticket.players:
            raise BookError("not_in_ticket", 403, "a ticket's creator is one of its players")
        if ticket.ticket_id in self.entries:
            raise BookError("ticket_exists", 409, f"ticket {ticket.ticket_id} exists")
        for player in ticket.players:
            held = self._queued_by_player.get(player, {})
            if ticket.queue in held:
                raise BookError("already_queued", 409, f"{player} is already queued in {ticket.queue} "
                                f"(ticket {held[ticket.queue]})")
            if len(held) >= self.max_per_player:  # the ids: any player of a ticket can cancel it
                raise BookError("too_many_tickets", 429, f"{player} is already in {len(held)} queued tickets "
                                f"(at most {self.max_per_player}): {', '.join(held.values())}")
        entry = Entry(ticket, owner, QUEUED, now)
        self.entries[ticket.ticket_id] = entry
        self._enqueue(ticket)
        return entry

    def cancel(self, ticket_id: str, player: str, now: float) -> Entry:
        entry = self._entry(ticket_id)
        if player not in entry.ticket.players:
            raise BookError("not_your_ticket", 403, "only a ticket's players can cancel it")
        if entry.status != QUEUED:
            raise BookError("not_queued", 409, f"ticket {ticket_id} is {entry.status}: only a queued ticket "
                            "can be cancelled")
        self._dequeue(entry.ticket)
        self._finish(entry, CANCELLED, "cancelled by a player", now)
        return entry

    def expire(self, ticket_id: str, reason: str, now: float) -> Entry:
        entry = self._entry(ticket_id)
        if entry.status == QUEUED:
            self._dequeue(entry.ticket)
        self._finish(entry, EXPIRED, reason, now)
        return entry

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
        """A matched ticket goes back to its queue with its original waiting time, unless one of its
        players queued again meanwhile (then it is cancelled, saying so)."""
        entry = self._entry(ticket_id)
        if entry.status != MATCHED:
            raise BookError("not_matched", 409, f"ticket {ticket_id} is {entry.status}")
        ticket = entry.ticket
        self._forget_match(entry)
        for player in ticket.players:
            held = self._queued_by_player.get(player, {})
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
            gone.append(ticket_id)
        return gone

    # -- inside -------------------------------------------------------------------------------

    def _entry(self, ticket_id: str) -> Entry:
        entry = self.entries.get(ticket_id)
        if entry is None:
            raise BookError("ticket_not_found", 404, f"no ticket {ticket_id}")
        return entry

    def _enqueue(self, ticket: Ticket) -> None:
        self.queued[ticket.queue][ticket.ticket_id] = ticket
        for player in ticket.players:
            self._queued_by_player.setdefault(player, {})[ticket.queue] = ticket.ticket_id

    def _dequeue(self, ticket: Ticket) -> None:
        del self.queued[ticket.queue][ticket.ticket_id]
        for player in ticket.players:
            held = self._queued_by_player[player]
            del held[ticket.queue]
            if not held:
                del self._queued_by_player[player]

    def _finish(self, entry: Entry, status: str, reason: str, now: float) -> None:
        self._forget_match(entry)
        entry.status, entry.reason, entry.updated_at, entry.assignment = status, reason, now, None
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
