"""The HTTP API's server (matchmaker/http_server.py) over real loopback sockets: keep-alive and
pipelining, request bodies (chunked, 100-continue, left unread), HEAD, chunked responses, bad and
oversized requests, app failures, the idle timeout, shutdown, and WebSocket upgrades."""

import json
import logging

import h11
import pytest
import trio
import trio_websocket

from matchmaker.http_server import serve

LIMIT_S = 10


class App:
    """An ASGI app with a route per behaviour under test."""

    def __init__(self):
        self.release = trio.Event()  # lets /slow answer
        self.entered = trio.Event()  # /slow was called
        self.ws_disconnects = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            await self.websocket(scope, receive, send)
            return
        path = scope["path"]
        if path == "/boom":
            raise RuntimeError("boom")
        if path == "/silent":
            return
        if path == "/slow":
            self.entered.set()
            await self.release.wait()
        body = b""
        if path != "/ignore-body":
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"one,", "more_body": True})
            await send({"type": "http.response.body", "body": b"two"})
            return
        answer = json.dumps({"method": scope["method"], "path": scope["path"], "raw_path": scope["raw_path"].decode(),
                             "query": scope["query_string"].decode(), "body": body.decode(),
                             "client": scope["client"][0], "x": dict(scope["headers"]).get(b"x-test", b"").decode(),
                             }).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]})
        await send({"type": "http.response.body", "body": answer})

    async def websocket(self, scope, receive, send):
        assert (await receive())["type"] == "websocket.connect"
        if scope["path"] == "/ws-refuse":
            await send({"type": "websocket.close", "code": 1008})
            return
        offered = scope["subprotocols"]
        await send({"type": "websocket.accept", "subprotocol": offered[0] if offered else None})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.ws_disconnects.append(message["code"])
                return
            if message.get("text") == "close please":
                await send({"type": "websocket.close", "code": 4000, "reason": "asked"})
                return
            await send({"type": "websocket.send", **{k: v for k, v in message.items() if k in ("text", "bytes")}})


@pytest.fixture
def app():
    return App()


@pytest.fixture
async def server(app, nursery):
    stop = trio.Event()
    started = await nursery.start(lambda task_status: serve(app, "127.0.0.1", 0, shutdown=stop, keep_alive_s=LIMIT_S,
                                                             graceful_s=0.5, task_status=task_status))
    return Running(started, stop)


class Running:
    def __init__(self, server, stop):
        self.server, self.stop, self.port = server, stop, server.port


