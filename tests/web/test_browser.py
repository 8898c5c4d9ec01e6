"""The browser client (clients/web/) end to end: real headless Chromium pages served by a real server
on loopback, playing over real WebSockets.

The server (`run_server`, what `arbiter up` runs) has its own trio loop in a thread: Playwright's sync
API drives the browser from the test's thread and would block a server sharing its loop. Chromium is
Debian's (`/usr/bin/chromium`): Playwright cannot download its own browsers here. `python3 tools/dev.py
test` installs it when it can; where it cannot, these tests fail and say how, never skip.
"""

import queue
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import trio

from gameserver.config import NodeConfig
from gameserver.games import builtin_games
from tools.up import Running, ServerConfig, run_server

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HOW_TO_INSTALL = ("install it with `apt-get install -y chromium` (Debian or Ubuntu, as root), or run the tests "
                  "with `python3 tools/dev.py test`, which does that when it can")
WAIT_MS = 10_000


class ServerThread:
    """`run_server` in a trio loop of its own (any free ports unless given); `stop()` shuts it down cleanly."""

    def __init__(self, data_dir: Path, port: int = 0, ws_port: int = 0):
        self.config = ServerConfig(node=NodeConfig(data_dir=data_dir), games=builtin_games(), port=port,
                                   ws_port=ws_port)
        self._ready: queue.Queue[Running | BaseException] = queue.Queue()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), name="arbiter-server", daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                self._ready.put(await nursery.start(run_server, self.config, self._stop))
        except BaseException as error:
            self._ready.put(error)
            raise

    def start(self) -> Running:
        self._thread.start()
        running = self._ready.get(timeout=30)
        if isinstance(running, BaseException):
            raise RuntimeError("the server did not start") from running
        return running

    def stop(self) -> None:
        if self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            self._thread.join(timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    thread = ServerThread(tmp_path_factory.mktemp("web"))
    running = thread.start()
    yield running
    thread.stop()


@pytest.fixture
def start_server(tmp_path):
    """Start a server of the test's own on `tmp_path` (again on the same ports to restart it); all
    stopped at the end."""
    threads = []

    def start_server(port: int = 0, ws_port: int = 0) -> tuple[ServerThread, Running]:
        threads.append(ServerThread(tmp_path, port, ws_port))
        return threads[-1], threads[-1].start()

    yield start_server
    for thread in threads:
        thread.stop()


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright's Python package: `.venv/bin/pip install -e '.[test]'` "
                    "(or `python3 tools/dev.py test`)", pytrace=False)
    if not CHROMIUM.exists():
        pytest.fail(f"the browser tests need Chromium at {CHROMIUM}: {HOW_TO_INSTALL}", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, server):
    """Open a page (of the module's server unless told) in a browser context of its own: its own guest
    player. At the end, check that no page threw."""
    contexts, errors = [], []

    def open_page(path: str, http_url: str | None = None):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: errors.append(f"{path}: {error}"))
        page.goto((http_url or server.http_url) + path)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == []


def in_match(page) -> str:
    """Wait until the page's client is admitted to its match; its player id."""
    page.wait_for_function("window.arbiter?.client?.status === 'open'")
    return page.evaluate("window.arbiter.client.player")


def wait_for_player(page, player: str, condition: str) -> None:
    """Wait until the page's player table shows `player` with `condition` true of its row's dataset `p`."""
    page.wait_for_function(f"""() => {{
        const row = document.querySelector('#players tr[data-player="{player}"]');
        if (!row) return false;
        const p = Object.fromEntries(Object.entries(row.dataset).map(([k, v]) => [k, k === "player" ? v : +v]));
        return {condition};
    }}""")


def arena_pair(open_page, http_url=None):
    """Alice creates an arena match, Bob joins it by its code: their pages and player ids."""
    alice = open_page("/arena.html", http_url)
    alice.click("#create")
    alice_id = in_match(alice)
    code = alice.locator("#code").text_content()
    assert alice.locator("#share").get_attribute("href").endswith(f"/arena.html?code={code}")
    bob = open_page(f"/arena.html?code={code}", http_url)  # the link the page offers to share
    bob_id = in_match(bob)
    assert alice_id != bob_id
    assert alice.evaluate("window.arbiter.client.welcome.match") == bob.evaluate("window.arbiter.client.welcome.match")
    return alice, alice_id, bob, bob_id


