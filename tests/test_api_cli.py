"""`vtr search` and `vtr serve` through the real `vtr` group (CliRunner), over the indexed test home."""

from __future__ import annotations

import json
import socket

import pytest
from click.testing import CliRunner

from indexer.cli import main


@pytest.fixture(scope="module")
def vtr(search_home):
    runner = CliRunner()
    home = str(search_home["home"].root)

    def run(*args):
        return runner.invoke(main, [*args[:1], "--home", home, *args[1:]])

    return run


def test_text_search_table(vtr, search_home):
    res = vtr("search", "a red circle moves left", "-k", "4")
    assert res.exit_code == 0, res.output
    lines = [line for line in res.output.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert [int(line.split()[0]) for line in lines] == [1, 2, 3, 4]
    assert all(str(search_home["lib1"]) in line or str(search_home["lib2"]) in line for line in lines)
    assert all("(clip " in line for line in lines)


def test_text_search_json_matches_the_engine(vtr, search_home, tiny):
    res = vtr("search", "a yellow square grows", "--json", "-k", "5", "--offset", "2", "--rerank", "--rerank-k", "6")
    assert res.exit_code == 0, res.output
    body = json.loads(res.output)
    from retrieval.engine import SearchEngine

    eng = SearchEngine(search_home["home"], bundle=tiny, rerank_k=6)
    want = eng.search_text("a yellow square grows", k=5, offset=2, rerank=True)
    assert [h["clip_id"] for h in body["results"]] == [h["clip_id"] for h in want["results"]]
    assert body["reranked"] == 6
    eng.close()


def test_video_and_clip_queries(vtr, search_home):
    path = search_home["one_second"]
    (cid,) = search_home["clip_ids"][str(path)]
    res = vtr("search", "--video", str(path), "--target", "clips", "--json", "-k", "1")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["results"][0]["clip_id"] == cid
    texts = vtr("search", "--video", str(path), "-k", "3")  # default target for a file: captions
    assert texts.exit_code == 0 and len([ln for ln in texts.output.splitlines() if ln.strip()[:1].isdigit()]) == 3
    clip = vtr("search", "--clip", str(cid), "--json", "-k", "2")
    assert json.loads(clip.output)["results"][0]["clip_id"] == cid
    grouped = vtr("search", "a red circle", "--group-by-video", "-k", "3")
    assert grouped.exit_code == 0 and " also " in grouped.output


def test_filters(vtr, search_home):
    lib2 = str(search_home["lib2"])
    res = vtr("search", "a", "--library", lib2, "--min-duration", "2.5", "--max-duration", "100", "--json", "-k", "50")
    hits = json.loads(res.output)["results"]
    assert hits and all(h["video_path"].startswith(lib2) for h in hits)
    res = vtr("search", "a", "--path-prefix", lib2 + "/barcodes", "--json")
    assert all("/barcodes/" in h["video_path"] for h in json.loads(res.output)["results"])


@pytest.mark.parametrize(
    "args",
    [
        ("search",),
        ("search", "text", "--video", "x.mp4"),
        ("search", "text", "--target", "texts"),
        ("search", "text", "-k", "0"),
        ("search", "text", "-k", "1001"),
        ("search", "--clip", "-3"),
    ],
)
def test_usage_errors_exit_2(vtr, args):
    res = vtr(*args)
    assert res.exit_code == 2, res.output


def test_user_errors_exit_1_with_a_message(vtr, tmp_path):
    res = vtr("search", "x", "--library", "/not/a/library")
    assert res.exit_code == 1 and res.output.startswith("error: no library")
    res = vtr("search", "--clip", "999999")
    assert res.exit_code == 1 and "no clip with id 999999" in res.output
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    res = vtr("search", "--video", str(bad))
    assert res.exit_code == 1 and "not a video" in res.output
    res = CliRunner().invoke(main, ["search", "x", "--home", str(tmp_path / "nothing")])
    assert res.exit_code == 1 and "no catalog" in res.output


def test_serve_on_a_busy_port_is_a_clear_error(vtr):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = vtr("serve", "--port", str(port), "--threads", "2")
    assert res.exit_code == 1, res.output
    assert f"cannot listen on 127.0.0.1:{port}" in res.output


def test_every_web_command_is_registered_with_vtr():
    """An installed `vtr` finds the web app's commands only through setup.cfg's ``vtr.commands`` entry points."""
    import configparser
    from pathlib import Path

    from webapp.cli import standalone

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    lines = cfg["options.entry_points"]["vtr.commands"].strip().splitlines()
    registered = dict(line.replace(" ", "").split("=") for line in lines)
    assert registered == {name: f"webapp.cli:{cmd.callback.__name__}" for name, cmd in standalone.commands.items()}
