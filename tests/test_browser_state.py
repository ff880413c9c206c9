"""The web UI's request state, relevance display, guidance, player and filmstrips, in real Chromium.

The server is the real app on waitress on 127.0.0.1 (in this process, so a test can change the
``min_match_probability`` setting of its engine between searches), over a copy of the session's
indexed home, with the tiny test model given a trained-head flag and a constructed calibration
(:class:`RankingParams`), as a shipped model with fitted ranking has: re-ranking is on by default,
and every re-ranked hit has a calibrated ``match_probability``.
"""

from __future__ import annotations

import copy
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import requests

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path("/tmp/vtr-ui-shots")


@pytest.fixture(scope="module")
def calibrated(search_home, tiny, tmp_path_factory):
    """(base URL, engine, home) of a server whose model re-ranks by default and is calibrated."""
    from waitress import create_server

    from retrieval.calibration import RankingParams
    from retrieval.engine import SearchEngine
    from webapp import create_app
    from webapp.state import close_app

    home = tmp_path_factory.mktemp("calibrated") / "home"
    shutil.copytree(search_home["home"].root, home)
    model = copy.deepcopy(tiny[0])
    model.match_head_trained = True
    model.ranking = RankingParams(logit_scale=10.0, match_weight=1.0, fused_platt=(1.0, 0.0), itc_platt=(10.0, -2.0))
    engine = SearchEngine(home, bundle=(model, *tiny[1:]), rerank_k=8, reload_interval=0.0).load()
    app = create_app({"ENGINE": engine, "HOME": str(home), "RATE_LIMIT": 0})
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.effective_port}"
    try:
        yield base, engine, home
    finally:
        server.close()
        thread.join(5)
        close_app(app)


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--autoplay-policy=no-user-gesture-required"]  # fmt: skip
        b = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        yield b
        b.close()


@pytest.fixture
def context(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    ctx.on("weberror", lambda e: errors.append(str(e.error)))
    yield ctx
    ctx.close()
    assert not errors, errors


def searches(page) -> list[dict]:
    """Record every /api/v1/search request the page makes: its query parameters."""
    seen: list[dict] = []
    page.on(
        "request",
        lambda r: (
            seen.append({k: v[0] for k, v in parse_qs(urlparse(r.url).query).items()})
            if "/api/v1/search?" in r.url
            else None
        ),
    )
    return seen


def shown_ids(page) -> list[str]:
    return [c.get_attribute("data-clip-id") for c in page.locator("#results li.hit").all()]


def type_query(page, text: str) -> None:
    page.fill("#q", text)
    page.press("#q", "Enter")


def api_ids(base: str, text: str, k: int, offset: int = 0) -> list[str]:
    body = requests.get(f"{base}/api/v1/search", params={"q": text, "k": k, "offset": offset}).json()
    return [str(h["clip_id"]) for h in body["results"]]


def test_deep_link_ranks_exactly_as_typing(context, calibrated):
    base, engine, _ = calibrated
    assert requests.get(f"{base}/api/v1/stats").json()["rerank_default"] is True

    def slow_stats(route):  # the settings arrive late: the search must wait for them
        resp = route.fetch()
        time.sleep(1.5)
        route.fulfill(response=resp)

    text = "a red circle moves left"
    linked = context.new_page()
    linked.route("**/api/v1/stats", slow_stats)
    linked_requests = searches(linked)
    linked.goto(f"{base}/?q=a+red+circle+moves+left")
    linked.wait_for_selector("#status.ok, #status.nomatch")
    assert linked.is_checked("#rerank")
    typed = context.new_page()
    typed_requests = searches(typed)
    typed.goto(base + "/")
    typed.wait_for_function("() => document.body.dataset.ready === '1'")
    type_query(typed, text)
    typed.wait_for_selector("#status.ok, #status.nomatch")
    assert len(linked_requests) == len(typed_requests) == 1
    assert linked_requests[0] == typed_requests[0] and linked_requests[0]["rerank"] == "1"
    assert shown_ids(linked) == shown_ids(typed) == api_ids(base, text, 24)
    assert linked.input_value("#q") == text


def test_newer_query_cancels_the_older_and_owns_the_paging(context, calibrated):
    base, _, _ = calibrated
    page = context.new_page()
    page.goto(base + "/")
    page.wait_for_function("() => document.body.dataset.ready === '1'")
    page.select_option("#k", "12")
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 700, "downloadThroughput": -1, "uploadThroughput": -1},
    )
    failed = []
    page.on("requestfailed", lambda r: failed.append(r.url) if "/api/v1/search?" in r.url else None)
    first, second = "a yellow square grows", "a blue triangle moves up"
    type_query(page, first)
    page.wait_for_timeout(150)  # the first query is surely in flight (700 ms latency)
    type_query(page, second)
    page.wait_for_selector("#status.ok, #status.nomatch", timeout=20000)
    page.wait_for_timeout(1500)  # an answer to the first query, had it survived, would have arrived by now
    assert second in page.text_content("#status") and first not in page.text_content("#status")
    assert "q=a+blue+triangle" in page.url and page.input_value("#q") == second
    assert shown_ids(page) == api_ids(base, second, 12)
    assert any("yellow+square" in u for u in failed)  # the older request was aborted
    page.click("#more")
    page.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 24", timeout=20000)
    assert shown_ids(page) == api_ids(base, second, 24)  # the second page belongs to the query shown


