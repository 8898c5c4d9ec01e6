"""A real `arbiter up` process: where it listens by default, and what a thousand idle connections
cost it (its resident memory, read from /proc)."""

from urllib.parse import urlsplit

import httpx
import pytest
import trio

from abuse_helpers import LOOPBACK_HEX, RawWS, arbiter_up, children_of, listening_addresses, rss_of

pytestmark = pytest.mark.slow

# The documented bound (docs/operations.md#abuse-limits): measured 13.5 KB per authenticated and
# 8.5 KB per unauthenticated connection on Python 3.11 (arbiter bench attack, issue 7).
MAX_BYTES_PER_CONNECTION = 64 * 1024


def test_every_process_of_a_default_server_listens_on_loopback_only(tmp_path):
    with arbiter_up(tmp_path) as ready:
        pids = [ready["pid"], *children_of(ready["pid"])]
        listening = {pid: listening_addresses(pid) for pid in pids}
    assert all(listening.values()), listening  # the HTTP server, and a WebSocket port per process that has one
    addresses = [address for found in listening.values() for address in found]
    assert all(address.split(":")[0] in LOOPBACK_HEX for address in addresses), listening


async def test_a_thousand_idle_connections_cost_a_bounded_amount_of_memory(tmp_path):
    # a connection's cost, not the spectator caps (64 a match, 4 an id by default): raised here
    with arbiter_up(tmp_path, "--workers", "1", "--max-spectators", "1000",
                    "--max-spectator-connections", "1000") as ready:
        pid = ready["pid"]
        grants = []
        async with httpx.AsyncClient(base_url=ready["http_url"]) as http:
            for _ in range(5):  # about 100 spectators a match, all with one token
                match = (await http.post("/v1/matches", json={"game": "connect_four"})).json()
                grants.append((await http.post(f"/v1/matches/{match['match_id']}/tokens",
                                               json={"player_id": "fan", "role": "spectator"})).json())
            held: list[RawWS] = []

            async def open_many(count: int, authenticate: bool) -> None:
                for i in range(count):
                    grant = grants[i % len(grants)]
                    url = urlsplit(grant["ws_url"])
                    ws = await RawWS.connect(url.port, url.path)
                    if authenticate:
                        await ws.auth(grant["token"])
                    held.append(ws)

            with trio.fail_after(120):
                await open_many(50, True)  # first connections pay for what is loaded once
                base = rss_of(pid)
                await open_many(500, True)
                authenticated = rss_of(pid)
                await open_many(500, False)  # they would get 4002 after 10 s; measured before that
                unauthenticated = rss_of(pid)
                health = (await http.get("/healthz")).json()
            assert health["connections"] == 1050
            per_authenticated = (authenticated - base) / 500
            per_unauthenticated = (unauthenticated - authenticated) / 500
            print(f"RSS per connection: authenticated {per_authenticated:.0f} B, "
                  f"unauthenticated {per_unauthenticated:.0f} B")
            assert per_authenticated < MAX_BYTES_PER_CONNECTION
            assert per_unauthenticated < MAX_BYTES_PER_CONNECTION
            for ws in held:
                await ws.aclose()
            # the server serves on: a new player joins one of the matches
            grant = (await http.post(f"/v1/matches/{grants[0]['match_id']}/tokens", json={"player_id": "red"})).json()
            url = urlsplit(grant["ws_url"])
            ws = await RawWS.connect(url.port, url.path)
            assert (await ws.auth(grant["token"]))["player"] == "red"
            await ws.aclose()  # else the server's shutdown waits for this client's closing handshake
