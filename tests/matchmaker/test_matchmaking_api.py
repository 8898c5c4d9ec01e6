"""The matchmaking HTTP API over real loopback sockets: guest tokens, tickets with long-poll, placement
with join tokens, seats held until the lobby timeout, no-shows, backfill, custom matches by code,
listing, auth and limits."""

import time

import httpx
import jwt
import pytest
import trio

from clients.client import MatchClient, Welcome
from gameserver import tokens
from gameserver.config import NodeConfig
from gameserver.games.arena import Arena
from gameserver.node import MatchNotFound, MatchStorageUnavailable, MatchUnavailable, NodeClosing
from matchmaker.auth import PlayerAuth
from matchmaker.hosts import WorkerUnavailable
from tools.up import ServerConfig, run_server
from api_helpers import guest, http, queue, server, start_arbiter, wait_for  # (http, server: fixtures)


async def test_two_players_are_matched_placed_and_join_with_their_tokens(server, http):
    (ann, ann_auth), (bob, bob_auth) = await guest(http), await guest(http)
    ann_ticket = await queue(http, ann_auth, "duel", numbers={"skill": 1200}, latencies={"eu": 20})
    assert ann_ticket["status"] == "queued" and ann_ticket["players"] == [ann]
    bob_ticket = await queue(http, bob_auth, "duel")
    ann_ticket = await wait_for(http, ann_auth, ann_ticket, "matched")
    bob_ticket = await wait_for(http, bob_auth, bob_ticket, "matched")
    a, b = ann_ticket["assignment"], bob_ticket["assignment"]
    assert a["match_id"] == b["match_id"] and a["token"] != b["token"] and not a["backfill"]
    status = (await http.get(f"/v1/matches/{a['match_id']}")).json()
    assert status["status"] == "lobby"  # held for its two players
    async with MatchClient(a["ws_url"], a["token"]) as ann_client, MatchClient(b["ws_url"], b["token"]) as bob_client:
        assert isinstance(await ann_client.receive(), Welcome) and isinstance(await bob_client.receive(), Welcome)
        with trio.fail_after(10):
            while (await http.get(f"/v1/matches/{a['match_id']}")).json()["status"] != "running":
                await trio.sleep(0.01)
    listing = (await http.get("/v1/matches", params={"queue": "duel"})).json()
    assert [m["match_id"] for m in listing] == [a["match_id"]] and listing[0]["joinable"] is False


async def test_a_no_show_cancels_the_match_and_the_other_ticket_is_queued_again_with_its_wait(server, http):
    (ann, ann_auth), (bob, bob_auth) = await guest(http), await guest(http)
    ann_ticket = await queue(http, ann_auth, "hasty")
    bob_ticket = await queue(http, bob_auth, "hasty")
    ann_ticket = await wait_for(http, ann_auth, ann_ticket, "matched")
    assignment = ann_ticket["assignment"]
    async with MatchClient(assignment["ws_url"], assignment["token"], reconnect=False) as ann_client:
        assert isinstance(await ann_client.receive(), Welcome)
        again = await wait_for(http, ann_auth, ann_ticket, "queued")  # bob never came: 1 s seat hold
    assert again["requeued"] == 1 and again["created_at"] == ann_ticket["created_at"]
    assert "did not join" in again["reason"]
    bob_final = (await http.get(f"/v1/tickets/{bob_ticket['ticket_id']}", headers=bob_auth)).json()
    assert bob_final["status"] == "expired" and bob_final["reason"] == "no_show"
    assert (await http.get(f"/v1/matches/{assignment['match_id']}")).json()["status"] == "cancelled"


