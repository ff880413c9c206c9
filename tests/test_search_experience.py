"""Relevance (no_good_match), suggestions, relative paths, a server on an empty home, CLI start-up without torch."""

from __future__ import annotations

import copy
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests import home as fixtures
from tests.live import stop

VTR = str(Path(sys.executable).with_name("vtr"))


@pytest.fixture(scope="module")
def calibrated_engine(search_home, tiny):
    from retrieval.calibration import RankingParams
    from retrieval.engine import SearchEngine

    model = copy.deepcopy(tiny[0])
    model.match_head_trained = True
    model.ranking = RankingParams(logit_scale=10.0, match_weight=1.0, fused_platt=(1.0, 0.0), itc_platt=(10.0, -2.0))
    eng = SearchEngine(search_home["home"], bundle=(model, *tiny[1:]), rerank_k=8, reload_interval=0.0)
    yield eng
    eng.close()


def test_no_good_match_follows_the_best_hits_probability(calibrated_engine, search_home):
    eng = calibrated_engine
    body = eng.search_text("a red circle", k=5)
    best = body["results"][0]["match_probability"]
    assert best is not None and body["best_match_probability"] == best
    eng.min_match_probability = best + 1e-3
    assert eng.search_text("a red circle", k=5)["no_good_match"] is True
    assert eng.search_text("a red circle", k=5, offset=2)["no_good_match"] is True  # the best hit, not the page's
    eng.min_match_probability = max(0.0, best - 1e-3)
    assert eng.search_text("a red circle", k=5)["no_good_match"] is False
    # video->clips has no probability: null, not a guess
    assert eng.search_video(path=search_home["one_second"], target="clips", k=3)["no_good_match"] is None
    eng.min_match_probability = 0.5


def test_uncalibrated_plain_hits_have_no_verdict(engine):
    body = engine.search_text("a red circle", k=3, rerank=False)
    assert body["results"][0]["match_probability"] is None and body["no_good_match"] is None


def test_suggestions_come_from_the_corpus_and_the_model_card(engine, search_home):
    from retrieval.model_card import model_card

    s = engine.suggestions(4)
    assert 0 < len(s["examples"]) <= 4 and set(s["examples"]) <= set(search_home["texts"])
    assert s["verified"] is False and s["model_card"] is None  # the tiny test model has no card
    card = model_card("viclip-tiny-synth")
    assert "red" in card["vocabulary"]["colours"] and "circle" in card["vocabulary"]["shapes"]


def test_relative_paths_hide_server_paths(engine, search_home):
    from webapp import create_app

    app = create_app({"ENGINE": engine, "HOME": str(search_home["home"].root), "RELATIVE_PATHS": True})
    client = app.test_client()
    hits = client.get("/api/v1/search", query_string={"q": "a red circle", "k": 5}).get_json()["results"]
    assert hits and all(not h["video_path"].startswith("/") for h in hits)
    assert all(h["video_path"].split("/")[0] in ("lib1", "lib2") for h in hits)
    libs = client.get("/api/v1/stats").get_json()["libraries"]
    assert sorted(lib["root"] for lib in libs) == ["lib1", "lib2"]
    for url in ("/favicon.ico", hits[0]["filmstrip_url"]):
        resp = client.get(url)
        assert resp.status_code == 200
        resp.close()


def test_long_video_caption_names_the_background_once():
    from retrieval.synth.generate import _long_video

    caption = _long_video(0, 0)[1]["caption"]
    for dangling in (" against,", " over,", " on,"):
        assert dangling not in caption and not caption.endswith(dangling[:-1])


@pytest.mark.parametrize("args", [["--help"], ["status", "--home", "HOME"], ["search", "--help"]])
def test_commands_that_need_no_model_do_not_import_torch(args, search_home):
    args = [str(search_home["home"].root) if a == "HOME" else a for a in args]
    code = (
        "import sys; sys.argv = ['vtr'] + sys.argv[1:]\n"
        "from indexer.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules or 'open_clip' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert out.stderr.strip().endswith("NO-TORCH"), out.stderr


def test_status_says_library_in_the_singular(tmp_path, search_home):
    out = subprocess.run([VTR, "status", "--home", str(search_home["home"].root)], capture_output=True, text=True)
    assert "(2 libraries," in out.stdout


def test_search_finds_the_demo_home_without_home(tmp_path, search_home):
    import shutil

    shutil.copytree(search_home["home"].root, tmp_path / "demo-data" / "home")
    env = {k: v for k, v in os.environ.items() if k not in ("VTR_HOME", "VTR_DB")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")  # no default home here
    out = subprocess.run([VTR, "status", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0 and str(tmp_path / "demo-data" / "home") in out.stdout


def test_video_search_on_an_empty_corpus_says_what_to_do(tmp_path, search_home):
    import shutil

    from retrieval.engine import SearchEngine

    home = tmp_path / "home"
    shutil.copytree(search_home["home"].root, home)
    eng = SearchEngine(home, model=fixtures.MODEL)
    ids = eng.catalog.all_text_ids()
    eng.close()

    (home / "index" / "texts.faiss").unlink(missing_ok=True)
    import sqlite3

    with sqlite3.connect(home / "catalog.db") as db:
        db.execute("DELETE FROM texts")
    assert len(ids)
    out = subprocess.run(
        [VTR, "search", "--home", str(home), "--video", str(search_home["one_second"]), "--model", fixtures.MODEL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "vtr texts add" in out.stdout and "--target clips" in out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_on_a_new_home_and_the_admin_api_fills_it(tmp_path, search_home):
    home, port = tmp_path / "new-home", _free_port()
    env = {**os.environ, "VTR_ADMIN_TOKEN": "t", "VTR_INDEX_ROOTS": str(search_home["lib1"]), "VTR_RATE_LIMIT": "0"}
    cmd = [VTR, "serve", "--home", str(home), "--port", str(port), "--model", fixtures.MODEL, "--threads", "2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if requests.get(f"{base}/api/v1/health", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.3)
        stats = requests.get(f"{base}/api/v1/stats").json()
        assert stats["clips"] == 0 and "nothing indexed yet" in stats["message"]
        assert requests.get(f"{base}/api/v1/search", params={"q": "a red circle"}).json()["results"] == []
        assert requests.get(f"{base}/").status_code == 200
        job = requests.post(
            f"{base}/api/v1/index", json={"path": str(search_home["lib1"])}, headers={"Authorization": "Bearer t"}
        ).json()
        deadline = time.monotonic() + 180
        while requests.get(f"{base}{job['status_url']}", headers={"Authorization": "Bearer t"}).json()["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        deadline = time.monotonic() + 30
        while requests.get(f"{base}/api/v1/stats").json()["clips"] == 0:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        hits = requests.get(f"{base}/api/v1/search", params={"q": "a red circle", "k": 3}).json()["results"]
        assert len(hits) == 3 and requests.get(f"{base}/api/v1/stats").json()["message"] is None
    finally:
        stop(proc)
        proc.stdout.close()
