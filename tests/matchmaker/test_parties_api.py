"""Consensual parties over real loopback sockets: a party ticket is pending until every member accepts it
(POST /v1/tickets/{id}/accept), a member declines it with DELETE, it expires (not_accepted) after its
queue's party_accept_s, members find it with GET /v1/tickets; naming a stranger costs them nothing."""

import httpx
import pytest
import trio
import trio.testing

from clients.client import ArbiterHTTP, MatchClient, Welcome
from matchmaker.auth import PlayerAuth
from matchmaker.book import MAX_INVITATIONS
from matchmaker.http_app import App
from matchmaker.http_server import serve
from matchmaker.service import Matchmaker
from matchmaker.ticket_api import matchmaking_routes
from api_helpers import guest, http, mode, queue, server, start_arbiter, wait_for  # (http, server: fixtures)


def path(ticket, action=""):
    return f"/v1/tickets/{ticket['ticket_id']}{action}"


async def test_strangers_who_name_a_player_in_party_tickets_take_none_of_their_queue_or_limits(server, http):
    """The griefing case: before consent, a party ticket named its members into a queue (409 already_queued)
    and into their three tickets (429 too_many_tickets); now it is an invitation they can ignore."""
    victim, victim_auth = await guest(http)
    for queue_name in ("squad", "ranked", "refill"):  # the griefer's three tickets
        griefer, griefer_auth = await guest(http)
        invitation = await queue(http, griefer_auth, queue_name, party=[griefer, victim])
        assert (invitation["status"], invitation["accepted"], invitation["owner"]) == ("pending", [griefer], griefer)
    for queue_name in ("squad", "ranked", "refill"):  # the same queues: no 409, and three tickets: no 429
        assert (await queue(http, victim_auth, queue_name))["status"] == "queued"
    refused = await http.post("/v1/tickets", json={"queue": "duel"}, headers=victim_auth)
    assert (refused.status_code, refused.json()["code"]) == (429, "too_many_tickets")  # her own three, only
    own = (await http.get("/v1/tickets", params={"status": "queued"}, headers=victim_auth)).json()
    assert [t["queue"] for t in own] == ["refill", "ranked", "squad"] and all(t["players"] == [victim] for t in own)
    stats = {q["queue"]: q["queued_tickets"] for q in (await http.get("/v1/queues")).json()}
    assert stats["squad"] == stats["ranked"] == stats["refill"] == 1  # the victim's, not the invitations
    listed = (await http.get("/v1/tickets", params={"status": "pending"}, headers=victim_auth)).json()
    assert len(listed) == 3 and all(t["accepted"] == [t["owner"]] and victim in t["players"] for t in listed)
    declined = (await http.delete(path(listed[0]), headers=victim_auth)).json()
    assert (declined["status"], declined["reason"]) == ("cancelled", f"declined by {victim}")


