"""The matchmaking routes: guest tokens, queues, tickets (with long-poll), custom matches by code, listing.

Players authenticate with a bearer token (matchmaker/auth.py). Bodies are matchmaker/bodies.py's
attrs classes; the answers are the JSON that matchmaker/openapi.json describes.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from gameserver.ids import match_id_from_name
from gameserver.node import MatchNotFound
from matchmaker import query
from matchmaker.auth import AuthError, PlayerAuth
from matchmaker.bodies import (CODE_ALPHABET, CODE_LENGTH, TICKET_ID, JoinByCode, NewCustomMatch, NewTicket,
                               parse)
from matchmaker.book import STATUSES, BookError, Entry
from matchmaker.hosts import MatchHost
from matchmaker.http_app import ApiError, Request, Response, Route, json_response
from matchmaker.placement import Placement
from matchmaker.service import QUEUE_LABEL, Matchmaker
from matchmaker.tickets import MAX_PROPERTIES

MAX_WAIT_S = 60.0
CUSTOM_LABEL = "custom"
PRIVATE_LABEL = "private"
HOST_LABEL = "host"
MAX_LABEL_FILTERS = 16
MAX_TICKETS_LISTED = 100
DEFAULT_TICKETS_LISTED = 20


def matchmaking_routes(matchmaker: Matchmaker, auth: PlayerAuth, placement: Placement, host: MatchHost,
                       clock: Callable[[], float], is_admin: Callable[[Request], bool]) -> list[Route]:

    def player(request: Request) -> str:
        try:
            return auth.verify(request.header(b"authorization"), clock())
        except AuthError as error:
            raise ApiError(401, "unauthorized", str(error)) from None

    def ticket_id_of(request: Request) -> str:
        ticket_id = request.path_params["ticket_id"]
        if not TICKET_ID.fullmatch(ticket_id):
            raise ApiError(422, "invalid_request", "path.ticket_id: a ticket id is 32 characters of 0-9 and a-f")
        return ticket_id

    def view(entry: Entry, caller: str, status: int = 200) -> Response:
        return json_response(ticket_view(entry, caller, clock()), status)

    async def guest(_request: Request) -> Response:
        """Development mode only: a token for a new guest player."""
        if not auth.guests:
            raise ApiError(403, "guests_disabled", "guest tokens are off: sign player tokens with the auth secret")
        player_id, token, expires_at = auth.guest(clock())
        return json_response({"player_id": player_id, "token": token, "expires_at": expires_at}, 201)

    async def queues(_request: Request) -> Response:
        return json_response(matchmaker.queue_stats())

    async def create_ticket(request: Request) -> Response:
        caller = player(request)
        body = parse(request, NewTicket)
        entry = create_ticket_for(matchmaker, caller, body.queue, body.party, body.numbers, body.strings,
                                  body.string_sets, body.latencies)
        return view(entry, caller, 201)

    async def get_ticket(request: Request) -> Response:
        caller = player(request)
        ticket_id = ticket_id_of(request)
        params = request.query()
        wait_s = query.number(params, "wait_s", 0.0, low=0.0, high=MAX_WAIT_S)
        version = query.integer(params, "version", None, low=0)
        own_ticket(matchmaker, ticket_id, caller)
        if wait_s > 0:
            try:
                entry = await matchmaker.wait(ticket_id, version, wait_s)
            except BookError as error:  # forgotten while waiting
                raise ApiError(error.status, error.code, str(error)) from None
        else:
            entry = own_ticket(matchmaker, ticket_id, caller)
        return view(entry, caller)

    async def cancel_ticket(request: Request) -> Response:
        """Cancel a queued or pending ticket (for a member who has not accepted it: decline it)."""
        caller = player(request)
        return view(cancel_ticket_of(matchmaker, ticket_id_of(request), caller), caller)

    async def accept_ticket(request: Request) -> Response:
        """Accept a party ticket that names the caller; the last acceptance queues it."""
        caller = player(request)
        ticket_id = ticket_id_of(request)
        own_ticket(matchmaker, ticket_id, caller)
        try:
            entry = matchmaker.accept_ticket(ticket_id, caller)
        except BookError as error:
            raise ApiError(error.status, error.code, str(error)) from None
        return view(entry, caller)

    async def list_tickets(request: Request) -> Response:
        """The caller's tickets that the matchmaker keeps (invitations among them), newest first."""
        caller = player(request)
        params = request.query()
        status = query.text(params, "status", max_length=16)
        if status is not None and status not in STATUSES:
            raise ApiError(422, "invalid_request", f"query.status: one of {', '.join(STATUSES)}, got {status!r}")
        limit = query.integer(params, "limit", DEFAULT_TICKETS_LISTED, low=1, high=MAX_TICKETS_LISTED)
        now = clock()
        return json_response([ticket_view(entry, caller, now)
                              for entry in matchmaker.tickets_of(caller, limit, status)])  # type: ignore[arg-type]

    async def create_custom(request: Request) -> Response:
        """Create an open match (no matchmaking) and get a code that others join it by."""
        caller = player(request)
        body = parse(request, NewCustomMatch)
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        labels = {CUSTOM_LABEL: "true", PRIVATE_LABEL: "true" if body.private else "false", HOST_LABEL: caller}
        placed = await placement.create(body.game, body.params, roster=None, lobby_s=None, labels=labels,
                                        name=_code_name(code))
        token, expires_at = placement.token(placed.match_id, caller)
        return json_response({"match_id": placed.match_id, "code": code, "game": body.game, "ws_url": placed.ws_url,
                              "token": token, "expires_at": expires_at}, 201)

    async def join_custom(request: Request) -> Response:
        """A join token for the custom match with this code."""
        caller = player(request)
        body = parse(request, JoinByCode)
        match_id = match_id_from_name(_code_name(body.code))
        try:
            described = await host.describe(match_id)
        except MatchNotFound:  # any other NodeError is an answer of its own (503 node_closing, 409 ...)
            raise ApiError(404, "unknown_code", "no match has this code") from None
        if described["status"] not in ("lobby", "running"):
            raise ApiError(409, "match_over", f"the match is {described['status']}")
        token, expires_at = placement.token(match_id, caller)
        return json_response({"match_id": match_id, "code": body.code, "game": described["game"],
                              "ws_url": placement.ws_url(match_id), "token": token, "expires_at": expires_at})

    async def list_matches(request: Request) -> Response:
        """Unfinished matches, newest first. Private custom matches only show to the admin."""
        params = request.query()
        game = query.text(params, "game", max_length=64)
        queue = query.text(params, "queue", max_length=64)
        joinable = query.boolean(params, "joinable")
        limit = query.integer(params, "limit", 100, low=1, high=1000)
        wanted = []
        for item in query.texts(params, "label", max_items=MAX_LABEL_FILTERS):
            key, sep, value = item.partition(":")
            if not sep or not key:
                raise ApiError(422, "invalid_request", f"label filters are key:value, got {item!r}")
            wanted.append((key, value))
        admin = is_admin(request)
        found: list[dict[str, Any]] = []
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
            found.append({"match_id": summary.match_id, "game": summary.game, "status": summary.status,
                          "players": summary.players, "max_players": summary.max_players, "joinable": open_,
                          "labels": labels, "created_at": summary.created_at,
                          "ws_url": placement.ws_url(summary.match_id)})
            if len(found) >= limit:  # type: ignore[operator]
                break
        return json_response(found)

    return [Route("POST", "/v1/auth/guest", guest), Route("GET", "/v1/queues", queues),
            Route("POST", "/v1/tickets", create_ticket), Route("GET", "/v1/tickets", list_tickets),
            Route("GET", "/v1/tickets/{ticket_id}", get_ticket), Route("DELETE", "/v1/tickets/{ticket_id}", cancel_ticket),
            Route("POST", "/v1/tickets/{ticket_id}/accept", accept_ticket), Route("POST", "/v1/custom", create_custom),
            Route("POST", "/v1/custom/join", join_custom), Route("GET", "/v1/matches", list_matches)]