class Client:
    """A raw connection with h11 to read the answers."""

    def __init__(self, stream):
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def open(cls, port):
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes):
        await self.stream.send_all(data)

    async def response(self, method=b"GET"):
        """(status, headers, body) of the next response; informational ones are skipped."""
        if self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE:
            self.h11.start_next_cycle()
        if self.h11.our_state is h11.IDLE:  # h11 must know what was asked, to read the answer
            self.h11.send(h11.Request(method=method, target="/", headers=[("host", "x")]))
            self.h11.send(h11.EndOfMessage())
        status, headers, body = None, None, b""
        with trio.fail_after(LIMIT_S):
            while True:
                event = self.h11.next_event()
                if event is h11.NEED_DATA:
                    self.h11.receive_data(await self.stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status, headers = event.status_code, dict(event.headers)
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
                    return status, headers, body

    async def closed(self):
        """Wait for the server to end the connection."""
        with trio.fail_after(LIMIT_S):
            while True:
                try:
                    data = await self.stream.receive_some(65536)
                except trio.BrokenResourceError:
                    return
                if not data:
                    return


def get(path, extra=b""):
    return b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n" + extra + b"\r\n"


async def test_keep_alive_pipelining_and_the_scope(server):
    client = await Client.open(server.port)
    await client.send(get(b"/a%20b?x=1", b"x-test: yes\r\n") + get(b"/second"))
    status, headers, body = await client.response()
    first = json.loads(body)
    assert status == 200 and headers[b"content-type"] == b"application/json" and b"date" in headers
    assert (first["path"], first["raw_path"], first["query"], first["x"], first["client"]) == (
        "/a b", "/a%20b", "x=1", "yes", "127.0.0.1")
    assert json.loads((await client.response())[2])["path"] == "/second"  # in order, same connection
    await client.send(get(b"/third"))
    assert json.loads((await client.response())[2])["path"] == "/third"
    assert server.server.connections == 1 and server.server.requests == 3


async def test_request_bodies_chunked_with_100_continue_and_left_unread(server):
    client = await Client.open(server.port)
    await client.send(b"POST /echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nexpect: 100-continue\r\n\r\n")
    with trio.fail_after(LIMIT_S):
        assert (await client.stream.receive_some(65536)).startswith(b"HTTP/1.1 100 ")
    await client.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    client.h11.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
    client.h11.send(h11.EndOfMessage())
    assert json.loads((await client.response())[2])["body"] == "abcde"
    # a body the app never reads is skipped, and the connection goes on
    await client.send(b"POST /ignore-body HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello" + get(b"/next"))
    assert (await client.response(b"POST"))[0] == 200
    assert json.loads((await client.response())[2])["path"] == "/next"


async def test_head_and_a_chunked_response(server):
    client = await Client.open(server.port)
    await client.send(b"HEAD /echo HTTP/1.1\r\nhost: x\r\n\r\n")
    status, headers, body = await client.response(b"HEAD")
    assert status == 200 and int(headers[b"content-length"]) > 0 and body == b""
    await client.send(get(b"/stream"))
    status, headers, body = await client.response()
    assert headers[b"transfer-encoding"] == b"chunked" and body == b"one,two"


@pytest.mark.parametrize(("request_", "status"), [
    (b"NONSENSE\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 20000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", 400),
])
async def test_bad_requests_are_answered_and_the_connection_closed(server, request_, status):
    client = await Client.open(server.port)
    await client.send(request_)
    with trio.fail_after(LIMIT_S):
        answer = b""
        while chunk := await client.stream.receive_some(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 %d " % status) and b"connection: close" in answer.lower()


async def test_an_app_that_fails_or_says_nothing_gets_500_and_the_server_goes_on(server, caplog):
    caplog.set_level(logging.ERROR, "arbiter.http")
    for path in (b"/boom", b"/silent"):
        client = await Client.open(server.port)
        await client.send(get(path))
        status, headers, _ = await client.response()
        assert status == 500 and headers[b"connection"] == b"close"
        await client.closed()
    assert "RuntimeError: boom" in caplog.text and "sent no response" in caplog.text
    client = await Client.open(server.port)
    await client.send(get(b"/fine"))
    assert (await client.response())[0] == 200


async def test_an_idle_connection_is_closed_after_keep_alive_s(app, nursery):
    server = await nursery.start(lambda task_status: serve(app, "127.0.0.1", 0, keep_alive_s=0.1,
                                                            task_status=task_status))
    client = await Client.open(server.port)
    await client.send(get(b"/once"))
    assert (await client.response())[0] == 200
    await client.closed()


async def test_shutdown_closes_idle_connections_and_lets_a_request_in_flight_finish(app, server):
    idle = await Client.open(server.port)
    await idle.send(get(b"/warm"))
    assert (await idle.response())[0] == 200
    busy = await Client.open(server.port)
    await busy.send(get(b"/slow"))
    with trio.fail_after(LIMIT_S):
        await app.entered.wait()
    server.stop.set()
    await idle.closed()
    with pytest.raises(OSError):
        await Client.open(server.port)  # no longer listening
    app.release.set()
    status, headers, _ = await busy.response()
    assert status == 200 and headers[b"connection"] == b"close"
    await busy.closed()


async def test_shutdown_cancels_what_is_still_busy_after_graceful_s(app, server):
    client = await Client.open(server.port)
    await client.send(get(b"/slow"))
    with trio.fail_after(LIMIT_S):
        await app.entered.wait()
    server.stop.set()
    await client.closed()  # after graceful_s (0.5 s), without an answer


async def test_a_client_that_leaves_mid_request_costs_only_its_connection(app, server):
    client = await Client.open(server.port)
    await client.send(get(b"/slow"))
    with trio.fail_after(LIMIT_S):
        await app.entered.wait()
    await client.stream.aclose()
    app.release.set()  # the app answers a connection that is gone
    other = await Client.open(server.port)
    await other.send(get(b"/after"))
    assert (await other.response())[0] == 200


async def test_websocket_upgrade_echo_and_close(app, server):
    url = f"ws://127.0.0.1:{server.port}/ws"
    async with trio_websocket.open_websocket_url(url, subprotocols=["arbiter.json"]) as ws:
        assert ws.subprotocol == "arbiter.json"
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
        await ws.send_message(b"\x00\x01")
        assert await ws.get_message() == b"\x00\x01"
    assert app.ws_disconnects == [1000]
    async with trio_websocket.open_websocket_url(url) as ws:
        await ws.send_message("close please")
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
        assert closed.value.reason.code == 4000 and closed.value.reason.reason == "asked"


async def test_websocket_refusals(server):
    with pytest.raises(trio_websocket.HandshakeError) as refused:
        async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{server.port}/ws-refuse"):
            pass
    assert refused.value.status_code == 403
    client = await Client.open(server.port)
    await client.send(get(b"/ws", b"upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 8\r\n"
                                  b"sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"))
    status, headers, _ = await client.response()
    assert status == 426 and headers[b"sec-websocket-version"] == b"13"