async def test_a_party_is_pending_then_accepted_queued_matched_and_every_member_joins(server, http):
    (ann, ann_auth), (bob, bob_auth), (cid, cid_auth) = await guest(http), await guest(http), await guest(http)
    ticket = await queue(http, ann_auth, "trios", party=[ann, bob, cid])
    assert (ticket["status"], ticket["accepted"], ticket["wait_s"], ticket["assignment"]) == ("pending", [ann], 0, None)
    assert ticket["accept_by"] == pytest.approx(ticket["created_at"] + 60)
    invitations = (await http.get("/v1/tickets", headers=bob_auth)).json()
    assert [t["ticket_id"] for t in invitations] == [ticket["ticket_id"]]
    stranger = (await guest(http))[1]
    for headers in (stranger, {}):  # not a member: as for an unknown ticket; no token: 401
        answer = await http.post(path(ticket, "/accept"), headers=headers)
        assert answer.json()["code"] == ("ticket_not_found" if headers else "unauthorized")
    polled = {}

    async def poll():  # ann's long-poll wakes at each acceptance
        answer = await http.get(path(ticket), params={"wait_s": 30, "version": ticket["version"]}, headers=ann_auth)
        polled.update(answer.json())

    with trio.fail_after(10):  # the poll waits up to 30 s: only the acceptance answers it sooner
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.testing.wait_all_tasks_blocked()  # the poll is waiting on the server
            bob_view = (await http.post(path(ticket, "/accept"), headers=bob_auth)).json()
    assert (bob_view["status"], bob_view["accepted"], bob_view["version"]) == ("pending", [ann, bob], 1)
    assert (polled["version"], polled["accepted"]) == (1, [ann, bob])
    again = await http.post(path(ticket, "/accept"), headers=bob_auth)  # idempotent
    assert again.status_code == 200 and again.json()["version"] == 1
    cid_view = (await http.post(path(ticket, "/accept"), headers=cid_auth)).json()
    assert cid_view["status"] in ("queued", "matched") and cid_view["accepted"] == [ann, bob, cid]
    assert cid_view["created_at"] > bob_view["created_at"] == ticket["created_at"]  # it waits from its last acceptance
    views = {player: await wait_for(http, auth, cid_view, "matched")
             for player, auth in ((ann, ann_auth), (bob, bob_auth), (cid, cid_auth))}
    assignments = [view["assignment"] for view in views.values()]
    assert len({a["match_id"] for a in assignments}) == 1 and len({a["token"] for a in assignments}) == 3
    after = await http.post(path(ticket, "/accept"), headers=cid_auth)  # accepted already: the ticket as it is
    assert (after.status_code, after.json()["status"]) == (200, "matched")
    async with MatchClient(assignments[0]["ws_url"], assignments[0]["token"]) as ann_client, \
            MatchClient(assignments[1]["ws_url"], assignments[1]["token"]) as bob_client, \
            MatchClient(assignments[2]["ws_url"], assignments[2]["token"]) as cid_client:
        welcomes = [await client.receive() for client in (ann_client, bob_client, cid_client)]
    assert all(isinstance(w, Welcome) for w in welcomes) and [w.player for w in welcomes] == [ann, bob, cid]


async def test_accepting_checks_the_members_limits_then_and_a_declined_ticket_cannot_be_accepted(server, http):
    (ann, ann_auth), (bob, bob_auth) = await guest(http), await guest(http)
    own = await queue(http, bob_auth, "squad")
    invitation = await queue(http, ann_auth, "squad", party=[ann, bob])
    refused = await http.post(path(invitation, "/accept"), headers=bob_auth)
    assert (refused.status_code, refused.json()["code"]) == (409, "already_queued")
    assert f"(ticket {own['ticket_id']})" in refused.json()["detail"]
    await queue(http, bob_auth, "ranked")
    await queue(http, bob_auth, "refill")
    await http.delete(path(own), headers=bob_auth)
    await queue(http, bob_auth, "duel")  # three again, none in squad
    refused = await http.post(path(invitation, "/accept"), headers=bob_auth)
    assert (refused.status_code, refused.json()["code"]) == (429, "too_many_tickets")
    unchanged = (await http.get(path(invitation), headers=ann_auth)).json()
    assert (unchanged["status"], unchanged["accepted"], unchanged["version"]) == ("pending", [ann], 0)
    declined = (await http.delete(path(invitation), headers=bob_auth)).json()
    assert (declined["status"], declined["reason"]) == ("cancelled", f"declined by {bob}")
    answer = await http.post(path(invitation, "/accept"), headers=bob_auth)
    assert (answer.status_code, answer.json()["code"]) == (409, "not_pending")
    assert (await queue(http, ann_auth, "squad"))["status"] == "queued"  # ann's pending ticket counted for her