def _mid_clip_of_long_video(engine, search_home) -> dict:
    from retrieval.synth import read_captions

    rec = read_captions(search_home["lib2"] / "long")[0]
    video = engine.catalog.video_by_path(str(search_home["lib2"] / "long" / rec["path"]))
    return engine.get_video(video.id)["clips"][2]  # a moment with others before and after it


def test_playback_stops_at_the_moments_end(context, calibrated, search_home):
    base, engine, _ = calibrated
    clip = _mid_clip_of_long_video(engine, search_home)
    page = context.new_page()
    page.goto(base + "/")
    page.wait_for_function("() => document.body.dataset.ready === '1'")
    page.select_option("#k", "96")
    type_query(page, "a shape")
    page.wait_for_selector("#status.ok, #status.nomatch")
    card = page.locator(f'#results li.hit[data-clip-id="{clip["clip_id"]}"]')
    card.locator("button.thumb").click()
    page.wait_for_function("() => document.querySelector('#player').dataset.stopped !== undefined", timeout=30000)
    page.wait_for_function("() => !document.querySelector('#player-video').seeking")
    t = page.eval_on_selector("#player-video", "v => v.currentTime")
    frame = 1 / 8  # the synthetic videos run at 8 fps
    assert clip["end"] - frame - 1e-3 <= t <= clip["end"] + 1e-3, (t, clip)
    assert page.eval_on_selector("#player-video", "v => v.paused")
    duration = page.eval_on_selector("#player-video", "v => v.duration")
    mark = page.eval_on_selector("#timeline-moment", "e => [parseFloat(e.style.left), parseFloat(e.style.width)]")
    assert page.is_visible("#timeline-moment")
    assert mark[0] == pytest.approx(100 * clip["start"] / duration, abs=0.5)
    assert mark[1] == pytest.approx(100 * (clip["end"] - clip["start"]) / duration, abs=0.5)
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "player.png"))