async def test_a_running_match_that_lost_a_player_is_backfilled(server, http):
    (ann, ann_auth), (bob, bob_auth), (cid, cid_auth) = await guest(http), await guest(http), await guest(http)
    tickets = [await queue(http, ann_auth, "refill"), await queue(http, bob_auth, "refill")]
    a = (await wait_for(http, ann_auth, tickets[0], "matched"))["assignment"]
    b = (await wait_for(http, bob_auth, tickets[1], "matched"))["assignment"]
    async with MatchClient(a["ws_url"], a["token"]) as ann_client:
        await ann_client.receive()
        async with MatchClient(b["ws_url"], b["token"], reconnect=False) as bob_client:
            await bob_client.receive()
            with trio.fail_after(10):
                while (await http.get(f"/v1/matches/{a['match_id']}")).json()["status"] != "running":
                    await trio.sleep(0.01)
        # bob dropped: past his 0.2 s grace he leaves, and the match asks for a replacement
        with trio.fail_after(10):
            while not any(q["open_backfills"] for q in (await http.get("/v1/queues")).json()):
                await trio.sleep(0.01)
        cid_ticket = await wait_for(http, cid_auth, await queue(http, cid_auth, "refill"), "matched")
        c = cid_ticket["assignment"]
        assert c["match_id"] == a["match_id"] and c["backfill"] is True
        async with MatchClient(c["ws_url"], c["token"]) as cid_client:
            welcome = await cid_client.receive()
            assert isinstance(welcome, Welcome) and cid in welcome.state["players"]


async def test_a_ticket_expires_at_its_maximum_wait(server, http):
    _ann, ann_auth = await guest(http)
    ticket = await wait_for(http, ann_auth, await queue(http, ann_auth, "lonely"), "expired")
    assert ticket["reason"] == "max_wait" and ticket["assignment"] is None


async def test_cancel_auth_limits_and_other_players_tickets(server, http):
    (ann, ann_auth), (eve, eve_auth) = await guest(http), await guest(http)
    ticket = await queue(http, ann_auth, "ranked")
    path = f"/v1/tickets/{ticket['ticket_id']}"
    assert (await http.get(path, headers=eve_auth)).json()["code"] == "ticket_not_found"  # not hers
    assert (await http.delete(path, headers=eve_auth)).status_code == 404
    again = await http.post("/v1/tickets", json={"queue": "ranked"}, headers=ann_auth)
    assert (again.status_code, again.json()["code"]) == (409, "already_queued")
    cancelled = await http.delete(path, headers=ann_auth)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert (await http.delete(path, headers=ann_auth)).json()["code"] == "not_queued"
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": "Basic abc"}):
        answer = await http.post("/v1/tickets", json={"queue": "ranked"}, headers=headers)
        assert (answer.status_code, answer.json()["code"]) == (401, "unauthorized")
        assert answer.headers["content-type"] == "application/problem+json"
    join_token = server.matchmaker.placement.token("0" * 26, ann)[0]  # a join token is not a player token
    answer = await http.post("/v1/tickets", json={"queue": "ranked"}, headers={"Authorization": f"Bearer {join_token}"})
    assert answer.status_code == 401
    expired = PlayerAuth(secret=(server.node.data_dir / "auth.key").read_bytes().strip(), guests=True).sign(
        ann, 1000.0, ttl_s=10)[0]
    answer = await http.post("/v1/tickets", json={"queue": "ranked"}, headers={"Authorization": f"Bearer {expired}"})
    assert "expired" in answer.json()["detail"]
    for body, code in (({"queue": "nope"}, "unknown_queue"), ({"queue": "ranked", "party": [ann]}, "not_in_ticket"),
                       ({"queue": "ranked", "party": [eve, ann, "x"]}, "party_too_large"),
                       ({"queue": "ranked", "numbers": {"skill": "high"}}, "invalid_request"),
                       ({"queue": "ranked", "latencies": {"eu": -1}}, "invalid_ticket")):
        answer = await http.post("/v1/tickets", json=body, headers=eve_auth)
        assert answer.json().get("code") == code, (body, answer.text)
    for queue_name in ("duel", "hasty", "refill"):  # at most three queued tickets a player
        await queue(http, eve_auth, queue_name)
    answer = await http.post("/v1/tickets", json={"queue": "ranked"}, headers=eve_auth)
    assert (answer.status_code, answer.json()["code"]) == (429, "too_many_tickets")