# -- what the routes share -----------------------------------------------------------------------------


def ticket_view(entry: Entry, caller: str, now: float) -> dict[str, Any]:
    """A ticket as `caller`, one of its players, sees it: TicketView's fields, in its order."""
    ticket, a = entry.ticket, entry.assignment
    assignment = None if a is None else {
        "match_id": a.match_id, "ws_url": a.ws_url, "token": a.tokens[caller], "region": a.region,
        "teams": [list(team) for team in a.teams], "backfill": a.backfill}
    return {"ticket_id": ticket.ticket_id, "queue": ticket.queue, "players": list(ticket.players),
            "owner": entry.owner, "accepted": list(entry.accepted), "accept_by": entry.accept_by,
            "status": entry.status, "reason": entry.reason, "created_at": ticket.created_at,
            "wait_s": entry.wait_s(now), "version": entry.version, "requeued": entry.requeued,
            "assignment": assignment}


def create_ticket_for(matchmaker: Matchmaker, caller: str, queue: str, party: list[str] | None,
                      numbers: dict[str, float], strings: dict[str, str], string_sets: dict[str, list[str]],
                      latencies: dict[str, float]) -> Entry:
    """Queue a validated new ticket; ApiError if the book or the ticket's rules refuse it."""
    for name, members in string_sets.items():  # as sent: the ticket counts them once duplicates are gone
        if len(members) > MAX_PROPERTIES:
            raise ApiError(422, "invalid_ticket", f"string set {name!r} has at most {MAX_PROPERTIES} members")
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