def test_two_browser_players_see_each_other_move_in_arena(open_page):
    alice, alice_id, bob, bob_id = arena_pair(open_page)

    alice.keyboard.down("ArrowRight")
    bob.keyboard.down("w")
    wait_for_player(bob, alice_id, "p.vx === 5 && p.vy === 0")   # bob sees alice move right
    wait_for_player(alice, bob_id, "p.vx === 0 && p.vy === -5")  # and alice sees bob move up
    x = float(bob.locator(f'#players tr[data-player="{alice_id}"]').get_attribute("data-x"))
    wait_for_player(bob, alice_id, f"p.x > {x} || p.x === 1000")
    # Acknowledged: nothing left to resend.
    alice.wait_for_function("window.arbiter.client.acked >= 1 && window.arbiter.client.unacked.size === 0")
    alice.keyboard.up("ArrowRight")
    wait_for_player(bob, alice_id, "p.vx === 0 && p.vy === 0")

    # A dropped connection: the client reconnects, resumes, and resends the input sent meanwhile.
    seq = alice.evaluate("""() => {
        const client = window.arbiter.client;
        client.ws.close(3000, "test: a dropped connection");
        return client.sendInput({dx: 0, dy: 1});   // not sent now: kept, and resent after the welcome
    }""")
    alice.wait_for_function(f"""() => {{ const c = window.arbiter.client;
        return c.reconnects === 1 && c.status === 'open' && c.acked >= {seq} && c.unacked.size === 0; }}""")
    wait_for_player(bob, alice_id, "p.vx === 0 && p.vy === 5")

    # The live list shows the match with its two players.
    match_id = alice.evaluate("window.arbiter.client.welcome.match")
    listing = open_page("/matches.html")
    row = listing.locator(f'#matches tr[data-match-id="{match_id}"]')
    row.wait_for()
    assert "2 / 4" in row.text_content() and "arena" in row.text_content()

    # Leaving for good: the other player sees alice go, and her page is closed for good.
    alice.click("#leave")
    bob.wait_for_function(f"""!document.querySelector('#players tr[data-player="{alice_id}"]')""")
    alice.wait_for_function("window.arbiter.client.status === 'closed'")
    assert alice.evaluate("window.arbiter.client.reconnects") == 1


def test_hundreds_of_inputs_kept_through_a_drop_are_resent_paced_and_all_logged(open_page, server):
    """320 inputs sent while the connection is down: after the reconnect they are resent at the pace
    the welcome's limits allow (back to back, those past the server's burst of 120 were refused as
    rate_limited, and the errors closed the connection: 1008), and every one is in the input log."""
    alice, alice_id, _, _ = arena_pair(open_page)
    assert alice.evaluate("window.arbiter.client.welcome.limits.input_burst") == 120
    last = alice.evaluate("""() => {
        const client = window.arbiter.client;
        window.errors = [];
        client.on("error", (error) => window.errors.push(error));
        client.ws.close(3000, "test: a dropped connection");
        let seq;
        for (let i = 0; i < 320; i++) seq = client.sendInput({dx: (i % 3) - 1, dy: (i % 5) - 2});
        return seq;   // none sent now: kept, and resent after the welcome
    }""")
    assert last == 320
    alice.wait_for_function(f"""() => {{ const c = window.arbiter.client;
        return c.reconnects === 1 && c.status === 'open' && c.acked >= {last} && c.unacked.size === 0; }}""",
                            timeout=60_000)
    assert alice.evaluate("[window.errors, window.arbiter.client.rateLimited]") == [[], []]
    match_id = alice.evaluate("window.arbiter.client.welcome.match")
    logged = httpx.get(f"{server.http_url}/v1/matches/{match_id}/inputs").raise_for_status().json()
    assert logged["players"][alice_id] == [[1, last]]


