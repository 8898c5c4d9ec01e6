"""The HTTP API: create a match, read its status, get a join token, health and metrics.

FastAPI (Starlette + pydantic) served by matchmaker/http_server.py (trio, h11); the ticket routes
have a fast path in front (matchmaker/ticket_fast_path.py). The framework generates the OpenAPI
document from the pydantic models below, which exist only at this HTTP edge; the core speaks attrs.
Every error is `application/problem+json` (RFC 9457) with a stable `code`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, Literal

import attrs
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from gameserver import tokens
from matchmaker.auth import PlayerAuth
from matchmaker.hosts import LocalHost, MatchHost, WorkerUnavailable
from matchmaker.service import Matchmaker
from matchmaker.ticket_api import matchmaking_routes
from matchmaker.ticket_fast_path import TicketFastPath
from matchmaker.replay_api import replay_routes
from gameserver.replay_server import ReplayStreams
from matchmaker.http_common import MAX_BODY_BYTES, BodyLimit, PLAYER_ID_PATTERN, PROBLEM, ApiError, Problem, Strict, problem
from gameserver.node import (InvalidParams, MatchFailed, MatchNotFound, MatchStorageUnavailable, MatchUnavailable,
                             NameTaken, Node, NodeClosing, NodeError, StorageFailed, UnknownGame, WrongWorker)

_STATUS_OF: dict[type[NodeError], int] = {
    UnknownGame: 422, InvalidParams: 422, NameTaken: 409, MatchNotFound: 404, MatchUnavailable: 409,
    NodeClosing: 503, WrongWorker: 404, WorkerUnavailable: 503, StorageFailed: 503, MatchStorageUnavailable: 503,
    MatchFailed: 409,
}


class CreateMatch(Strict):
    game: str = Field(min_length=1, max_length=64, examples=["arena"])
    params: dict[str, Any] = Field(default_factory=dict, description="The game's parameters (see GET /v1/games)")
    name: str | None = Field(default=None, min_length=1, max_length=256,
                             description="Derive the match id from this name: the same name always gives "
                                         "the same match (creation is idempotent)")


class MatchCreated(BaseModel):
    match_id: str
    game: str
    status: str
    ws_url: str


class PlayerStatus(BaseModel):
    player_id: str
    connected: bool
    seated: bool
    attachment: Any = Field(default=None, description="what the player's connection attached at auth (JSON, "
                                                      "at most 16 KiB), while connected")


class AlarmStatus(BaseModel):
    name: str = Field(description="'alarm' (the game's primary alarm), a game timer's name, or arbiter:* "
                                  "(the runtime's: lobby, end, empty, grace:PLAYER, retention)")
    due_at: float = Field(description="seconds since the epoch")
    retries: int = Field(description="failed attempts so far")
    failed: bool = Field(description="retries exhausted: recorded, no longer scheduled")
    last_error: str | None


class MatchStatus(BaseModel):
    match_id: str
    game: str
    game_version: str
    params: Any = None
    status: Literal["lobby", "running", "ended", "cancelled", "crashed", "failed"]
    status_reason: str | None
    tick: int
    tick_rate: int
    players: list[PlayerStatus]
    connections: int
    live: bool = Field(description="in memory (false: hibernated, or not loaded since the node started)")
    paused: bool = Field(description="a real-time match whose ticks stopped because nobody was connected")
    created_at: float
    started_at: float | None
    ended_at: float | None
    result: Any = None
    alarms: list[AlarmStatus]
    failed_alarms: int
    ws_url: str


class LoggedInputs(BaseModel):
    match_id: str
    players: dict[str, list[list[int]]] = Field(description="player id -> sorted [first, last] ranges of "
                                                            "consecutive logged seqs")


class FailedAlarm(AlarmStatus):
    match_id: str


class TokenRequest(Strict):
    player_id: str = Field(pattern=PLAYER_ID_PATTERN, examples=["alice"])
    role: Literal["player", "spectator"] = "player"
    ttl_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600, description="Lifetime; default from the server")


class JoinToken(BaseModel):
    token: str
    match_id: str
    player_id: str
    role: str
    expires_at: float
    ws_url: str


class GameInfo(BaseModel):
    name: str
    version: str
    tick_rate: int
    min_players: int
    max_players: int


class Health(BaseModel):
    status: Literal["ok"]
    live_matches: int
    hibernated_matches: int
    unfinished_matches: int
    unusable_files: int
    connections: int
    workers: int = Field(description="server processes that run matches (arbiter up --workers)")
    workers_up: int = Field(description="of them, those running now (the others' matches are unreachable "
                                        "until they are restarted)")


class Worker(BaseModel):
    worker: int
    pid: int | None = Field(description="its process id; null while it is not running")
    state: Literal["up", "starting", "down"] = Field(description="starting: being (re)started after it exited")
    ws_url: str = Field(description="the WebSocket base URL of its matches")
    restarts: int = Field(description="times it was started again after it exited")
    live_matches: int | None
    unfinished_matches: int | None
    connections: int | None


class UnusableFile(BaseModel):
    path: str
    reason: str


class Pages(Mount):
    """The browser pages (clients/web/) at "/", mounted after every API route. A request whose path an
    API route knows (with another method) is that route's: 405 with Allow, not a missing file. Mounts
    are not in the OpenAPI document."""

    def __init__(self, api_routes: list[BaseRoute]):
        super().__init__("/", app=StaticFiles(packages=[("clients", "web")], html=True), name="pages")
        self.api_routes = api_routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or any(route.matches(scope)[0] is not Match.NONE for route in self.api_routes):
            return Match.NONE, {}
        return super().matches(scope)


def create_app(node: Node | MatchHost, *, secret: bytes, ws_base: Callable[[], str] | None = None,
               connections: Callable[[], int] | None = None, admin_token: str | None = None,
               wall_clock: Callable[[], float] | None = None, matchmaker: Matchmaker | None = None,
               auth: PlayerAuth | None = None) -> FastAPI:
    """The ASGI app for one node (`ws_base()` is the WebSocket base URL clients are given,
    `connections()` counts them) or for the workers of a MatchHost. Without `admin_token` the
    admin endpoints are open (development)."""
    if isinstance(node, Node):
        assert ws_base is not None and connections is not None, "a node's app needs ws_base and connections"
        host: MatchHost = LocalHost(node, ws_base, connections)
    else:
        host = node
    clock = wall_clock or host.wall_clock
    errors = {"default": {"model": Problem, "content": {PROBLEM: {}}}}
    app = FastAPI(title="Arbiter", version="0.1.0",
                  description="Match server HTTP API. Errors are application/problem+json (RFC 9457).",
                  responses={400: {"model": Problem, "description": "Bad request", "content": {PROBLEM: {}}},
                             413: {"model": Problem, "description": "Request body too large", "content": {PROBLEM: {}}},
                             422: {"model": Problem, "description": "Invalid input", "content": {PROBLEM: {}}}})
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI puts a `model` under the route's media type (application/json, or text/plain for /metrics):
        an error's schema is that of its only media type, application/problem+json."""
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate_openapi()  # and FastAPI keeps it as app.openapi_schema: fixed once
        for operation in (op for path in document["paths"].values() for op in path.values()):
            for response in operation["responses"].values():
                if PROBLEM in response.get("content", {}):
                    response["content"] = {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
        return document

    app.openapi = openapi  # type: ignore[method-assign]

    ws_url = host.ws_url

    def is_admin(request: Request) -> bool:
        if admin_token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), admin_token.encode())

    async def admin(request: Request) -> None:
        if not is_admin(request):
            raise ApiError(401, "unauthorized", "this endpoint needs the admin bearer token")

    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    @app.exception_handler(ApiError)
    async def on_api_error(_request: Request, error: ApiError) -> JSONResponse:
        return problem(error.status, error.code, error.detail)

    @app.exception_handler(NodeError)
    async def on_node_error(_request: Request, error: NodeError) -> JSONResponse:
        return problem(_STATUS_OF.get(type(error), 400), error.code, str(error))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        parts = []
        for item in error.errors()[:5]:
            where = ".".join(str(p) for p in item.get("loc", ()))
            parts.append(f"{where}: {item.get('msg', 'invalid')}")
        return problem(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return problem(error.status_code, code, str(error.detail), headers=error.headers)  # 405: Allow

    @app.get("/healthz", response_model=Health, tags=["node"])
    async def health() -> Health:
        return Health(status="ok", **await host.health())

    @app.get("/metrics", response_class=PlainTextResponse, tags=["node"],
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(await host.metrics(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/games", response_model=list[GameInfo], tags=["matches"])
    async def games() -> list[GameInfo]:
        return [GameInfo(name=g.name, version=g.version, tick_rate=g.tick_rate, min_players=g.min_players,
                         max_players=g.max_players) for g in host.games.values()]

    @app.post("/v1/matches", response_model=MatchCreated, status_code=201, tags=["matches"],
              dependencies=[Depends(admin)],
              responses={401: errors["default"], 404: errors["default"], 409: errors["default"]})
    async def create_match(body: CreateMatch) -> MatchCreated:
        created = await host.create_match(body.game, body.params, body.name)
        return MatchCreated(match_id=created.match_id, game=created.game, status=created.status,
                            ws_url=ws_url(created.match_id))

    @app.get("/v1/matches/{match_id}", response_model=MatchStatus, tags=["matches"],
             responses={404: errors["default"], 409: errors["default"]})
    async def match_status(match_id: str) -> MatchStatus:
        return MatchStatus(**await host.describe(match_id), ws_url=ws_url(match_id))

    @app.post("/v1/matches/{match_id}/tokens", response_model=JoinToken, status_code=201, tags=["matches"],
              dependencies=[Depends(admin)],
              responses={401: errors["default"], 404: errors["default"], 409: errors["default"]})
    async def join_token(match_id: str, body: TokenRequest) -> JoinToken:
        """A token to join the match as a player or a spectator, or (a spectator's) to watch its replay."""
        described = await host.describe(match_id)  # 404 for an unknown match
        if described["status"] in ("ended", "cancelled", "crashed", "failed") and body.role == "player":
            raise ApiError(409, "match_over", f"match {match_id} is {described['status']}: a spectator token "
                                              "can still watch its replay")
        now = clock()
        ttl = body.ttl_s if body.ttl_s is not None else host.token_ttl_s
        grant = tokens.Grant(match_id, body.player_id, body.role, now + ttl)
        return JoinToken(token=tokens.sign(secret, grant, now), match_id=match_id, player_id=body.player_id,
                         role=body.role, expires_at=grant.expires_at, ws_url=ws_url(match_id))

    @app.get("/v1/matches/{match_id}/inputs", response_model=LoggedInputs, tags=["matches"],
             dependencies=[Depends(admin)], responses={401: errors["default"], 404: errors["default"],
                                                       409: errors["default"]})
    async def logged_inputs(match_id: str) -> LoggedInputs:
        """The input seqs committed to the match's log, per player, as [first, last] ranges: what a
        soak test checks its acknowledged inputs against."""
        return LoggedInputs(match_id=match_id, players=await host.logged_inputs(match_id))

    @app.get("/v1/alarms/failed", response_model=list[FailedAlarm], tags=["node"], dependencies=[Depends(admin)],
             responses={401: errors["default"]})
    async def failed_alarms() -> list[FailedAlarm]:
        """Alarms whose handler kept raising until its retries ran out, in every match of this node."""
        return [FailedAlarm(match_id=match_id, name=a.name, due_at=a.due, retries=a.retries, failed=a.failed,
                            last_error=a.last_error) for match_id, a in await host.failed_alarms()]

    @app.get("/v1/node/unusable", response_model=list[UnusableFile], tags=["node"], dependencies=[Depends(admin)],
             responses={401: errors["default"]})
    async def unusable() -> list[UnusableFile]:
        return [UnusableFile(path=b.path, reason=b.reason) for b in await host.unusable()]

    @app.get("/v1/node/workers", response_model=list[Worker], tags=["node"], dependencies=[Depends(admin)],
             responses={401: errors["default"]})
    async def workers() -> list[Worker]:
        """The server processes that run matches (one unless arbiter up --workers N), with their load."""
        return [Worker(**attrs.asdict(w)) for w in await host.worker_info()]

    app.include_router(replay_routes(ReplayStreams(host.data_dir, host.games, secret, admin_token=admin_token,
                                                   wall_clock=clock, closing=lambda: host.closing)))
    if matchmaker is not None:
        assert auth is not None, "the matchmaking routes need player auth"
        app.include_router(matchmaking_routes(matchmaker, auth, matchmaker.placement, host, clock, is_admin))
        app.add_middleware(TicketFastPath, matchmaker=matchmaker, auth=auth, clock=clock)  # outside BodyLimit
    app.router.routes.append(Pages(list(app.router.routes)))  # last: API routes win
    return app