async def test_a_player_is_named_in_a_bounded_number_of_unaccepted_tickets(server, http):
    victim, victim_auth = await guest(http)
    queues = ["squad", "ranked", "refill", "duel", "hasty", "trios"]
    for n in range(MAX_INVITATIONS):  # a griefer holds three tickets: a few griefers
        if n % 3 == 0:
            griefer, griefer_auth = await guest(http)
        await queue(http, griefer_auth, queues[n % len(queues)], party=[griefer, victim])
    griefer, griefer_auth = await guest(http)
    answer = await http.post("/v1/tickets", json={"queue": "squad", "party": [griefer, victim]}, headers=griefer_auth)
    assert (answer.status_code, answer.json()["code"]) == (429, "too_many_invitations")
    assert victim in answer.json()["detail"]
    listed = (await http.get("/v1/tickets", params={"limit": 100}, headers=victim_auth)).json()
    assert len(listed) == MAX_INVITATIONS and [t["created_at"] for t in listed] == sorted(
        (t["created_at"] for t in listed), reverse=True)  # newest first
    assert len((await http.get("/v1/tickets", params={"limit": 5}, headers=victim_auth)).json()) == 5
    await http.delete(path(listed[0]), headers=victim_auth)  # declining one makes room for one
    assert (await queue(http, griefer_auth, "squad", party=[griefer, victim]))["status"] == "pending"
    assert (await queue(http, victim_auth, "squad"))["status"] == "queued"  # her own queueing: untouched
    for params in ({"status": "waiting"}, {"limit": 0}, {"limit": 101}, {"limit": "1e1"}):
        answer = await http.get("/v1/tickets", params=params, headers=victim_auth)
        assert (answer.status_code, answer.json()["code"]) == (422, "invalid_request"), params


async def test_the_python_client_creates_lists_and_accepts_a_party_ticket(server):
    async with ArbiterHTTP(server.http_url) as ann, ArbiterHTTP(server.http_url) as bob:
        await ann.guest()
        await bob.guest()
        assignments = {}

        async def ann_plays():
            assignments["ann"] = await ann.matchmake("duel", party=[ann.player_id, bob.player_id], timeout_s=20)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ann_plays)
            with trio.fail_after(10):
                while not (invitations := await bob.list_tickets(status="pending")):
                    await trio.sleep(0.05)
            accepted = await bob.accept_ticket(invitations[0]["ticket_id"])
            assert accepted["accepted"] == [ann.player_id, bob.player_id]
        bob_view = await bob.ticket(invitations[0]["ticket_id"])
        assert bob_view["status"] == "matched" and bob_view["assignment"]["match_id"] == assignments["ann"]["match_id"]


# -- expiry, under a mock clock ---------------------------------------------------------------------------


class NoPlacement:
    """Nothing is placed in these tests: a party of two in a queue of four never forms."""

    def token(self, match_id, player, role="player", ttl_s=None):
        return f"token-{player}", 0.0

    def ws_url(self, match_id):
        return "ws://127.0.0.1:1/v1/matches/" + match_id


async def test_a_party_ticket_not_accepted_in_time_expires_not_accepted(nursery, autojump_clock):
    wall = lambda: 1.8e9 + trio.current_time()  # noqa: E731
    matchmaker = Matchmaker({"squad": mode("squad", "arena", (4, 4), accept_s=10.0)}, NoPlacement(), clock=wall)
    await nursery.start(matchmaker.run)
    auth = PlayerAuth(secret=b"s" * 32, guests=True)
    app = App(matchmaking_routes(matchmaker, auth, matchmaker.placement, None, wall, lambda _request: False))
    listening = await nursery.start(serve, app, "127.0.0.1", 0)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{listening.port}", timeout=None) as http:
        (ann, ann_auth), (bob, bob_auth), (cid, cid_auth) = await guest(http), await guest(http), await guest(http)
        ticket = await queue(http, ann_auth, "squad", party=[ann, bob, cid])
        accepted = (await http.post(path(ticket, "/accept"), headers=bob_auth)).json()
        with trio.fail_after(100):
            answer = await http.get(path(ticket), params={"wait_s": 60, "version": accepted["version"]},
                                    headers=cid_auth)
        expired = answer.json()
        assert (expired["status"], expired["reason"], expired["accept_by"]) == ("expired", "not_accepted", None)
        assert ticket["accept_by"] <= wall() <= ticket["accept_by"] + 1.0  # within a pass interval of its window
        assert ticket["accept_by"] == pytest.approx(ticket["created_at"] + 10.0)
        assert expired["wait_s"] == 0 and expired["accepted"] == [ann, bob]
        answer = await http.post(path(ticket, "/accept"), headers=cid_auth)
        assert (answer.status_code, answer.json()["code"]) == (409, "not_pending")
        for auth_headers in (ann_auth, bob_auth, cid_auth):  # nobody holds it any more
            assert (await queue(http, auth_headers, "squad"))["status"] == "queued"