def test_connect_four_move_through_matchmaking(open_page):
    one, two = open_page("/connect_four.html"), open_page("/connect_four.html")
    one.click("#find")
    two.click("#find")  # the default connect_four queue: two players, so these two
    assert in_match(one) != in_match(two)
    assert one.evaluate("window.arbiter.client.welcome.match") == two.evaluate("window.arbiter.client.welcome.match")
    for page in (one, two):
        page.wait_for_function("/turn/.test(document.getElementById('turn').textContent)")
    first = one if one.evaluate("window.arbiter.client.state.turn === window.arbiter.client.player") else two
    other = two if first is one else one
    first.locator("#turn").filter(has_text="your turn").wait_for()

    first.click('#board button.column[data-column="3"]')
    other.locator('#board .cell[data-row="0"][data-column="3"][data-owner="them"]').wait_for()
    first.locator('#board .cell[data-row="0"][data-column="3"][data-owner="me"]').wait_for()
    other.locator("#turn").filter(has_text="your turn").wait_for()
    other.click('#board .cell[data-row="5"][data-column="3"]')  # any cell of a column plays it
    first.locator('#board .cell[data-row="1"][data-column="3"][data-owner="them"]').wait_for()


def test_arena_players_resume_after_a_server_restart(start_server, open_page):
    first, running = start_server()
    alice, alice_id, bob, bob_id = arena_pair(open_page, running.http_url)
    alice.keyboard.down("ArrowRight")
    wait_for_player(bob, alice_id, "p.vx === 5")
    alice.keyboard.up("ArrowRight")
    wait_for_player(bob, alice_id, "p.vx === 0")
    tick = bob.evaluate("window.arbiter.client.tick")

    first.stop()  # closes every connection with 1001: the clients keep trying
    for page in (alice, bob):
        page.wait_for_function("window.arbiter.client.status === 'reconnecting'")
    seq = alice.evaluate("window.arbiter.client.sendInput({dx: 0, dy: 1})")  # kept while the server is down
    start_server(urlsplit(running.http_url).port, urlsplit(running.ws_url).port)  # the same data and ports

    alice.wait_for_function(f"""() => {{ const c = window.arbiter.client;
        return c.reconnects === 1 && c.status === 'open' && c.acked >= {seq} && c.unacked.size === 0; }}""")
    wait_for_player(bob, alice_id, "p.vx === 0 && p.vy === 5")
    assert bob.evaluate("window.arbiter.client.reconnects") == 1
    assert bob.evaluate("window.arbiter.client.tick") > tick  # the same match, going on from where it was


GUEST_JS = """async () => {
    const { ArbiterHTTP } = await import("/arbiter.js");
    window.http = new ArbiterHTTP();
    return await window.http.guest();
}"""


def test_a_party_invitation_is_found_and_accepted_through_the_browser_client(open_page):
    """arbiter.js: matchmake with a party waits while the ticket is pending; the invited player finds it
    with listTickets and accepts it with acceptTicket."""
    ann, bob = open_page("/index.html"), open_page("/index.html")
    ann_id, bob_id = ann.evaluate(GUEST_JS), bob.evaluate(GUEST_JS)
    ann.evaluate("(party) => { window.matched = window.http.matchmake('connect_four', { party, timeoutS: 20 }); }",
                 [ann_id, bob_id])
    accepted = bob.evaluate("""async () => {
        for (let tries = 0; tries < 200; tries++) {
            const invitations = await window.http.listTickets({ status: "pending" });
            if (invitations.length) return await window.http.acceptTicket(invitations[0].ticket_id);
            await new Promise((resolve) => setTimeout(resolve, 50));
        }
        throw new Error("no invitation");
    }""")
    assert accepted["owner"] == ann_id and accepted["accepted"] == [ann_id, bob_id]
    assignment = ann.evaluate("async () => await window.matched")
    bob_view = bob.evaluate("(id) => window.http.ticket(id, { waitS: 10 })", accepted["ticket_id"])
    assert bob_view["assignment"]["match_id"] == assignment["match_id"]
    assert bob_view["assignment"]["token"] != assignment["token"]
