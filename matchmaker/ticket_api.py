"""The matchmaking routes: guest tokens, queues, tickets (with long-poll), custom matches by code, listing.

Players authenticate with a bearer token (matchmaker/auth.py). The pydantic models below exist
only at this HTTP edge; the service and the book speak attrs.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field

from gameserver.ids import match_id_from_name
from gameserver.node import NodeError
from matchmaker.auth import AuthError, PlayerAuth
from matchmaker.book import BookError, Entry
from matchmaker.hosts import MatchHost, WorkerUnavailable
from matchmaker.http_common import ApiError, Problem, Strict
from matchmaker.placement import Placement
from matchmaker.service import QUEUE_LABEL, Matchmaker
from matchmaker.tickets import MAX_PARTY_SIZE, MAX_PROPERTIES

NAME = r"^[A-Za-z0-9_.:@-]{1,64}$"
TICKET_ID = r"^[0-9a-f]{32}$"
CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud and typed by people
CODE_LENGTH = 8  # 40 bits
MAX_WAIT_S = 60.0
CUSTOM_LABEL = "custom"
PRIVATE_LABEL = "private"
HOST_LABEL = "host"


class GuestToken(BaseModel):
    player_id: str
    token: str
    expires_at: float


class NewTicket(Strict):
    queue: str = Field(pattern=NAME, examples=["arena"])
    party: list[str] | None = Field(default=None, min_length=1, max_length=MAX_PARTY_SIZE,
                                    description="Every player of the party (the caller included). Default: the caller "
                                                "alone. A party is never split.")
    numbers: dict[str, float] = Field(default_factory=dict, max_length=MAX_PROPERTIES,
                                      description="e.g. {\"skill\": 1500}")
    strings: dict[str, str] = Field(default_factory=dict, max_length=MAX_PROPERTIES)
    string_sets: dict[str, list[str]] = Field(default_factory=dict, max_length=MAX_PROPERTIES,
                                              description="e.g. {\"regions\": [\"eu\", \"us-east\"]}: regions "
                                                          "the players accept")
    latencies: dict[str, float] = Field(default_factory=dict, max_length=MAX_PROPERTIES,
                                        description="milliseconds to each region, e.g. {\"eu\": 23}")


class TicketAssignment(BaseModel):
    match_id: str
    ws_url: str
    token: str = Field(description="the caller's join token for the match")
    region: str | None
    teams: list[list[str]]
    backfill: bool = Field(description="placed into a running match that lost players")


class TicketView(BaseModel):
    ticket_id: str
    queue: str
    players: list[str]
    status: Literal["queued", "matched", "cancelled", "expired"]
    reason: str | None = Field(description="why it expired or was cancelled, or why it went back to the queue")
    created_at: float
    wait_s: float
    version: int = Field(description="bumped on every change; pass it to a long-poll to wait for the next one")
    requeued: int = Field(description="times it went back to the queue because someone else never joined")
    assignment: TicketAssignment | None


class QueueInfo(BaseModel):
    queue: str
    game: str
    queued_tickets: int
    queued_players: int
    oldest_wait_s: float | None
    open_backfills: int
    last_pass_s: float | None
    players: dict[str, int]


class NewCustomMatch(Strict):
    game: str = Field(min_length=1, max_length=64, examples=["connect_four"])
    params: dict[str, Any] = Field(default_factory=dict)
    private: bool = Field(default=False, description="private: not listed, joined by code only")


class JoinByCode(Strict):
    code: str = Field(min_length=CODE_LENGTH, max_length=CODE_LENGTH, pattern=f"^[{CODE_ALPHABET}]+$")


class CustomMatch(BaseModel):
    match_id: str
    code: str
    game: str
    ws_url: str
    token: str = Field(description="the caller's join token")
    expires_at: float


class MatchListing(BaseModel):
    match_id: str
    game: str
    status: str
    players: int
    max_players: int
    joinable: bool = Field(description="open to anyone with a token: not matchmade, not full, not over")
    labels: dict[str, str]
    created_at: float
    ws_url: str


def matchmaking_routes(matchmaker: Matchmaker, auth: PlayerAuth, placement: Placement, host: MatchHost,
                       clock: Callable[[], float], is_admin: Callable[[Request], bool]) -> APIRouter:
    router = APIRouter()
    problems: dict[int | str, dict[str, Any]] = {
        code: {"model": Problem, "content": {"application/problem+json": {}}} for code in (401, 403, 404, 409, 429)}

    bearer = HTTPBearer(auto_error=False, scheme_name="player",
                        description="A player token: an HS256 JWT with sub (the player id), exp and "
                                    "aud \"arbiter:player\" (see docs/matchmaking.md)")

    async def player(request: Request, _declared: Any = Depends(bearer)) -> str:
        # async although it never awaits: FastAPI runs a plain `def` dependency in a worker thread,
        # a thread round trip on every player request for a check that takes about 0.1 ms of CPU
        try:
            return auth.verify(request.headers.get("authorization"), clock())
        except AuthError as error:
            raise ApiError(401, "unauthorized", str(error)) from None

    def view(entry: Entry, caller: str) -> dict[str, Any]:
        return ticket_view(entry, caller, clock())

    def own(ticket_id: str, caller: str) -> Entry:
        return own_ticket(matchmaker, ticket_id, caller)

    @router.post("/v1/auth/guest", response_model=GuestToken, status_code=201, tags=["auth"],
                 responses={403: problems[403]})
    async def guest() -> GuestToken:
        """Development mode only: a token for a new guest player."""
        if not auth.guests:
            raise ApiError(403, "guests_disabled", "guest tokens are off: sign player tokens with the auth secret")
        player_id, token, expires_at = auth.guest(clock())
        return GuestToken(player_id=player_id, token=token, expires_at=expires_at)

    @router.get("/v1/queues", response_model=list[QueueInfo], tags=["matchmaking"])
    async def queues() -> list[QueueInfo]:
        return [QueueInfo(**stats) for stats in matchmaker.queue_stats()]

    @router.post("/v1/tickets", response_model=TicketView, status_code=201, tags=["matchmaking"],
                 responses={k: problems[k] for k in (401, 403, 404, 409, 429)})
    async def create_ticket(body: NewTicket, caller: str = Depends(player)) -> dict[str, Any]:
        entry = create_ticket_for(matchmaker, caller, body.queue, body.party, body.numbers, body.strings,
                                  body.string_sets, body.latencies)
        return view(entry, caller)

    @router.get("/v1/tickets/{ticket_id}", response_model=TicketView, tags=["matchmaking"],
                responses={k: problems[k] for k in (401, 404)})
    async def get_ticket(ticket_id: str = Path(pattern=TICKET_ID),
                         wait_s: float = Query(0.0, ge=0.0, le=MAX_WAIT_S,
                                               description="Long-poll: answer when the ticket changes, or after "
                                                           "this many seconds"),
                         version: int | None = Query(None, ge=0, description="with wait_s: wait for a version "
                                                                             "other than this one (default: wait "
                                                                             "until it is no longer queued)"),
                         caller: str = Depends(player)) -> dict[str, Any]:
        own(ticket_id, caller)
        if wait_s > 0:
            try:
                entry = await matchmaker.wait(ticket_id, version, wait_s)
            except BookError as error:  # forgotten while waiting
                raise ApiError(error.status, error.code, str(error)) from None
        else:
            entry = own(ticket_id, caller)
        return view(entry, caller)

    @router.delete("/v1/tickets/{ticket_id}", response_model=TicketView, tags=["matchmaking"],
                   responses={k: problems[k] for k in (401, 403, 404, 409)})
    async def cancel_ticket(ticket_id: str = Path(pattern=TICKET_ID), caller: str = Depends(player)) -> dict[str, Any]:
        return view(cancel_ticket_of(matchmaker, ticket_id, caller), caller)

    @router.post("/v1/custom", response_model=CustomMatch, status_code=201, tags=["custom matches"],
                 responses={k: problems[k] for k in (401, 404, 409)})
    async def create_custom(body: NewCustomMatch, caller: str = Depends(player)) -> CustomMatch:
        """Create an open match (no matchmaking) and get a code that others join it by."""
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        labels = {CUSTOM_LABEL: "true", PRIVATE_LABEL: "true" if body.private else "false", HOST_LABEL: caller}
        placed = await placement.create(body.game, body.params, roster=None, lobby_s=None, labels=labels,
                                        name=_code_name(code))
        token, expires_at = placement.token(placed.match_id, caller)
        return CustomMatch(match_id=placed.match_id, code=code, game=body.game, ws_url=placed.ws_url, token=token,
                           expires_at=expires_at)

    @router.post("/v1/custom/join", response_model=CustomMatch, tags=["custom matches"],
                 responses={k: problems[k] for k in (401, 404, 409)})
    async def join_custom(body: JoinByCode, caller: str = Depends(player)) -> CustomMatch:
        """A join token for the custom match with this code."""
        match_id = match_id_from_name(_code_name(body.code))
        try:
            described = await host.describe(match_id)
        except WorkerUnavailable:
            raise  # 503: the code may well be right
        except NodeError:
            raise ApiError(404, "unknown_code", "no match has this code") from None
        if described["status"] not in ("lobby", "running"):
            raise ApiError(409, "match_over", f"the match is {described['status']}")
        token, expires_at = placement.token(match_id, caller)
        return CustomMatch(match_id=match_id, code=body.code, game=described["game"],
                           ws_url=placement.ws_url(match_id), token=token, expires_at=expires_at)

    @router.get("/v1/matches", response_model=list[MatchListing], tags=["matches"])
    async def list_matches(request: Request,
                           game: str | None = Query(None, max_length=64),
                           queue: str | None = Query(None, max_length=64),
                           joinable: bool | None = Query(None),
                           label: list[str] = Query([], max_length=16, description="key:value, repeatable; all "
                                                                                   "must match"),
                           limit: int = Query(100, ge=1, le=1000)) -> list[MatchListing]:
        """Unfinished matches, newest first. Private custom matches only show to the admin."""
        wanted = []
        for item in label:
            key, sep, value = item.partition(":")
            if not sep or not key:
                raise ApiError(422, "invalid_request", f"label filters are key:value, got {item!r}")
            wanted.append((key, value))
        admin = is_admin(request)
        found = []
        for summary in sorted(await host.listing(), key=lambda s: (-s.created_at, s.match_id)):
            labels = summary.labels
            if labels.get(PRIVATE_LABEL) == "true" and not admin:
                continue
            open_ = (summary.status in ("lobby", "running") and summary.players < summary.max_players
                     and QUEUE_LABEL not in labels)
            if ((game is not None and summary.game != game) or (queue is not None and labels.get(QUEUE_LABEL) != queue)
                    or (joinable is not None and open_ != joinable)
                    or any(labels.get(key) != value for key, value in wanted)):
                continue
            found.append(MatchListing(match_id=summary.match_id, game=summary.game, status=summary.status,
                                      players=summary.players, max_players=summary.max_players, joinable=open_,
                                      labels=labels, created_at=summary.created_at,
                                      ws_url=placement.ws_url(summary.match_id)))
            if len(found) >= limit:
                break
        return found

    return router


# -- what the routes and the fast path (matchmaker/ticket_fast_path.py) share ------------------------


def ticket_view(entry: Entry, caller: str, now: float) -> dict[str, Any]:
    """A ticket as `caller`, one of its players, sees it: TicketView's fields, in its order."""
    ticket, a = entry.ticket, entry.assignment
    assignment = None if a is None else {
        "match_id": a.match_id, "ws_url": a.ws_url, "token": a.tokens[caller], "region": a.region,
        "teams": [list(team) for team in a.teams], "backfill": a.backfill}
    return {"ticket_id": ticket.ticket_id, "queue": ticket.queue, "players": list(ticket.players),
            "status": entry.status, "reason": entry.reason, "created_at": ticket.created_at,
            "wait_s": ticket.wait_s(now), "version": entry.version, "requeued": entry.requeued,
            "assignment": assignment}


