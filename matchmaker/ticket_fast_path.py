"""The busiest player routes without FastAPI's routing and dependency injection: raw ASGI in front of it.

`POST /v1/tickets`, `GET /v1/tickets/{ticket_id}` (without a query: long-polls go the long way)
and `DELETE /v1/tickets/{ticket_id}`. FastAPI's route matching, dependency solving and pydantic
round trips cost about 0.1 ms of CPU per request, as much as the rest of the request's work.

A request is served here only when it is plainly valid: a bearer token that verifies, a path of the
route's shape, and for POST a JSON body (Content-Type application/json, a Content-Length within the
body limit) that the attrs class below structures. Everything else goes on to FastAPI untouched
(the body it read, replayed), so every error a request can earn, and its problem+json, comes from
the same code as before: the routes in matchmaker/ticket_api.py, which the OpenAPI document also
describes. What the fast path checks is at least as strict as the routes' pydantic models, so a
request it serves is one FastAPI would have served the same way; the answer is built by the same
functions (ticket_api.ticket_view, create_ticket_for, own_ticket, cancel_ticket_of), and only
their refusals (ApiError: unknown queue, already queued, not found...) are answered here.
tests/matchmaker/test_ticket_fast_path.py checks that both ways give the same answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, get_args, get_origin

import attrs
import cattrs

from matchmaker.auth import AuthError, PlayerAuth
from matchmaker.http_common import MAX_BODY_BYTES, ApiError, problem
from matchmaker.service import Matchmaker
from matchmaker.ticket_api import (NAME, TICKET_ID, cancel_ticket_of, create_ticket_for, own_ticket,
                                   ticket_view)
from matchmaker.tickets import MAX_PARTY_SIZE, MAX_PROPERTIES

TICKETS = "/v1/tickets"
TICKET_PREFIX = TICKETS + "/"
_NAME = re.compile(NAME.removeprefix("^").removesuffix("$"))  # fullmatch: "$" would let "a\n" through
_TICKET_ID = re.compile(TICKET_ID.removeprefix("^").removesuffix("$"))


@attrs.frozen
class TicketRequest:
    """The body of POST /v1/tickets (ticket_api.NewTicket's fields and limits), nothing coerced."""

    queue: str = attrs.field(validator=attrs.validators.matches_re(_NAME, func=re.fullmatch))
    party: list[str] | None = attrs.field(default=None, validator=attrs.validators.optional(
        [attrs.validators.min_len(1), attrs.validators.max_len(MAX_PARTY_SIZE)]))
    numbers: dict[str, float] = attrs.field(factory=dict, validator=attrs.validators.max_len(MAX_PROPERTIES))
    strings: dict[str, str] = attrs.field(factory=dict, validator=attrs.validators.max_len(MAX_PROPERTIES))
    string_sets: dict[str, list[str]] = attrs.field(factory=dict,
                                                    validator=attrs.validators.max_len(MAX_PROPERTIES))
    latencies: dict[str, float] = attrs.field(factory=dict, validator=attrs.validators.max_len(MAX_PROPERTIES))


class NotPlain(Exception):
    """A value the fast path does not take: FastAPI answers the request."""


def _string(value: Any, _type: type) -> str:
    if type(value) is not str:
        raise NotPlain(f"expected a string, got {type(value).__name__}")
    return value


def _number(value: Any, _type: type) -> float:
    if type(value) is float:
        return value
    if type(value) is not int:  # bool is not a number here (pydantic strict mode agrees)
        raise NotPlain(f"expected a number, got {type(value).__name__}")
    return float(value)  # as pydantic does; OverflowError for an int beyond floats: FastAPI answers


def _list_hook(type_: Any) -> Callable[[Any, Any], list]:
    item = _converter.get_structure_hook(get_args(type_)[0])
    item_type = get_args(type_)[0]

    def structure(value: Any, _type: Any) -> list:
        if type(value) is not list:  # a string or an object is not a list here
            raise NotPlain(f"expected an array, got {type(value).__name__}")
        return [item(member, item_type) for member in value]

    return structure


def _dict_hook(type_: Any) -> Callable[[Any, Any], dict]:
    value_type = get_args(type_)[1]
    item = _converter.get_structure_hook(value_type)

    def structure(value: Any, _type: Any) -> dict:
        if type(value) is not dict:
            raise NotPlain(f"expected an object, got {type(value).__name__}")
        return {key: item(member, value_type) for key, member in value.items()}  # JSON keys are strings

    return structure


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(str, _string)
_converter.register_structure_hook(float, _number)
_converter.register_structure_hook_factory(lambda t: get_origin(t) is list, _list_hook)
_converter.register_structure_hook_factory(lambda t: get_origin(t) is dict, _dict_hook)
_structure_request = _converter.get_structure_hook(TicketRequest)


def parse_ticket_request(body: bytes) -> TicketRequest | None:
    """The request, if `body` is one the fast path serves; None: let FastAPI answer."""
    try:
        decoded = json.loads(body)  # what FastAPI decodes a JSON body with
        if type(decoded) is not dict:
            return None
        return _structure_request(decoded, TicketRequest)
    except Exception:  # malformed JSON, a wrong type, a field too many, a limit passed: FastAPI's to answer
        return None


class TicketFastPath:
    """ASGI middleware (outside FastAPI's own) for the ticket routes; everything else passes through."""

    def __init__(self, app: Any, *, matchmaker: Matchmaker, auth: PlayerAuth, clock: Callable[[], float]):
        self.app = app
        self.matchmaker = matchmaker
        self.auth = auth
        self.clock = clock

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope.get("query_string"):
            path, method = scope["path"], scope["method"]
            if path == TICKETS and method == "POST":
                await self._create(scope, receive, send)
                return
            if path.startswith(TICKET_PREFIX) and (method == "GET" or method == "DELETE"):
                ticket_id = path[len(TICKET_PREFIX):]
                authorization, _type, length, chunked = _headers(scope["headers"])
                if _TICKET_ID.fullmatch(ticket_id) and not chunked and length in (None, b"0"):  # no body
                    caller = self._verify(authorization)
                    if caller is not None:
                        await self._read_or_cancel(method, ticket_id, caller, scope, receive, send)
                        return
        await self.app(scope, receive, send)

    def _verify(self, authorization: bytes | None) -> str | None:
        if authorization is None:
            return None
        try:
            return self.auth.verify(authorization.decode("latin-1"), self.clock())
        except AuthError:
            return None

    async def _create(self, scope: dict, receive: Any, send: Any) -> None:
        authorization, content_type, length, chunked = _headers(scope["headers"])
        if (content_type != b"application/json" or chunked or length is None or not length.isdigit()
                or not 0 < int(length) <= MAX_BODY_BYTES or authorization is None):
            await self.app(scope, receive, send)  # the body limit (413) and every other answer: FastAPI's
            return
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client is gone
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        request = parse_ticket_request(body)
        caller = None if request is None else self._verify(authorization)
        if request is None or caller is None:
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            entry = create_ticket_for(self.matchmaker, caller, request.queue, request.party, request.numbers,
                                      request.strings, request.string_sets, request.latencies)
        except ApiError as error:
            await problem(error.status, error.code, error.detail)(scope, receive, send)
            return
        await _send_json(send, 201, ticket_view(entry, caller, self.clock()))

    async def _read_or_cancel(self, method: str, ticket_id: str, caller: str, scope: dict, receive: Any,
                              send: Any) -> None:
        try:
            if method == "GET":
                entry = own_ticket(self.matchmaker, ticket_id, caller)
            else:
                entry = cancel_ticket_of(self.matchmaker, ticket_id, caller)
        except ApiError as error:
            await problem(error.status, error.code, error.detail)(scope, receive, send)
            return
        await _send_json(send, 200, ticket_view(entry, caller, self.clock()))


def _headers(headers: list) -> tuple[bytes | None, bytes | None, bytes | None, bool]:
    """Authorization, Content-Type (the first of each, as Starlette's Headers.get), Content-Length, and
    whether the body is chunked."""
    authorization = content_type = length = None
    chunked = False
    for name, value in headers:
        if name == b"authorization":
            if authorization is None:
                authorization = value
        elif name == b"content-type":
            if content_type is None:
                content_type = value
        elif name == b"content-length":
            length = value
        elif name == b"transfer-encoding":
            chunked = True
    return authorization, content_type, length, chunked


def _replay(body: bytes, receive: Any) -> Any:
    """A `receive` that hands the app the body already read, then goes on with the real one."""
    replayed = False

    async def replaying() -> dict:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replaying


async def _send_json(send: Any, status: int, value: dict) -> None:
    body = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", b"%d" % len(body)), (b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
