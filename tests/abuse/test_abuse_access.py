"""Tokens and access, over real loopback sockets: who may join which match as whom, who may send
inputs, who may call the admin endpoints, and that no id reaches outside the data directory.

What the tests hold the server to (docs/protocol.md, docs/operations.md#security):
- a join token admits one player (or spectator) id to one match until its `exp`; anything forged,
  altered, expired, for another match or of another kind closes the connection with 4001;
- "replayed" means presented again: while valid, a token is what a client reconnects with (the
  newer connection replaces the older, 4009); after its match is over it admits nobody (4012);
  after `leave` it is a new join, which the game may accept (a free seat) or refuse (4005);
- inputs are always the token's player's: a message cannot name another player, and spectators
  send none.
"""

import base64
import json
import os
import time
import warnings
from pathlib import Path

import httpx
import jwt
import pytest
import trio

from abuse_helpers import SECRET, Closed, RawWS, handshake_bytes
from gameserver import tokens
from gameserver.config import NodeConfig
from gameserver.games import builtin_games
from gameserver.ids import match_id_from_name
from matchmaker.auth import AUDIENCE, PlayerAuth
from tools.up import ServerConfig, exposure_warning, is_loopback, run_server


async def refused(stack, match_id: str, token: str) -> Closed:
    ws = await stack.connect(match_id)
    await ws.send_json({"t": "auth", "token": token})
    with trio.fail_after(10):
        seen, closed = await ws.until_close()
    assert not [m for m in seen if m.get("t") == "welcome"]
    return closed


def claims(match_id: str, player: str = "eve", role: str = "player", exp: float = 4e9, **extra) -> dict:
    return {"iss": tokens.ISSUER, "mid": match_id, "sub": player, "role": role, "iat": 0, "exp": exp, **extra}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def altered(token: str, **changes) -> str:
    """The token with some claims changed and its signature kept."""
    header, payload, signature = token.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body.update(changes)
    return ".".join((header, b64(json.dumps(body).encode()), signature))


def hs512(body: dict) -> str:
    with warnings.catch_warnings():  # PyJWT warns that 32 bytes is short for SHA-512: it is the point
        warnings.simplefilter("ignore")
        return jwt.encode(body, SECRET, algorithm="HS512")


async def test_forged_altered_and_foreign_tokens_are_refused_with_4001(stack):
    match_id = await stack.match()
    other = await stack.match()
    good = stack.token(match_id, "eve", "spectator")
    cases = {
        "signed with another key": jwt.encode(claims(match_id), b"k" * 32, algorithm="HS256"),
        "alg none": ".".join((b64(b'{"alg":"none","typ":"JWT"}'), b64(json.dumps(claims(match_id)).encode()), "")),
        "HS512 with the right key": hs512(claims(match_id)),
        "a spectator's token made a player's": altered(good, role="player"),
        "another player's name put in": altered(good, sub="alice"),
        "its expiry moved on": altered(stack.token(match_id, "eve", ttl=-10), exp=4e9),
        "another match put in": altered(good, mid=other),
        "for another match": stack.token(other, "eve"),
        "no expiry": jwt.encode({k: v for k, v in claims(match_id).items() if k != "exp"}, SECRET, algorithm="HS256"),
        "an expiry that is text": jwt.encode(claims(match_id, exp="4000000000"), SECRET, algorithm="HS256"),
        "an expiry that is true": jwt.encode(claims(match_id, exp=True), SECRET, algorithm="HS256"),
        "another issuer": jwt.encode({**claims(match_id), "iss": "someone"}, SECRET, algorithm="HS256"),
        "the role admin": jwt.encode(claims(match_id, role="admin"), SECRET, algorithm="HS256"),
        "a match id that climbs out": jwt.encode(claims("../../secret.key"), SECRET, algorithm="HS256"),
        "a player id with a slash": jwt.encode(claims(match_id, player="../eve"), SECRET, algorithm="HS256"),
        "a player token of the matchmaker": PlayerAuth(SECRET, guests=False).sign("eve", stack.clock())[0],
        "a player token with join claims": jwt.encode({**claims(match_id), "aud": AUDIENCE}, SECRET, algorithm="HS256"),
        "not a JWT": "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln",
        "non-ASCII": "ey\u00e9.x.y",
    }
    seen = {what: (await refused(stack, match_id, token)).code for what, token in cases.items()}
    assert seen == {what: 4001 for what in cases}
    assert (await refused(stack, other, stack.token(match_id, "eve"))).reason == "the token is for another match"
    assert (await stack.node.describe(match_id))["players"] == []


