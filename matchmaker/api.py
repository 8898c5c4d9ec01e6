"""The HTTP API: create a match, read its status, get a join token, health and metrics; with the
matchmaking routes (matchmaker/ticket_api.py), the replay WebSocket (matchmaker/replay_api.py), the
OpenAPI document and the browser pages (matchmaker/pages.py).

Routing is matchmaker/http_app.py, bodies are matchmaker/bodies.py, and every answer is the JSON
that matchmaker/openapi.json describes. Every error is `application/problem+json` (RFC 9457) with a
stable `code`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import attrs
from prometheus_client import CONTENT_TYPE_LATEST

from gameserver import tokens
from gameserver.node import (InvalidParams, MatchFailed, MatchNotFound, MatchStorageUnavailable, MatchUnavailable,
                             NameTaken, Node, NodeClosing, NodeError, StorageFailed, UnknownGame, WrongWorker)
from gameserver.replay_server import ReplayStreams
from matchmaker.auth import PlayerAuth
from matchmaker.bodies import CreateMatch, TokenRequest, parse
from matchmaker.hosts import LocalHost, MatchHost, WorkerUnavailable
from matchmaker.http_app import ApiError, App, Request, Response, Route, json_response, problem
from matchmaker.body_limit import MAX_BODY_BYTES, BodyLimit
from matchmaker.pages import document_routes, serve_page
from matchmaker.replay_api import replay_route
from matchmaker.service import Matchmaker
from matchmaker.ticket_api import matchmaking_routes

_STATUS_OF: dict[type[NodeError], int] = {
    UnknownGame: 422, InvalidParams: 422, NameTaken: 409, MatchNotFound: 404, MatchUnavailable: 409,
    NodeClosing: 503, WrongWorker: 404, WorkerUnavailable: 503, StorageFailed: 503, MatchStorageUnavailable: 503,
    MatchFailed: 409,
}
_OVER = ("ended", "cancelled", "crashed", "failed")


def node_error(error: Exception) -> Response | None:
    """A NodeError (or a worker that is down) as its problem+json; None for anything else."""
    if isinstance(error, NodeError):
        return problem(_STATUS_OF.get(type(error), 400), error.code, str(error))
    return None


def create_app(node: Node | MatchHost, *, secret: bytes, ws_base: Callable[[], str] | None = None,
               connections: Callable[[], int] | None = None, admin_token: str | None = None,
               wall_clock: Callable[[], float] | None = None, matchmaker: Matchmaker | None = None,
               auth: PlayerAuth | None = None) -> BodyLimit:
    """The ASGI app for one node (`ws_base()` is the WebSocket base URL clients are given,
    `connections()` counts them) or for the workers of a MatchHost. Without `admin_token` the
    admin endpoints are open (development)."""
    if isinstance(node, Node):
        assert ws_base is not None and connections is not None, "a node's app needs ws_base and connections"
        host: MatchHost = LocalHost(node, ws_base, connections)
    else:
        host = node
    clock = wall_clock or host.wall_clock
    ws_url = host.ws_url

    def is_admin(request: Request) -> bool:
        if admin_token is None:
            return True
        scheme, _, given = (request.header(b"authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), admin_token.encode())

    def admin(request: Request) -> None:
        if not is_admin(request):
            raise ApiError(401, "unauthorized", "this endpoint needs the admin bearer token")

    async def health(_request: Request) -> Response:
        return json_response({"status": "ok", **await host.health()})

    async def metrics(_request: Request) -> Response:
        return Response(200, await host.metrics(), CONTENT_TYPE_LATEST)

    async def games(_request: Request) -> Response:
        return json_response([{"name": g.name, "version": g.version, "tick_rate": g.tick_rate,
                               "min_players": g.min_players, "max_players": g.max_players}
                              for g in host.games.values()])

    async def create_match(request: Request) -> Response:
        admin(request)
        body = parse(request, CreateMatch)
        created = await host.create_match(body.game, body.params, body.name)
        return json_response({"match_id": created.match_id, "game": created.game, "status": created.status,
                              "ws_url": ws_url(created.match_id)}, 201)

    async def match_status(request: Request) -> Response:
        match_id = request.path_params["match_id"]
        return json_response({**await host.describe(match_id), "ws_url": ws_url(match_id)})  # actor.describe_match

    async def join_token(request: Request) -> Response:
        """A token to join the match as a player or a spectator, or (a spectator's) to watch its replay."""
        admin(request)
        match_id = request.path_params["match_id"]
        body = parse(request, TokenRequest)
        described = await host.describe(match_id)  # 404 for an unknown match
        if described["status"] in _OVER and body.role == "player":
            raise ApiError(409, "match_over", f"match {match_id} is {described['status']}: a spectator token "
                                              "can still watch its replay")
        ttl = body.ttl_s if body.ttl_s is not None else host.token_ttl_s
        token, expires_at = tokens.issue(secret, match_id, body.player_id, body.role, clock(), ttl)
        return json_response({"token": token, "match_id": match_id, "player_id": body.player_id, "role": body.role,
                              "expires_at": expires_at, "ws_url": ws_url(match_id)}, 201)

    async def logged_inputs(request: Request) -> Response:
        """The input seqs committed to the match's log, per player, as [first, last] ranges: what a
        soak test checks its acknowledged inputs against."""
        admin(request)
        match_id = request.path_params["match_id"]
        return json_response({"match_id": match_id, "players": await host.logged_inputs(match_id)})

    async def failed_alarms(request: Request) -> Response:
        """Alarms whose handler kept raising until its retries ran out, in every match of this node."""
        admin(request)
        return json_response([{"match_id": match_id, "name": a.name, "due_at": a.due, "retries": a.retries,
                               "failed": a.failed, "last_error": a.last_error}
                              for match_id, a in await host.failed_alarms()])

    async def unusable(request: Request) -> Response:
        admin(request)
        return json_response([{"path": b.path, "reason": b.reason} for b in await host.unusable()])

    async def workers(request: Request) -> Response:
        """The server processes that run matches (one unless arbiter up --workers N), with their load."""
        admin(request)
        return json_response([attrs.asdict(w) for w in await host.worker_info()])

    routes = [Route("GET", "/healthz", health), Route("GET", "/metrics", metrics), Route("GET", "/v1/games", games),
              Route("POST", "/v1/matches", create_match), Route("GET", "/v1/matches/{match_id}", match_status),
              Route("POST", "/v1/matches/{match_id}/tokens", join_token),
              Route("GET", "/v1/matches/{match_id}/inputs", logged_inputs),
              Route("GET", "/v1/alarms/failed", failed_alarms), Route("GET", "/v1/node/unusable", unusable),
              Route("GET", "/v1/node/workers", workers), *document_routes()]
    if matchmaker is not None:
        assert auth is not None, "the matchmaking routes need player auth"
        routes += matchmaking_routes(matchmaker, auth, matchmaker.placement, host, clock, is_admin)
    replay = replay_route(ReplayStreams(host.data_dir, host.games, secret, admin_token=admin_token,
                                        wall_clock=clock, closing=lambda: host.closing))
    app = App(routes, fallback=serve_page, websockets=[replay], errors=node_error)
    return BodyLimit(app, max_bytes=MAX_BODY_BYTES)