async def test_custom_matches_by_code_and_the_listing(server, http):
    (ann, ann_auth), (bob, bob_auth) = await guest(http), await guest(http)
    public = (await http.post("/v1/custom", json={"game": "connect_four"}, headers=ann_auth)).json()
    private = (await http.post("/v1/custom", json={"game": "connect_four", "private": True}, headers=ann_auth)).json()
    assert len(public["code"]) == 8 and public["match_id"] != private["match_id"]
    joined = await http.post("/v1/custom/join", json={"code": private["code"]}, headers=bob_auth)
    assert joined.status_code == 200 and joined.json()["match_id"] == private["match_id"]
    async with MatchClient(joined.json()["ws_url"], joined.json()["token"]) as bob_client:
        welcome = await bob_client.receive()
        assert isinstance(welcome, Welcome) and welcome.player == bob
    unknown = await http.post("/v1/custom/join", json={"code": "ABCDEFGH"}, headers=bob_auth)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "unknown_code")
    listed = (await http.get("/v1/matches", params={"game": "connect_four"})).json()
    # without an admin token every caller is the admin (development): both show; filters still apply
    assert {m["match_id"] for m in listed} == {public["match_id"], private["match_id"]}
    only_public = (await http.get("/v1/matches", params={"label": "private:false"})).json()
    assert [m["match_id"] for m in only_public] == [public["match_id"]] and only_public[0]["joinable"] is True
    assert only_public[0]["labels"]["host"] == ann
    bad = await http.get("/v1/matches", params={"label": "nocolon"})
    assert bad.json()["code"] == "invalid_request"


async def test_guest_tokens_can_be_turned_off(tmp_path, nursery):
    stop = trio.Event()
    config = ServerConfig(node=NodeConfig(data_dir=tmp_path), games={"arena": Arena}, port=0, ws_port=0, guests=False)
    running = await nursery.start(run_server, config, stop)
    async with httpx.AsyncClient(base_url=running.http_url) as client:
        answer = await client.post("/v1/auth/guest")
        assert (answer.status_code, answer.json()["code"]) == (403, "guests_disabled")
        queues = (await client.get("/v1/queues")).json()
        assert [q["queue"] for q in queues] == ["arena"]  # the demo queues of the games it has
    stop.set()


async def test_the_python_client_matchmakes_and_reports_an_expiry(server):
    from clients.client import ArbiterHTTP, MatchmakingFailed

    assignments = {}

    async def play(name):
        async with ArbiterHTTP(server.http_url) as http:
            await http.guest()
            assignments[name] = await http.matchmake("duel", numbers={"skill": 1000})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(play, "ann")
        nursery.start_soon(play, "bob")
    assert assignments["ann"]["match_id"] == assignments["bob"]["match_id"]
    async with ArbiterHTTP(server.http_url) as http:
        await http.guest()
        with pytest.raises(MatchmakingFailed) as failed:
            await http.matchmake("lonely")
        assert failed.value.status == "expired" and failed.value.reason == "max_wait"
        listed = await http.matches(queue="duel")
        assert [m["match_id"] for m in listed] == [assignments["ann"]["match_id"]]


@pytest.mark.parametrize(("error", "status", "code"), [
    (NodeClosing("the node is shutting down"), 503, "node_closing"),
    (MatchStorageUnavailable("storage error (disk full)"), 503, "storage_unavailable"),
    (MatchUnavailable("the file is damaged"), 409, "match_unavailable"),
    (WorkerUnavailable("worker 1 is being restarted"), 503, "worker_unavailable"),
    (MatchNotFound("no match"), 404, "unknown_code"),
], ids=lambda value: value if isinstance(value, str) else None)
async def test_joining_by_code_answers_the_nodes_own_error_when_it_cannot_tell(server, http, monkeypatch, error,
                                                                               status, code):
    """Only a match that is not there is an unknown code: the others may well be right."""
    _ann, ann_auth = await guest(http)
    created = (await http.post("/v1/custom", json={"game": "connect_four"}, headers=ann_auth)).json()

    async def describe(_match_id):
        raise error

    monkeypatch.setattr(server.node, "describe", describe)
    answer = await http.post("/v1/custom/join", json={"code": created["code"]}, headers=ann_auth)
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert answer.headers["content-type"] == "application/problem+json"