async def test_a_token_for_a_match_that_does_not_exist_admits_nobody(stack):
    ghost = match_id_from_name("never created")
    closed = await refused(stack, ghost, stack.token(ghost, "eve"))
    assert closed.code == 4004


async def test_a_token_expires_at_exp_and_an_open_connection_is_not_cut(stack):
    match_id = await stack.match()
    token = stack.token(match_id, "eve", ttl=60)
    exp = tokens.verify(SECRET, token, 0).expires_at
    ws = await stack.connect(match_id)
    await ws.auth(token)
    stack.clock.offset = exp - time.time()  # now >= exp: expired
    await ws.send_json({"t": "input", "seq": 1, "data": {"dx": 1, "dy": 0}})
    while (await ws.until("state"))["acks"]["eve"] < 1:  # the open connection plays on
        pass
    closed = await refused(stack, match_id, token)  # but cannot come back
    assert (closed.code, closed.reason) == (4001, "token expired")
    stack.clock.offset = exp - time.time() - 5  # before exp it still admits
    again, welcome = await stack.join(match_id, "eve")
    assert welcome["last_seq"] == 1


async def test_a_token_presented_again_replaces_the_older_connection(stack):
    match_id = await stack.match()
    token = stack.token(match_id, "eve")
    first = await stack.connect(match_id)
    await first.auth(token)
    second = await stack.connect(match_id)
    await second.auth(token)
    with trio.fail_after(10):
        _, closed = await first.until_close()
    assert (closed.code, closed.reason) == (4009, "replaced by a newer connection")
    status = await stack.node.describe(match_id)
    assert [p["player_id"] for p in status["players"]] == ["eve"] and status["connections"] == 1


async def test_a_token_of_a_match_that_is_over_admits_nobody(stack):
    match_id = await stack.match(params={"duration_s": 0.2, "lobby_s": 0.1})
    token = stack.token(match_id, "eve")
    ws = await stack.connect(match_id)
    await ws.auth(token)
    await stack.join(match_id, "bob")
    with trio.fail_after(10):
        seen, closed = await ws.until_close()
    assert [m["data"]["status"] for m in seen if m.get("kind") == "end"] == ["ended"] and closed.code == 1000
    closed = await refused(stack, match_id, token)
    assert closed.code == 4012
    spectator = await refused(stack, match_id, stack.token(match_id, "fan", "spectator"))
    assert spectator.code == 4012


async def test_a_match_without_a_lobby_ends_after_its_duration(stack):
    match_id = await stack.match(params={"duration_s": 0.2})
    ws, _ = await stack.join(match_id, "eve")
    with trio.move_on_after(2):
        seen, _ = await ws.until_close()
        assert [m["data"]["status"] for m in seen if m.get("kind") == "end"] == ["ended"]
        return
    pytest.fail("a match of 0.2 s did not end in 2 s")


async def test_after_leave_the_same_token_asks_for_a_seat_again(stack):
    """arena takes anyone while a seat is free: the leaver is a new join (a leave, then a join event)."""
    match_id = await stack.match()
    witness, _ = await stack.join(match_id, "witness")
    token = stack.token(match_id, "eve")
    ws = await stack.connect(match_id)
    await ws.auth(token)
    await ws.send_json({"t": "leave"})
    with trio.fail_after(10):
        _, closed = await ws.until_close()
    assert (closed.code, closed.reason) == (1000, "left the match")
    await witness.until("event", kind="leave")
    again = await stack.connect(match_id)
    welcome = await again.auth(token)
    assert welcome["player"] == "eve"
    assert (await witness.until("event", kind="join"))["data"] == {"player": "eve"}


