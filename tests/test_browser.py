"""The web UI in real Chromium (Debian's /usr/bin/chromium through Playwright) against `vtr serve`."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests import home as fixtures
from tests.live import stop

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-test-token"
XSS_CAPTION = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> a yellow square'
SCREENSHOT = Path(os.environ.get("VTR_SCREENSHOT", "/tmp/vtr-ui.png"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(search_home, tmp_path_factory):
    """`vtr serve` in a child process over a copy of the home, on a free port; stopped afterwards."""
    home = tmp_path_factory.mktemp("browser") / "home"
    shutil.copytree(search_home["home"].root, home)
    port = free_port()
    env = {**os.environ, "VTR_RATE_LIMIT": "0", "VTR_ADMIN_TOKEN": TOKEN}
    vtr = Path(sys.executable).with_name("vtr")
    cmd = [str(vtr), "serve", "--home", str(home), "--port", str(port), "--threads", "4", "--model", fixtures.MODEL]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vtr serve exited early:\n{proc.stdout.read()}")
            try:
                if requests.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vtr serve did not come up in 90 s")
            time.sleep(0.3)
        added = requests.post(
            f"{base}/api/v1/texts", json={"texts": [XSS_CAPTION]}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert added.status_code == 201
        yield base
    finally:
        stop(proc)
        proc.stdout.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.goto(server + "/")
    pg.wait_for_function("() => document.querySelector('#stats').textContent !== ''")  # settings loaded
    yield pg
    context.close()
    assert not errors, errors


def search(page, text: str) -> None:
    page.fill("#q", text)
    page.press("#q", "Enter")
    page.wait_for_selector("#status.ok, #status.empty, #status.error")


def test_search_shows_results_with_thumbnails(page, server):
    search(page, "a red circle moves left")
    cards = page.locator("#results li.hit")
    assert cards.count() == 24
    status = page.text_content("#status")
    assert "24 results" in status and "a red circle moves left" in status
    first = cards.first
    rerank = int(page.is_checked("#rerank"))
    assert rerank == requests.get(f"{server}/api/v1/stats").json()["rerank_default"]
    api = requests.get(
        f"{server}/api/v1/search", params={"q": "a red circle moves left", "k": 24, "rerank": rerank}
    ).json()
    top = api["results"][0]
    assert first.get_attribute("data-clip-id") == str(top["clip_id"])
    assert first.locator(".name").text_content() == Path(top["video_path"]).name
    assert first.locator(".range").text_content().count(":") == 2
    assert first.locator(".score").text_content() == f"{'match' if rerank else 'similarity'} {top['score']:.3f}"
    page.wait_for_function(
        "() => [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"
    )
    assert "q=a+red+circle" in page.url  # shareable URL
    page.screenshot(path=str(SCREENSHOT), full_page=False)


def test_clicking_a_result_plays_the_moment(page, server):
    ranges = []
    page.on("request", lambda r: ranges.append(r.headers.get("range")) if "/media/videos/" in r.url else None)
    search(page, "a yellow square grows")
    hit = page.locator("#results li.hit").nth(1)
    clip_id = hit.get_attribute("data-clip-id")
    clip = requests.get(f"{server}/api/v1/clips/{clip_id}").json()
    hit.locator("button.thumb").click()
    assert page.is_visible("#player")
    src = page.eval_on_selector("#player-video", "v => v.currentSrc")
    assert src.endswith(f"/media/videos/{clip['video_id']}#t={clip['start']:.3f},{clip['end']:.3f}")
    page.wait_for_function("() => document.querySelector('#player-video').readyState >= 2", timeout=20000)
    t = page.eval_on_selector("#player-video", "v => v.currentTime")
    assert clip["start"] - 0.05 <= t <= clip["end"] + 0.05
    assert any(r and r.startswith("bytes=") for r in ranges)  # the browser streams with Range requests
    assert page.text_content("#player-title") == Path(clip["video_path"]).name
    page.keyboard.press("Escape")
    assert page.is_hidden("#player")


def test_more_like_this(page):
    search(page, "a small green cross moving downward")
    card = page.locator("#results li.hit").first
    clip_id = card.get_attribute("data-clip-id")
    card.locator('[data-action="similar"]').click()
    page.wait_for_function("() => document.querySelector('#status').textContent.includes(' like ')")
    page.wait_for_selector("#status.ok")
    assert page.locator("#results li.hit").first.get_attribute("data-clip-id") == clip_id  # itself first


def test_upload_a_clip_for_captions_and_similar_clips(page, server, search_home):
    page.click("#upload-panel summary")
    page.set_input_files("#upload-file", str(search_home["one_second"]))
    page.check('input[name="target"][value="texts"]')
    page.click("#upload-button")
    page.wait_for_selector("#status.ok")
    assert page.is_visible("#text-results") and page.is_hidden("#results")
    captions = page.locator("#text-results li.caption .text").all_text_contents()
    n_texts = requests.get(f"{server}/api/v1/stats").json()["texts"]
    assert len(captions) == min(24, n_texts) and all(captions)
    assert "describing one_second.mp4" in page.text_content("#status")
    page.check('input[name="target"][value="clips"]')
    page.click("#upload-button")
    page.wait_for_function("() => document.querySelector('#status').textContent.includes('like one_second.mp4')")
    first = page.locator("#results li.hit").first
    assert first.locator(".name").text_content() == "one_second.mp4"


def test_group_by_video_and_paging(page):
    page.check("#group-by-video")
    search(page, "a red circle")
    names = page.locator("#results li.hit .name").all_text_contents()
    assert len(names) == len(set(names)) and len(names) == 13  # every video once
    assert page.locator("#results .chip").count() > 0  # other moments are listed
    page.uncheck("#group-by-video")
    page.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 24")
    page.select_option("#k", "12")
    page.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 12")
    page.click("#more")
    page.wait_for_function("() => document.querySelectorAll('#results li.hit').length === 24")
    ids = [c.get_attribute("data-clip-id") for c in page.locator("#results li.hit").all()]
    assert len(set(ids)) == 24


def test_filters_and_empty_state(page, search_home):
    page.fill("#min-duration", "1000")
    search(page, "a red circle")
    assert page.locator("#results li.hit").count() == 0
    assert "No results" in page.text_content("#status")
    page.fill("#min-duration", "")
    page.select_option("#library", label=f"{search_home['lib1']} (8)")
    page.wait_for_function(
        "() => document.querySelectorAll('#results li.hit').length === 16"  # 8 two-second videos
    )


def test_errors_are_shown_and_markup_is_never_rendered(page, tmp_path):
    bad = tmp_path / '<img src=x onerror="window.__xss=3">.mp4'
    bad.write_text("this is not a video")
    page.click("#upload-panel summary")
    page.set_input_files("#upload-file", str(bad))
    page.click("#upload-button")
    page.wait_for_selector("#status.error")
    assert "not a video" in page.text_content("#status")
    search(page, "<b>bold</b> yellow")
    assert page.locator("#status b").count() == 0 and "<b>bold</b>" in page.text_content("#status")
    # a caption full of markup comes back from video->text search as plain text
    page.set_input_files("#upload-file", str(Path(__file__).parent.parent / "webapp" / "static" / "app.js"))
    page.fill("#q", "")
    cards = page.locator("#results li.hit")
    search(page, "a yellow square")
    cards.first.locator('[data-action="similar"]').click()
    page.wait_for_selector("#status.ok")
    assert page.evaluate("() => window.__xss") is None


def test_malicious_caption_is_text(page, server, search_home):
    page.click("#upload-panel summary")
    page.set_input_files("#upload-file", str(search_home["one_second"]))
    page.select_option("#k", "96")
    page.check('input[name="target"][value="texts"]')
    page.click("#upload-button")
    page.wait_for_selector("#status.ok")
    texts = page.locator("#text-results .text").all_text_contents()
    assert XSS_CAPTION in texts
    assert page.locator("#text-results img, #text-results script").count() == 0
    assert page.evaluate("() => window.__xss") is None


def test_keyboard_only(page):
    page.keyboard.press("/")
    assert page.evaluate("() => document.activeElement.id") == "q"
    page.keyboard.type("a yellow square")
    page.keyboard.press("Enter")
    page.wait_for_selector("#status.ok")
    page.focus("#results li.hit button.thumb")
    page.keyboard.press("Enter")
    assert page.is_visible("#player")
    page.keyboard.press("Escape")
    assert page.is_hidden("#player")
    assert page.evaluate("() => document.activeElement.classList.contains('thumb')")  # focus goes back
    # every control can be reached with Tab, from the top of the page
    page.focus(".brand a")
    seen = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        seen.add(page.evaluate("() => document.activeElement.id || document.activeElement.dataset.action || ''"))
    assert {"q", "search-button", "group-by-video", "rerank", "k", "library", "min-duration", "play", "similar"} <= seen