def exp_of(token):
    return jwt.decode(token, options={"verify_signature": False})["exp"]


async def test_a_join_token_expires_at_the_second_the_answer_reports_and_not_before_its_lifetime(server, http):
    (_ann, ann_auth), (_bob, bob_auth) = await guest(http), await guest(http)
    before = time.time()
    created = (await http.post("/v1/custom", json={"game": "connect_four"}, headers=ann_auth)).json()
    joined = (await http.post("/v1/custom/join", json={"code": created["code"]}, headers=bob_auth)).json()
    match = (await http.post("/v1/matches", json={"game": "arena"})).json()["match_id"]
    short = (await http.post(f"/v1/matches/{match}/tokens", json={"player_id": "ann", "ttl_s": 0.5})).json()
    ttl = server.node.config.token_ttl_s
    for answer, lifetime in ((created, ttl), (joined, ttl), (short, 0.5)):
        assert exp_of(answer["token"]) == answer["expires_at"] == int(answer["expires_at"])
        assert answer["expires_at"] > before + lifetime
    secret = (server.node.data_dir / "secret.key").read_bytes().strip()
    assert tokens.verify(secret, short["token"], time.time()).player == "ann"  # 0.5 s: valid when it arrives
    async with MatchClient(short["ws_url"], short["token"]) as client:
        assert isinstance(await client.receive(), Welcome)


async def test_a_signed_player_token_with_an_exp_beyond_a_float_is_a_401(server, http):
    secret = (server.node.data_dir / "auth.key").read_bytes().strip()
    for exp in ("1" + "0" * 400, "1e400", "NaN"):
        token = jwt.api_jws.encode(b'{"aud": "arbiter:player", "sub": "ann", "exp": %s}' % exp.encode(), secret,
                                   algorithm="HS256")
        answer = await http.post("/v1/tickets", json={"queue": "ranked"}, headers={"Authorization": f"Bearer {token}"})
        assert (answer.status_code, answer.json()["code"]) == (401, "unauthorized"), exp


async def test_query_values_are_plain_digits_and_true_or_false(server, http):
    _ann, ann_auth = await guest(http)
    ticket = await queue(http, ann_auth, "ranked")
    path = f"/v1/tickets/{ticket['ticket_id']}"
    for query in ("wait_s=1_0", "wait_s=1e1", "wait_s=%201", "version=%20%2B1", "version=+1", "version=-0",
                  "version=1_0"):
        answer = await http.get(f"{path}?{query}", headers=ann_auth)
        assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request"), query
        assert answer.json()["detail"].startswith("query."), query
    assert (await http.get(f"{path}?wait_s=0.0&version=0", headers=ann_auth)).status_code == 200
    for joinable in ("YES", "on", "t", "1", "True"):
        answer = await http.get(f"/v1/matches?joinable={joinable}")
        assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request"), joinable
    assert [(await http.get(f"/v1/matches?joinable={joinable}")).status_code for joinable in ("true", "false")] == [
        200, 200]


async def test_a_tickets_wait_stops_when_it_leaves_the_queue(server, http):
    _ann, ann_auth = await guest(http)
    ticket = await queue(http, ann_auth, "ranked")
    cancelled = (await http.delete(f"/v1/tickets/{ticket['ticket_id']}", headers=ann_auth)).json()
    later = (await http.get(f"/v1/tickets/{ticket['ticket_id']}", headers=ann_auth)).json()
    assert cancelled["status"] == later["status"] == "cancelled"
    assert later["wait_s"] == cancelled["wait_s"] >= ticket["wait_s"]  # the clock went on; the wait did not
