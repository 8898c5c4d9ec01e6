"""The matchmaker service: the trio shell around the ticket book, match forming and placement.

One forming task per queue. A pass runs as soon as tickets arrive (coalesced: at most one pass at
a time per queue, the next one right after it if more arrived) and at least every
`pass_interval_s`, so that windows that widen with waiting time and maximum waits are applied
even when nothing arrives. A pass works on a copy of the pool (in a worker thread when the pool
is large, so matches keep their tick timing); tickets cancelled meanwhile are simply not placed.

A party ticket is pending, out of the pool, until every member accepted it (matchmaker/book.py); each
queue's forming loop also expires the pending tickets whose acceptance window (`Mode.party_accept_s`)
ended, so within `pass_interval_s` after it.

Backfill requests are served first in each pass: a ticket that fits a running match that lost
players joins it rather than wait for a new match.

The matchmaker hears from the node (`on_notice`) when a match it placed starts (its tickets are
settled), is cancelled because someone never showed up (tickets whose players all came return to
the queue with their original waiting time; the no-shows' tickets expire), or loses players (a
backfill request, if the game asks for it).

State is in memory: a restart forgets queued tickets (clients see 404 and queue again); matches
already placed are in their files and go on.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from gameserver.actor import MatchNotice
from gameserver.node import MatchNotFound, MatchOver, NodeError
from gameserver.simulation import NO_SHOW_PREFIX
from matchmaker.backfill import BackfillFill, BackfillRequest, fill_backfills
from matchmaker.book import MATCHED, NO_SHOW, PENDING, QUEUED, Assignment, BookError, Entry, TicketBook
from matchmaker.forming import FormedMatch, form_matches
from matchmaker.hosts import WorkerError
from matchmaker.placement import Placement
from matchmaker.queues import Mode
from matchmaker.tickets import Ticket

log = logging.getLogger("arbiter.matchmaker")

THREAD_POOL_FROM = 2000  # pools at least this large are formed in a worker thread
FORMING_REST = 2.0  # after a pass, this many times its duration before the next: forming takes <= 1/3 of a core
HOLD_RETRY_S = 5.0  # a backfill hold whose match could not be asked (its worker restarting) asks again after this
HOLD_ATTEMPTS = 12  # ... this many times in all, then the players keep their seats
QUEUE_LABEL = "queue"
REGION_LABEL = "region"


def new_ticket_id() -> str:
    return secrets.token_hex(16)


@attrs.define
class _Backfill:
    request: BackfillRequest
    pending: dict[str, float] = attrs.field(factory=dict)  # reserved player -> hold deadline


class Matchmaker:
    def __init__(self, modes: dict[str, Mode], placement: Placement, *, clock: Callable[[], float] = time.time,
                 pass_interval_s: float = 1.0, max_per_player: int = 3, keep_finished_s: float = 600.0):
        self.modes = modes
        self.placement = placement
        self.clock = clock
        self.pass_interval_s = pass_interval_s
        self.book = TicketBook(modes, max_per_player=max_per_player, keep_finished_s=keep_finished_s)
        self._dirty = {queue: trio.Event() for queue in modes}
        self._changed: dict[str, trio.Event] = {}  # ticket id -> set at its next change (for waiters)
        self._placing: set[str] = set()  # ticket ids in a match being created
        self._backfills: dict[str, _Backfill] = {}  # match id -> its open request
        self._skill: dict[str, float] = {}  # match id -> mean skill of its players (for backfill)
        self._notices_in, self._notices_out = trio.open_memory_channel[MatchNotice](math.inf)
        self.passes = 0
        self.last_pass_s: dict[str, float] = {}

    # -- running ------------------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[Matchmaker] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for queue in self.modes:
                nursery.start_soon(self._forming_loop, queue)
            nursery.start_soon(self._notice_loop)
            task_status.started(self)

    def on_notice(self, notice: MatchNotice) -> None:
        """The node's listener: never blocks (the channel is unbounded; a notice per match event)."""
        if notice.labels.get(QUEUE_LABEL) in self.modes:
            self._notices_in.send_nowait(notice)

    # -- tickets ------------------------------------------------------------------------------

    def create_ticket(self, owner: str, queue: str, players: list[str] | None = None, *,
                      numbers: dict[str, float] | None = None, strings: dict[str, str] | None = None,
                      string_sets: dict[str, list[str]] | None = None,
                      latencies: dict[str, float] | None = None) -> Entry:
        """Queue a ticket for `owner`, or create their party's ticket, pending until the other members accept it.
        Raises BookError, or ValueError for bad properties."""
        mode = self.modes.get(queue)
        if mode is None:
            raise BookError("unknown_queue", 404, f"no queue {queue!r}; there are: {', '.join(sorted(self.modes))}")
        party = list(players) if players else [owner]
        if len(party) > mode.config.max_party_size:
            raise BookError("party_too_large", 422, f"queue {queue} takes parties of at most "
                            f"{mode.config.max_party_size} players")
        ticket = Ticket(ticket_id=new_ticket_id(), queue=queue, players=tuple(party), created_at=self.clock(),
                        numbers=numbers or {}, strings=strings or {},
                        string_sets={name: frozenset(members) for name, members in (string_sets or {}).items()},
                        latencies=latencies or {})
        entry = self.book.create(ticket, owner, ticket.created_at, accept_s=mode.party_accept_s)
        if entry.status == QUEUED:
            self._dirty[queue].set()
        return entry

    def accept_ticket(self, ticket_id: str, player: str) -> Entry:
        """`player` accepts a party ticket; with the last acceptance it enters its queue. Raises BookError."""
        entry = self.ticket(ticket_id)
        seen = entry.version
        entry = self.book.accept(ticket_id, player, self.clock())
        if entry.version != seen:  # a new acceptance (not one made before)
            if entry.status == QUEUED:  # the last one
                self._dirty[entry.ticket.queue].set()
            self._changed_now(ticket_id)
        return entry

    def tickets_of(self, player: str, limit: int, status: str | None = None) -> list[Entry]:
        return self.book.tickets_of(player, limit, status)

    def cancel_ticket(self, ticket_id: str, player: str) -> Entry:
        if ticket_id in self._placing:
            raise BookError("placing", 409, "the ticket is being placed in a match right now; "
                            "look at it again in a moment")
        entry = self.book.cancel(ticket_id, player, self.clock())
        self._changed_now(ticket_id)
        return entry

    def ticket(self, ticket_id: str) -> Entry:
        entry = self.book.get(ticket_id)
        if entry is None:
            raise BookError("ticket_not_found", 404, f"no ticket {ticket_id} (unknown, or forgotten after it "
                            f"finished, or the server restarted: queue again)")
        return entry

    async def wait(self, ticket_id: str, seen_version: int | None, timeout_s: float) -> Entry:
        """The ticket once its version differs from `seen_version` (None: once it is neither pending nor
        queued), or as it is after `timeout_s`."""
        with trio.move_on_after(timeout_s):
            while True:
                entry = self.ticket(ticket_id)
                if seen_version is not None:
                    changed = entry.version != seen_version
                else:
                    changed = entry.status not in (PENDING, QUEUED)
                if changed:
                    return entry
                event = self._changed.get(ticket_id)
                if event is None:
                    event = self._changed[ticket_id] = trio.Event()
                await event.wait()
        return self.ticket(ticket_id)

    def _changed_now(self, ticket_id: str) -> None:
        event = self._changed.pop(ticket_id, None)
        if event is not None:
            event.set()

    # -- forming ------------------------------------------------------------------------------

    async def _forming_loop(self, queue: str) -> None:
        mode = self.modes[queue]
        while True:
            with trio.move_on_after(self.pass_interval_s):
                await self._dirty[queue].wait()
            self._dirty[queue] = trio.Event()
            started = trio.current_time()
            try:
                for entry in self.book.expire_unaccepted(queue, self.clock()):
                    self._changed_now(entry.ticket.ticket_id)
                await self._pass(mode)
            except Exception:
                log.exception("a forming pass of queue %s failed", queue)
            for ticket_id in self.book.purge(self.clock()):
                self._changed_now(ticket_id)
            # Arrivals meanwhile coalesce into the next pass. A pass covers the whole pool, so under a
            # steady stream of arrivals passes would run back to back and take the core from the
            # requests: rest FORMING_REST times as long as the pass took (a pass over 100 tickets takes
            # about a millisecond, over 10,000 about 0.2 s).
            await trio.sleep(min(self.pass_interval_s, FORMING_REST * (trio.current_time() - started)))

    async def _pass(self, mode: Mode) -> None:
        queue = mode.queue
        pool = [t for t in self.book.pool(queue) if t.ticket_id not in self._placing]
        if not pool:
            return
        now = self.clock()
        started = time.perf_counter()
        requests = [b.request for b in self._backfills.values() if b.request.queue == queue]
        if requests:
            filled = fill_backfills(pool, requests, mode.config, now)
            taken = set()
            for fill in filled.fills:
                taken.update(fill.ticket_ids)
                self._reserve_placing(fill.ticket_ids)
                self._nursery.start_soon(self._place_backfill, mode, fill)
            pool = [t for t in pool if t.ticket_id not in taken]
        if len(pool) >= THREAD_POOL_FROM:
            result = await trio.to_thread.run_sync(form_matches, pool, mode.config, now)
        else:
            result = form_matches(pool, mode.config, now)
        self.passes += 1
        self.last_pass_s[queue] = time.perf_counter() - started
        for formed in result.matches:
            if self.book.is_queued(formed.ticket_ids) and not self._placing.intersection(formed.ticket_ids):
                self._reserve_placing(formed.ticket_ids)
                self._nursery.start_soon(self._place, mode, formed)
        for ticket_id, reason in result.expired:
            if self.book.is_queued([ticket_id]) and ticket_id not in self._placing:
                self.book.expire(ticket_id, reason, now)
                self._changed_now(ticket_id)

    def _reserve_placing(self, ticket_ids: tuple[str, ...]) -> None:
        self._placing.update(ticket_ids)

    async def _place(self, mode: Mode, formed: FormedMatch) -> None:
        labels = {QUEUE_LABEL: mode.queue}
        if formed.region is not None:
            labels[REGION_LABEL] = formed.region
        try:
            try:
                placed = await self.placement.create(mode.game, dict(mode.params), roster=list(formed.players),
                                                     lobby_s=mode.seat_hold_s, labels=labels)
            except (NodeError, WorkerError, OSError) as error:
                # The tickets stay queued: the next periodic pass tries again (not at once, so that
                # a node that cannot create matches is not asked in a tight loop). With workers the
                # placement is a call to one: WorkerUnavailable (a NodeError) or WorkerError.
                log.error("placing a %s match failed: %s", mode.queue, error)
                return
            except Exception:  # a bug (ours or a game's): the matchmaker, and the server, go on
                log.exception("placing a %s match failed", mode.queue)
                return
            now = self.clock()
            skills = [mode.config.skill.skill_of(self.book.entries[t].ticket) for t in formed.ticket_ids
                      if mode.config.skill is not None and t in self.book.entries]
            if skills:  # each divided first: the sum of large skills (1e308) is no float
                self._skill[placed.match_id] = math.fsum(skill / len(skills) for skill in skills)
            for ticket_id in formed.ticket_ids:
                entry = self.book.get(ticket_id)
                if entry is None or entry.status != QUEUED:
                    continue
                assignment = Assignment(placed.match_id, placed.ws_url, self._tokens(placed.match_id, entry.ticket),
                                        formed.region, formed.teams)
                self.book.assign(ticket_id, assignment, now)
                self._changed_now(ticket_id)
        finally:
            self._placing.difference_update(formed.ticket_ids)

    def _tokens(self, match_id: str, ticket: Ticket) -> dict[str, str]:
        return {player: self.placement.token(match_id, player)[0] for player in ticket.players}

    # -- what matches tell us -----------------------------------------------------------------

    async def _notice_loop(self) -> None:
        async for notice in self._notices_out:
            try:
                await self._on_notice(notice)
            except Exception:
                log.exception("handling %s failed", notice)

    async def _on_notice(self, notice: MatchNotice) -> None:
        now = self.clock()
        if notice.kind == "started":
            self.book.settle(notice.match_id, now)
        elif notice.kind == "finished":
            self._backfills.pop(notice.match_id, None)
            self._skill.pop(notice.match_id, None)
            if notice.status == "cancelled" and (notice.reason or "").startswith(NO_SHOW_PREFIX):
                self._after_no_show(notice, now)
            self.book.settle(notice.match_id, now)
        elif notice.kind == "left" and notice.backfill and notice.roster is not None:
            self._request_backfill(notice, now)

    def _after_no_show(self, notice: MatchNotice, now: float) -> None:
        came = set(notice.seated)
        for ticket_id in self.book.tickets_of_match(notice.match_id):
            entry = self.book.entries[ticket_id]
            if entry.status != MATCHED:
                continue
            if all(player in came for player in entry.ticket.players):
                self.book.requeue(ticket_id, f"match {notice.match_id} was cancelled: {notice.reason}", now)
                self._dirty[entry.ticket.queue].set()
            else:
                self.book.expire(ticket_id, NO_SHOW, now)
            self._changed_now(ticket_id)

    def _request_backfill(self, notice: MatchNotice, now: float) -> None:
        queue = notice.labels[QUEUE_LABEL]
        backfill = self._backfills.get(notice.match_id)
        pending = len(backfill.pending) if backfill is not None else 0
        open_seats = notice.max_players - len(notice.seated) - pending
        if open_seats <= 0:
            return
        request = BackfillRequest(match_id=notice.match_id, queue=queue, open_seats=open_seats,
                                  created_at=backfill.request.created_at if backfill is not None else now,
                                  region=notice.labels.get(REGION_LABEL), skill=self._skill.get(notice.match_id))
        if backfill is None:
            self._backfills[notice.match_id] = _Backfill(request)
        else:
            backfill.request = request
        self._dirty[queue].set()

    async def _place_backfill(self, mode: Mode, fill: BackfillFill) -> None:
        backfill = self._backfills.get(fill.match_id)
        try:
            if backfill is None:
                return  # the match finished meanwhile: the tickets stay queued
            try:
                await self.placement.reserve(fill.match_id, list(fill.players))
            except (NodeError, WorkerError) as error:  # the tickets stay queued
                log.info("backfill of %s not placed: %s", fill.match_id, error)
                self._backfills.pop(fill.match_id, None)
                return
            except Exception:
                log.exception("backfill of %s not placed", fill.match_id)
                self._backfills.pop(fill.match_id, None)
                return
            now = self.clock()
            ws_url = self.placement.ws_url(fill.match_id)
            for ticket_id in fill.ticket_ids:
                entry = self.book.get(ticket_id)
                if entry is None or entry.status != QUEUED:
                    continue
                assignment = Assignment(fill.match_id, ws_url, self._tokens(fill.match_id, entry.ticket),
                                        backfill.request.region, fill.teams, backfill=True)
                self.book.assign(ticket_id, assignment, now)
                self._changed_now(ticket_id)
            deadline = now + mode.backfill_hold_s
            for player in fill.players:
                backfill.pending[player] = deadline
            left = backfill.request.open_seats - len(fill.players)
            if left > 0:
                backfill.request = attrs.evolve(backfill.request, open_seats=left)
            else:
                self._backfills.pop(fill.match_id, None)
            self._nursery.start_soon(self._hold_backfill, mode, fill, backfill)
        finally:
            self._placing.difference_update(fill.ticket_ids)

    async def _hold_backfill(self, mode: Mode, fill: BackfillFill, backfill: _Backfill) -> None:
        """After the hold, players placed by backfill who never joined give their seats back, their
        tickets expire as no-shows, and the match asks again. A match that cannot be asked (its
        worker is being restarted, or failed on the call) is asked again after HOLD_RETRY_S, up
        to HOLD_ATTEMPTS times; a match that is over ends the hold."""
        await trio.sleep(mode.backfill_hold_s)
        for attempt in range(1, HOLD_ATTEMPTS + 1):
            try:
                await self._end_backfill_hold(mode, fill, backfill)
                return
            except (MatchOver, MatchNotFound):  # the match is over: nobody will take the seats
                for player in fill.players:
                    backfill.pending.pop(player, None)
                return
            except (NodeError, WorkerError, OSError) as error:
                if attempt == HOLD_ATTEMPTS:
                    log.error("the backfill hold of %s in %s could not end, the seats stay held: %s",
                              list(fill.players), fill.match_id, error)
                    return
                log.warning("the backfill hold of %s could not end now (asking again in %g s): %s", fill.match_id,
                            HOLD_RETRY_S, error)
            except Exception:  # a bug (ours or a game's): the matchmaker, and the server, go on
                log.exception("the backfill hold of %s failed", fill.match_id)
                return
            await trio.sleep(HOLD_RETRY_S)

    async def _end_backfill_hold(self, mode: Mode, fill: BackfillFill, backfill: _Backfill) -> None:
        seated = set(await self.placement.seated(fill.match_id))
        missing = [p for p in fill.players if p not in seated]
        if missing:
            await self.placement.reserve(fill.match_id, missing, release=True)
        for player in fill.players:
            backfill.pending.pop(player, None)
        if not missing:
            return
        now = self.clock()
        for ticket_id in fill.ticket_ids:
            entry = self.book.get(ticket_id)
            if entry is not None and entry.status == MATCHED and any(p in missing for p in entry.ticket.players):
                self.book.expire(ticket_id, NO_SHOW, now)
                self._changed_now(ticket_id)
        still = self._backfills.get(fill.match_id)
        open_seats = len(missing) + (still.request.open_seats if still is not None else 0)
        request = attrs.evolve(backfill.request, open_seats=open_seats)
        if still is None:
            self._backfills[fill.match_id] = _Backfill(request)
        else:
            still.request = request
        self._dirty[mode.queue].set()

    # -- reporting ----------------------------------------------------------------------------

    def queue_stats(self) -> list[dict[str, Any]]:
        now = self.clock()
        stats = []
        for queue, mode in self.modes.items():
            pool = self.book.queued[queue]
            oldest = min((t.created_at for t in pool.values()), default=None)
            stats.append({"queue": queue, "game": mode.game, "queued_tickets": len(pool),
                          "queued_players": sum(t.size for t in pool.values()),
                          "pending_tickets": len(self.book.pending[queue]), "party_accept_s": mode.party_accept_s,
                          "oldest_wait_s": None if oldest is None else max(0.0, now - oldest),
                          "open_backfills": sum(1 for b in self._backfills.values() if b.request.queue == queue),
                          "last_pass_s": self.last_pass_s.get(queue),
                          "players": {"min": mode.config.players.min, "max": mode.config.players.max}})
        return stats