def create_ticket_for(matchmaker: Matchmaker, caller: str, queue: str, party: list[str] | None,
                      numbers: dict[str, float], strings: dict[str, str], string_sets: dict[str, list[str]],
                      latencies: dict[str, float]) -> Entry:
    """Queue a validated new ticket; ApiError if the book or the ticket's rules refuse it."""
    try:
        return matchmaker.create_ticket(caller, queue, party, numbers=numbers, strings=strings,
                                        string_sets=string_sets, latencies=latencies)
    except BookError as error:
        raise ApiError(error.status, error.code, str(error)) from None
    except (ValueError, TypeError) as error:
        raise ApiError(422, "invalid_ticket", str(error)) from None


def own_ticket(matchmaker: Matchmaker, ticket_id: str, caller: str) -> Entry:
    """The ticket, if `caller` is one of its players; else ApiError 404 (ids are not probed)."""
    try:
        entry = matchmaker.ticket(ticket_id)
    except BookError as error:
        raise ApiError(error.status, error.code, str(error)) from None
    if caller not in entry.ticket.players:  # the same answer as an unknown ticket
        raise ApiError(404, "ticket_not_found", f"no ticket {ticket_id}")
    return entry


def cancel_ticket_of(matchmaker: Matchmaker, ticket_id: str, caller: str) -> Entry:
    own_ticket(matchmaker, ticket_id, caller)
    try:
        return matchmaker.cancel_ticket(ticket_id, caller)
    except BookError as error:
        raise ApiError(error.status, error.code, str(error)) from None


def _code_name(code: str) -> str:
    return f"custom-code:{code}"
