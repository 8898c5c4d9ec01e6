"""The replay viewer (clients/web/replay.html) in headless Chromium against a real server on loopback:
recorded match files in the server's data directory are watched; the tick advances, pause stops it,
seek jumps to the recorded state, and the match list links to the viewer."""

import json

import pytest

from gameserver import storage
from gameserver.alarms import END
from gameserver.games.arena import Arena
from gameserver.games.connect_four import ConnectFour
from gameserver.records import step_record
from gameserver.recovery import create_match_file
from gameserver.simulation import INPUT, JOIN, TIMER, Command
from gameserver.storage import MatchStore
from test_browser import WAIT_MS, ServerThread, browser  # noqa: F401 (browser: the fixture)

pytestmark = pytest.mark.slow

FINISHED = "0" * 26
RUNNING = "1" * 26
FOUR = "2" * 26
PLAYERS = ("p1", "p2", "p3", "p4")


def record(data_dir, match_id, game, batches) -> list[dict]:
    """A match file as the runtime writes it; the state after each tick, from tick 0."""
    path = storage.match_path(data_dir, match_id)
    _meta, sim = create_match_file(path, game, match_id=match_id, params=game.params_type(), seed=3,
                                   snapshot_every=10, now=1000.0)
    states = [json.loads(sim.canonical())]
    store = MatchStore.open(path)
    try:
        for batch in batches:
            step = sim.step(batch, now=1000.0 + sim.tick / 20)
            store.commit_step(step_record(sim, step, 10), now=1000.0 + sim.tick / 20)
            states.append(json.loads(sim.canonical()))
    finally:
        store.close()
    return states


def arena_batches(ticks: int) -> list[list[Command]]:
    batches = [[Command(JOIN, p) for p in PLAYERS]]
    for t in range(1, ticks):
        batches.append([Command(INPUT, p, t, {"dx": (t // 40 + i) % 3 - 1, "dy": (t // 30 + i) % 3 - 1})
                        for i, p in enumerate(PLAYERS)])
    return batches


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A server whose data directory holds a finished and a running arena match and a connect-four
    match: (its URL, the finished arena match's states)."""
    data_dir = tmp_path_factory.mktemp("replay-web")
    states = record(data_dir, FINISHED, Arena(), arena_batches(600) + [[Command(TIMER, "", 0, {"name": END})]])
    record(data_dir, RUNNING, Arena(), arena_batches(100))
    record(data_dir, FOUR, ConnectFour(), [[Command(JOIN, "ann"), Command(JOIN, "bob")],
                                           [Command(INPUT, "ann", 1, {"column": 3})],
                                           [Command(INPUT, "bob", 1, {"column": 3})]])
    thread = ServerThread(data_dir)
    running = thread.start()
    yield running.http_url, states
    thread.stop()


@pytest.fixture
def open_page(browser, recorded):  # noqa: F811 (browser: the fixture imported above)
    contexts, errors = [], []

    def open_page(path: str):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda error: errors.append(f"{path}: {error}"))
        page.goto(recorded[0] + path)
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == []


def tick(page) -> int:
    return page.evaluate("window.replay.client.tick")


def seek(page, value: int) -> None:
    """Drag the timeline to `value` and let go."""
    page.evaluate(f"""() => {{ const timeline = document.getElementById("timeline");
        timeline.value = {value};
        timeline.dispatchEvent(new Event("input"));
        timeline.dispatchEvent(new Event("change")); }}""")


def test_watch_pause_seek_and_play_a_recorded_arena_match(open_page, recorded):
    states = recorded[1]
    page = open_page(f"/replay.html?match={FINISHED}")
    page.wait_for_function("window.replay.client?.status === 'open'")
    assert page.evaluate("window.replay.client.info.last_tick") == 601
    page.wait_for_function("window.replay.client.tick >= 5")  # the tick advances
    page.locator("#players tr").nth(3).wait_for()  # four players in the table, drawn from the state
    assert page.locator("#field").is_visible()
    page.wait_for_function("document.getElementById('tick').textContent >= 5")

    page.click("#play")  # Pause
    page.wait_for_function("window.replay.client.playback.playing === false")
    paused_at = tick(page)
    page.evaluate("""() => { window.statesAfterPause = 0;
        window.replay.client.on("state", () => { window.statesAfterPause += 1; }); }""")
    page.select_option("#speed", "2")  # a control answered after any state the pause let through
    page.wait_for_function("window.replay.client.playback.speed === 2")
    assert page.evaluate("window.statesAfterPause") == 0 and tick(page) == paused_at  # pause stops it
    assert page.locator("#play").text_content() == "Play"

    seek(page, 450)
    page.wait_for_function("window.replay.client.tick === 450")
    assert page.evaluate("window.replay.client.state") == states[450]  # the recorded state at that tick
    assert page.locator("#tick").text_content() == "450"
    row = page.locator('#players tr[data-player="p2"]')
    assert float(row.get_attribute("data-x")) == states[450]["players"]["p2"]["x"]
    assert not page.evaluate("window.replay.client.playback.playing")  # still paused, at the new tick

    page.click("#play")  # Play: on from the tick sought
    page.wait_for_function("window.replay.client.tick > 455")
    seek(page, 598)
    page.wait_for_function("window.replay.client.playback.ended === true")  # 2x: the end comes soon
    assert tick(page) == 601 and page.locator("#play").text_content() == "Replay from the start"


def test_the_match_list_links_to_the_viewer_of_a_running_match(open_page):
    listing = open_page("/matches.html")
    link = listing.locator(f'#matches tr[data-match-id="{RUNNING}"] a.replay')
    link.click()
    listing.wait_for_function("window.replay?.client?.status === 'open'")
    assert listing.evaluate("window.replay.client.info.finished") is False
    assert "(live)" in listing.locator("#last").text_content()
    listing.wait_for_function("window.replay.client.tick >= 3")


def test_a_connect_four_replay_draws_the_board(open_page):
    page = open_page(f"/replay.html?match={FOUR}")
    page.wait_for_function("window.replay.client?.status === 'open'")
    page.wait_for_function("window.replay.client.tick === 3")  # three steps of a match still running
    page.locator('#board .cell[data-row="0"][data-column="3"][data-owner="me"]').wait_for()  # ann's, in red
    page.locator('#board .cell[data-row="1"][data-column="3"][data-owner="them"]').wait_for()
    assert page.locator("#turn").text_content() == "ann's turn, move 3"
    seek(page, 1)
    page.locator('#board .cell[data-row="0"][data-column="3"][data-owner=""]').wait_for()  # before any move