def test_no_good_match_is_said_plainly(context, calibrated):
    base, engine, _ = calibrated
    text = "a dog running on the beach"
    best = requests.get(f"{base}/api/v1/search", params={"q": text, "k": 1}).json()["best_match_probability"]
    assert best is not None
    page = context.new_page()
    page.goto(base + "/")
    page.wait_for_function("() => document.body.dataset.ready === '1'")
    saved = engine.min_match_probability
    try:
        engine.min_match_probability = min(1.0, best + 0.01)
        body = requests.get(f"{base}/api/v1/search", params={"q": text}).json()
        assert body["no_good_match"] is True and body["min_match_probability"] == engine.min_match_probability
        type_query(page, text)
        page.wait_for_selector("#status.nomatch")
        assert "No good match" in page.text_content("#status")
        assert page.is_visible("#notice") and "closest results" in page.text_content("#notice-text")
        assert page.locator("#results.weak li.hit").count() > 0  # the closest results, marked as such
        assert page.locator("#notice-examples button").count() > 0  # and queries that work
        SHOTS.mkdir(exist_ok=True)
        page.screenshot(path=str(SHOTS / "no-good-match.png"))
        engine.min_match_probability = 0.0
        type_query(page, "a red circle")
        page.wait_for_selector("#status.ok")
        assert page.is_hidden("#notice") and page.locator("#results.weak").count() == 0
        score = page.locator("#results li.hit .score").first.text_content()
        assert score.startswith("match ") and score.endswith("%")  # the probability is the score shown
    finally:
        engine.min_match_probability = saved


def test_example_queries_come_from_the_caption_corpus(context, calibrated, search_home):
    base, _, _ = calibrated
    page = context.new_page()
    page.goto(base + "/")
    page.wait_for_selector("#examples button")
    examples = page.locator("#examples button").all_text_contents()
    assert examples and set(examples) <= set(search_home["texts"])
    assert page.is_hidden("#model-card")  # the tiny test model has no card
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "home.png"))
    page.locator("#examples button").first.click()
    page.wait_for_selector("#status.ok, #status.nomatch")
    assert page.input_value("#q") == examples[0] and page.is_hidden("#guide")
    assert shown_ids(page) == api_ids(base, examples[0], 24)


def test_filmstrip_scrubs_on_hover_and_with_the_keyboard(context, calibrated):
    base, _, home = calibrated
    page = context.new_page()
    page.goto(base + "/")
    page.wait_for_function("() => document.body.dataset.ready === '1'")
    type_query(page, "a red circle")
    page.wait_for_selector("#status.ok, #status.nomatch")
    card = page.locator("#results li.hit").first
    clip_id = card.get_attribute("data-clip-id")
    assert (Path(home) / "filmstrips" / f"{clip_id}.jpg").is_file()  # written at index time
    thumb = card.locator("button.thumb")
    box = thumb.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.05, box["y"] + box["height"] / 2)
    page.wait_for_function("(el) => el.dataset.frame === '0'", arg=thumb.element_handle())
    frames = int(thumb.get_attribute("data-frames"))
    assert frames == 4  # the tiny test model samples 4 frames per clip
    page.mouse.move(box["x"] + box["width"] * 0.95, box["y"] + box["height"] / 2)
    page.wait_for_function(f"(el) => el.dataset.frame === '{frames - 1}'", arg=thumb.element_handle())
    strip = card.locator(".strip")
    assert strip.is_visible() and "/media/filmstrips/" in strip.evaluate("e => e.style.backgroundImage")
    page.mouse.move(0, 0)
    # keyboard: focus plays the frames; the arrow keys step
    page.focus("#q")
    page.keyboard.press("Tab")
    while page.evaluate("() => document.activeElement.classList.contains('thumb')") is False:
        page.keyboard.press("Tab")
    page.wait_for_function("() => document.activeElement.dataset.frame !== undefined")
    page.keyboard.press("ArrowRight")
    f1 = int(page.evaluate("() => document.activeElement.dataset.frame"))
    page.keyboard.press("ArrowRight")
    assert int(page.evaluate("() => document.activeElement.dataset.frame")) == (f1 + 1) % frames
    page.keyboard.press("ArrowLeft")
    assert int(page.evaluate("() => document.activeElement.dataset.frame")) == f1
    page.keyboard.press("Enter")  # and it still plays the moment
    assert page.is_visible("#player")
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "results.png"))


def test_favicon_and_empty_upload_box(calibrated):
    base, _, _ = calibrated
    resp = requests.get(f"{base}/favicon.ico")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("image/svg+xml")