async def test_after_leave_a_game_that_ended_for_the_leaver_admits_nobody(stack):
    """connect four: the player who leaves loses; the match is over, so the token admits nobody."""
    match_id = await stack.match("connect_four")
    red, _ = await stack.join(match_id, "red")
    token = stack.token(match_id, "yellow")
    yellow = await stack.connect(match_id)
    await yellow.auth(token)
    await yellow.send_json({"t": "leave"})
    with trio.fail_after(10):
        seen, _ = await red.until_close()
    assert [m["data"]["result"]["reason"] for m in seen if m.get("kind") == "end"] == ["left"]
    assert (await refused(stack, match_id, token)).code == 4012


async def test_a_player_cannot_send_inputs_as_another(stack):
    match_id = await stack.match()
    alice, _ = await stack.join(match_id, "alice")
    bob, _ = await stack.join(match_id, "bob")
    # a spectator token with bob's name: watches, cannot send, and does not replace bob's seat
    fake, welcome = await stack.join(match_id, "bob", role="spectator")
    assert welcome["role"] == "spectator"
    await fake.send_json({"t": "input", "seq": 1, "data": {"dx": 1, "dy": 0}})
    assert (await fake.until("error"))["code"] == "forbidden"
    await alice.send_json({"t": "input", "seq": 1, "player": "bob", "data": {"dx": 1, "dy": 0}})
    assert (await alice.until("error"))["code"] == "bad_frame"
    await alice.send_json({"t": "input", "seq": 7, "data": {"dx": 1, "dy": 0}})
    while (state := await bob.until("state"))["acks"]["alice"] < 7:
        pass
    assert state["acks"]["bob"] == 0
    assert await stack.node.logged_inputs(match_id) == {"alice": [[7, 7]]}
    assert state["state"]["players"]["bob"]["vx"] == 0.0 and state["state"]["players"]["alice"]["vx"] == 5.0
    await bob.send_json({"t": "ping", "id": "bob is still bob"})
    assert (await bob.until("pong"))["id"] == "bob is still bob"


# -- HTTP: admin endpoints, ids that try to leave the data directory -----------------------------

ADMIN = "admin-secret-for-tests"


@pytest.fixture
async def http_server(tmp_path, nursery):
    stop = trio.Event()
    config = ServerConfig(node=NodeConfig(data_dir=tmp_path / "data"), games=builtin_games(), port=0, ws_port=0,
                          admin_token=ADMIN)
    running = await nursery.start(run_server, config, stop)
    async with httpx.AsyncClient(base_url=running.http_url) as client:
        yield client, running, tmp_path / "data"
    stop.set()


async def test_admin_endpoints_refuse_anything_but_the_admin_token(http_server):
    client, running, _ = http_server
    admin = {"authorization": f"Bearer {ADMIN}"}
    match_id = (await client.post("/v1/matches", json={"game": "arena"}, headers=admin)).json()["match_id"]
    guest = (await client.post("/v1/auth/guest")).json()["token"]
    join = (await client.post(f"/v1/matches/{match_id}/tokens", json={"player_id": "eve"}, headers=admin)).json()["token"]
    calls = [("POST", "/v1/matches", {"game": "arena"}), ("POST", f"/v1/matches/{match_id}/tokens", {"player_id": "eve"}),
             ("GET", f"/v1/matches/{match_id}/inputs", None), ("GET", "/v1/alarms/failed", None),
             ("GET", "/v1/node/unusable", None), ("GET", "/v1/node/workers", None)]
    wrong = [None, "", "Bearer", f"Basic {ADMIN}", f"Bearer {ADMIN[:-1]}", f"Bearer {ADMIN}x",
             f"Bearer  {ADMIN}", f"Token {ADMIN}", f"Bearer {guest}", f"Bearer {join}", ADMIN]
    for method, path, body in calls:
        for header in wrong:
            headers = {} if header is None else {"authorization": header}
            answer = await client.request(method, path, json=body, headers=headers)
            assert (answer.status_code, answer.json()["code"]) == (401, "unauthorized"), (path, header)
        answer = await client.request(method, path, json=body, headers={"authorization": f"bearer {ADMIN}"})
        assert answer.status_code in (200, 201), (path, answer.text)
    assert len(running.node.unfinished) == 2  # the match above and the one the last round created


