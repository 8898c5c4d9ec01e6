"""The HTTP server (matchmaker/http_server.py) with the API's own app around a few routes
(matchmaker/http_app.py, body_limit.py, pages.py), over real loopback sockets, against what a broken
or hostile client does: a body that breaks HTTP or never ends, a request trickled in, a body refused
before it is sent, requests the server answers itself (all problem+json), paths that are neither a
route nor a page, HEAD on an API route, and more connections than the server takes."""

import functools
import json
import logging
import socket
import struct

import h11
import pytest
import trio

from matchmaker.body_limit import BodyLimit
from matchmaker.http_app import App, Route, json_response
from matchmaker.http_server import serve
from matchmaker.pages import serve_page

LIMIT_S = 10  # the longest a test waits for the server (mock-clock tests: MOCK_LIMIT_S, which cost no time)
READ_TIMEOUT_S = 30.0  # the server's default
MOCK_LIMIT_S = 10 * READ_TIMEOUT_S


async def health(_request):
    return json_response({"status": "ok", "live_matches": 0})


async def echo(request):
    return json_response({"body": request.body.decode()}, status=201)


async def crash(_request):
    raise KeyError("not mapped")


APP = BodyLimit(App([Route("GET", "/healthz", health), Route("POST", "/v1/tickets", echo),
                     Route("GET", "/crash", crash)], fallback=serve_page))


async def start(nursery, **settings):
    return await nursery.start(functools.partial(serve, APP, "127.0.0.1", 0, **settings))


