"""What the matchmaking API's tests over real loopback sockets share: the queues of a test server, starting
one (`arbiter up` in this process, on port 0), guest players, queueing and waiting for a ticket's status."""

import math

import httpx
import pytest
import trio

from gameserver.config import NodeConfig
from gameserver.games.arena import Arena
from gameserver.games.connect_four import ConnectFour
from matchmaker.queues import Mode
from matchmaker.tickets import PlayerCount, QueueConfig, SkillWindow
from tools.up import ServerConfig, run_server


class BackfillArena(Arena):
    name = "bf_arena"
    backfill = True
    reconnect_grace_s = 0.2


def mode(queue, game, players, *, max_wait_s=math.inf, hold=5.0, skill=None, start_short=False, accept_s=60.0):
    return Mode(QueueConfig(queue=queue, players=PlayerCount(*players), max_wait_s=max_wait_s, skill=skill,
                            start_short=start_short), game, {}, seat_hold_s=hold, backfill_hold_s=hold,
                party_accept_s=accept_s)


QUEUES = {
    "duel": mode("duel", "arena", (2, 2)),
    "hasty": mode("hasty", "arena", (2, 2), hold=1.0),
    "lonely": mode("lonely", "arena", (2, 4), max_wait_s=0.3),
    "ranked": mode("ranked", "connect_four", (2, 2), skill=SkillWindow(initial=100)),
    "refill": mode("refill", "bf_arena", (2, 2), hold=2.0),
    "squad": mode("squad", "arena", (4, 4)),  # a party of two stays queued
    "trios": mode("trios", "arena", (3, 3)),
}


async def start_arbiter(nursery, data_dir, queues=QUEUES):
    """A server with `queues` on loopback (port 0): (its Running, the event that stops it)."""
    stop = trio.Event()
    config = ServerConfig(node=NodeConfig(data_dir=data_dir), port=0, ws_port=0, queues=queues,
                          games={"arena": Arena, "connect_four": ConnectFour, "bf_arena": BackfillArena})
    return await nursery.start(run_server, config, stop), stop


@pytest.fixture
async def server(tmp_path, nursery):
    """A test server with QUEUES (its Running), stopped after the test. Tests import this fixture."""
    running, stop = await start_arbiter(nursery, tmp_path)
    yield running
    stop.set()


@pytest.fixture
async def http(server):
    """An HTTP client of `server`."""
    async with httpx.AsyncClient(base_url=server.http_url, timeout=30) as client:
        yield client


async def guest(http: httpx.AsyncClient):
    """A new guest player: (its id, the headers that carry its token)."""
    answer = await http.post("/v1/auth/guest")
    assert answer.status_code == 201
    body = answer.json()
    return body["player_id"], {"Authorization": f"Bearer {body['token']}"}


async def queue(http, headers, queue_name, **fields):
    answer = await http.post("/v1/tickets", json={"queue": queue_name, **fields}, headers=headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def wait_for(http, headers, ticket, status, timeout=10):
    """Long-poll the ticket (as the player of `headers`) until it has `status`."""
    with trio.fail_after(timeout):
        while True:
            answer = await http.get(f"/v1/tickets/{ticket['ticket_id']}",
                                    params={"wait_s": 5, "version": ticket["version"]}, headers=headers)
            assert answer.status_code == 200, answer.text
            ticket = answer.json()
            if ticket["status"] == status:
                return ticket