@pytest.mark.parametrize("path", [
    "/v1/matches/..%2F..%2Fsecret.key", "/v1/matches/..%2fsecret.key/tokens", "/v1/matches/%2e%2e",
    "/v1/matches/%2e%2e%2f%2e%2e%2fauth.key/inputs", "/v1/matches/..", "/v1/matches/.../tokens",
    "/v1/matches/" + "0" * 25 + "%00", "/v1/matches/" + "U" * 26, "/v1/matches/" + "u" * 26,
    "/v1/matches/8" + "0" * 25, "/v1/matches/" + "0" * 27, "/v1/matches/%EF%BC%90" * 1 + "0" * 25,
    "/v1/matches/secret.key", "/v1/matches/matches",
])
async def test_match_ids_cannot_reach_outside_the_data_directory(http_server, path):
    client, _, data_dir = http_server
    admin = {"authorization": f"Bearer {ADMIN}"}
    before = sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*"))
    secrets = [(data_dir / name).read_bytes().strip() for name in ("secret.key", "auth.key")]
    for method, body in (("GET", None), ("POST", {"player_id": "eve"})):
        answer = await client.request(method, path, json=body, headers=admin)
        assert answer.status_code in (404, 405, 422), (method, path, answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert not any(secret in answer.content for secret in secrets) and len(answer.content) < 2000
    assert sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*")) == before


async def test_a_match_name_that_looks_like_a_path_stays_a_name(http_server):
    client, _, data_dir = http_server
    admin = {"authorization": f"Bearer {ADMIN}"}
    for name in ("../../etc/passwd", "/tmp/x", "..\\..\\secret.key", "matches/../secret.key", "\u0000"):
        answer = await client.post("/v1/matches", json={"game": "arena", "name": name}, headers=admin)
        assert answer.status_code == 201, answer.text
        assert answer.json()["match_id"] == match_id_from_name(name)
    files = {p.name for p in (data_dir / "matches").iterdir()}
    assert all(Path(f).stem in {match_id_from_name(n) for n in ("../../etc/passwd", "/tmp/x", "..\\..\\secret.key",
                                                                "matches/../secret.key", "\u0000")}
               for f in files if f.endswith(".sqlite3"))
    assert not (data_dir.parent / "etc").exists() and sorted(os.listdir(data_dir.parent)) == ["data"]


async def test_websocket_paths_that_climb_out_are_not_found(stack):
    for path in ("/v1/matches/../../secret.key", "/v1/matches/%2e%2e%2f%2e%2e%2fsecret.key",
                 "/v1/matches/" + "0" * 25 + "/", "//v1/matches/" + "0" * 26 + "/..", "/v1/matches/" + "0" * 26 + "/x"):
        stream = await trio.open_tcp_stream("127.0.0.1", stack.port)
        await stream.send_all(handshake_bytes(path))
        ws = RawWS(stream)
        head = await ws.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 404"), (path, head)


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), ("127.0.0.2", True), ("[::1]", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("192.168.1.5", False), ("game.example.com", False),
])
def test_the_server_says_so_when_it_listens_beyond_loopback(host, loopback):
    assert is_loopback(host) is loopback
    warning = exposure_warning(host, admin_token=None)
    assert (warning is None) is loopback
    if not loopback:
        assert "not loopback" in warning and "--admin-token" in warning
        assert "--admin-token" not in exposure_warning(host, admin_token="set")


def test_the_defaults_listen_on_loopback():
    from tools.cli import build_parser
    args = build_parser().parse_args(["up"])
    assert args.host == "127.0.0.1" and ServerConfig(node=NodeConfig(), games={}).host == "127.0.0.1"