class Client:
    """A raw connection, to send any bytes; h11 reads the answers."""

    def __init__(self, stream, limit_s):
        self.stream = stream
        self.limit_s = limit_s
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port, limit_s=LIMIT_S):
        return cls(await trio.open_tcp_stream("127.0.0.1", port), limit_s)

    async def send(self, data: bytes):
        await self.stream.send_all(data)

    async def response(self, method=b"GET"):
        """(status, headers, body) of the next response, to a request of `method`."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        self.h11.send(h11.Request(method=method, target="/", headers=[("host", "x")]))  # h11 is to know the method
        self.h11.send(h11.EndOfMessage())
        status, headers, body = None, None, b""
        with trio.fail_after(self.limit_s):
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(await self.stream.receive_some(65536))
                elif type(event) is h11.Response:
                    status, headers = event.status_code, dict(event.headers)
                elif type(event) is h11.Data:
                    body += event.data
                elif type(event) is h11.EndOfMessage:
                    return status, headers, body
                else:
                    raise AssertionError(f"{event} before the end of the response")

    async def closed(self):
        """Wait for the server to end the connection; nothing more comes before."""
        with trio.fail_after(self.limit_s):
            assert await self.stream.receive_some(65536) == b""


def assert_problem(answer, status, code):
    """The server's own answers have the app's shape (matchmaker/http_app.problem) and close."""
    got_status, headers, body = answer
    assert (got_status, headers[b"content-type"], headers[b"connection"]) == (
        status, b"application/problem+json", b"close")
    problem = json.loads(body)
    assert (problem["type"], problem["status"], problem["code"]) == ("about:blank", status, code)
    assert problem["title"] == code.replace("_", " ") and problem["detail"]
    assert int(headers[b"content-length"]) == len(body)


def errors_logged(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]


# -- a body that breaks HTTP or never ends: 400 or 408, never 500, no error logged ------------------------


async def test_a_malformed_chunked_body_is_400_problem_and_logs_no_error(nursery, caplog):
    server = await start(nursery)
    client = await Client.open(server.port)
    await client.send(b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")
    assert_problem(await client.response(b"POST"), 400, "bad_request")
    await client.closed()
    assert errors_logged(caplog) == []


async def test_a_body_cut_short_is_400_problem(nursery, caplog):
    server = await start(nursery)
    client = await Client.open(server.port)
    await client.send(b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
    await client.stream.send_eof()
    assert_problem(await client.response(b"POST"), 400, "bad_request")
    await client.closed()
    assert errors_logged(caplog) == []


async def test_a_client_that_resets_the_connection_mid_body_costs_no_error(nursery, caplog):
    entered, left = trio.Event(), trio.Event()

    async def watched(scope, receive, send):
        entered.set()
        try:
            await APP(scope, receive, send)
        finally:
            left.set()

    server = await nursery.start(functools.partial(serve, watched, "127.0.0.1", 0))
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", server.port))
    await sock.send(b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
    with trio.fail_after(LIMIT_S):
        await entered.wait()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
    sock.close()
    with trio.fail_after(LIMIT_S):
        await left.wait()  # the server logs before it waits again
    assert errors_logged(caplog) == []


@pytest.mark.parametrize("partial", [
    b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{",  # the body stops
    b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
    b"GET /healthz HTTP/1.1\r\nhost",  # the head stops
])
async def test_a_request_that_stops_coming_is_408_after_read_timeout_s(nursery, caplog, autojump_clock, partial):
    server = await start(nursery)
    client = await Client.open(server.port, MOCK_LIMIT_S)
    began = trio.current_time()
    await client.send(partial)
    assert_problem(await client.response(b"POST"), 408, "request_timeout")
    await client.closed()
    assert trio.current_time() - began == pytest.approx(READ_TIMEOUT_S)
    assert errors_logged(caplog) == []


async def trickle(stream, data: bytes, every_s: float):
    """`data` a byte at a time, one every `every_s`, until it is sent or the server closes."""
    for i in range(len(data)):
        await trio.sleep(every_s)
        try:
            await stream.send_all(data[i:i + 1])
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return


async def test_a_request_trickled_in_has_one_deadline_from_its_first_byte(nursery, autojump_clock):
    """Each byte comes well within read_timeout_s of the one before, the whole body (21 bytes, one
    every 2.5 s) would take 52.5 s: the request is over at 30 s."""
    server = await start(nursery)
    client = await Client.open(server.port, MOCK_LIMIT_S)
    began = trio.current_time()
    await client.send(b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ncontent-length: 21\r\n\r\n")
    async with trio.open_nursery() as sending:
        sending.start_soon(trickle, client.stream, b'{"a":"0123456789abc"}', 2.5)
        answer = await client.response(b"POST")
        sending.cancel_scope.cancel()
    assert_problem(answer, 408, "request_timeout")
    assert trio.current_time() - began == pytest.approx(READ_TIMEOUT_S)


async def test_a_head_and_body_trickled_in_share_the_deadline(nursery, autojump_clock):
    """The head arrives whole within read_timeout_s of its first byte, the first byte of the body too,
    not the second: the request is over read_timeout_s after its first byte."""
    server = await start(nursery)
    client = await Client.open(server.port, MOCK_LIMIT_S)
    began = trio.current_time()
    request = b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    every_s = READ_TIMEOUT_S / (len(request) - 1.5)
    async with trio.open_nursery() as sending:
        sending.start_soon(trickle, client.stream, request, every_s)
        answer = await client.response(b"POST")
        sending.cancel_scope.cancel()
    assert_problem(answer, 408, "request_timeout")
    assert trio.current_time() - began == pytest.approx(every_s + READ_TIMEOUT_S)


async def test_a_request_within_the_deadline_is_served_and_the_next_has_its_own(nursery, autojump_clock):
    server = await start(nursery)
    client = await Client.open(server.port, MOCK_LIMIT_S)
    for _ in range(2):  # 20 s each, 40 s on one connection
        await client.send(b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n")
        async with trio.open_nursery() as sending:
            sending.start_soon(trickle, client.stream, b"{}", 10.0)
            status, _, body = await client.response(b"POST")
        assert (status, json.loads(body)) == (201, {"body": "{}"})


# -- an answer that says Connection: close closes at once ------------------------------------------------


async def test_a_body_refused_by_its_length_closes_at_once_without_reading_it(nursery, autojump_clock):
    server = await start(nursery)
    client = await Client.open(server.port, MOCK_LIMIT_S)
    began = trio.current_time()
    await client.send(b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ncontent-length: 100000\r\n\r\n")
    assert_problem(await client.response(b"POST"), 413, "body_too_large")
    await client.closed()
    assert trio.current_time() - began < 1  # not read_timeout_s later, after waiting for the body


# -- what the server answers itself is problem+json -------------------------------------------------------


@pytest.mark.parametrize(("request_", "status", "code"), [
    (b"NONSENSE\r\n\r\n", 400, "bad_request"),
    (b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ncontent-length: x\r\n\r\n", 400, "bad_request"),
    (b"GET /healthz HTTP/1.1\r\ncontent-length: 0\r\n\r\n", 400, "bad_request"),  # no Host
    (b"POST /v1/tickets HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n", 501, "not_implemented"),
    (b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n", 431, "header_too_large"),
    (b"GET /crash HTTP/1.1\r\nhost: x\r\n\r\n", 500, "internal_error"),
])
async def test_the_servers_own_answers_are_problems(nursery, request_, status, code):
    server = await start(nursery)
    client = await Client.open(server.port)
    await client.send(request_)
    assert_problem(await client.response(), status, code)
    await client.closed()


async def test_a_failure_answering_head_is_500_without_a_body(nursery):
    server = await start(nursery)
    client = await Client.open(server.port)
    await client.send(b"HEAD /crash HTTP/1.1\r\nhost: x\r\n\r\n")
    status, headers, body = await client.response(b"HEAD")
    assert (status, headers[b"content-type"], body) == (500, b"application/problem+json", b"")
    await client.closed()


# -- paths and methods -------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_line", [b"POST /v1/nonexistent", b"POST /v1/tickets/", b"DELETE /v1/x/y",
                                          b"PUT /nope.html", b"POST /healthz/"])
async def test_a_path_that_is_neither_a_route_nor_a_page_is_404_whatever_the_method(nursery, request_line):
    server = await start(nursery)
    client = await Client.open(server.port)
    await client.send(request_line + b" HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    status, headers, body = await client.response(b"POST")
    assert (status, headers[b"content-type"], json.loads(body)["code"]) == (404, b"application/problem+json",
                                                                             "not_found")
    assert b"allow" not in headers


async def test_head_on_an_api_route_is_its_get_without_the_body(nursery):
    server = await start(nursery)
    client = await Client.open(server.port)
    await client.send(b"HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\nGET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    head_status, head_headers, head_body = await client.response(b"HEAD")
    status, headers, body = await client.response()  # read right after: the HEAD answer sent no body bytes
    assert (head_status, head_body, status, json.loads(body)) == (200, b"", 200, {"status": "ok", "live_matches": 0})
    assert head_headers[b"content-length"] == headers[b"content-length"] == b"%d" % len(body)
    assert head_headers[b"content-type"] == headers[b"content-type"] == b"application/json"
    await client.send(b"POST /healthz HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n")
    status, headers, _ = await client.response(b"POST")
    assert (status, headers[b"allow"]) == (405, b"GET, HEAD")


# -- connections over max_connections ---------------------------------------------------------------------


async def test_a_connection_over_max_connections_is_answered_503_and_closed(nursery):
    server = await start(nursery, max_connections=2)
    first, second = await Client.open(server.port), await Client.open(server.port)
    for client in (first, second):  # both served, so both counted
        await client.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await client.response())[0] == 200
    third = await Client.open(server.port)
    status, headers, body = answer = await third.response()
    assert_problem(answer, 503, "server_busy")
    assert headers[b"retry-after"] == b"1" and server.turned_away == 1
    await third.closed()
    await first.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
    assert (await first.response())[0] == 200
    await first.closed()  # the server closed it, and so no longer counts it
    fourth = await Client.open(server.port)
    await fourth.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
    assert (await fourth.response())[0] == 200
    assert (server.connections, server.turned_away) == (3, 1)
