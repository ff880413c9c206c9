"""`vtr demo`'s pipeline on a small library: generate, index (the real `vtr index`), load captions."""

from __future__ import annotations

import json

from click.testing import CliRunner

from retrieval.engine import SearchEngine
from retrieval.synth import read_captions
from webapp.cli import demo, search


def test_demo_builds_a_searchable_library(tmp_path):
    root = tmp_path / "demo"
    runner = CliRunner()
    res = runner.invoke(demo, ["--dir", str(root), "--clips", "6", "--long", "1", "--no-serve"])
    assert res.exit_code == 0, res.output
    assert "demo ready: 7 videos" in res.output and "try these searches:" in res.output
    short = read_captions(root / "library" / "clips")
    (long_rec,) = read_captions(root / "library" / "long")
    examples = res.output.split("try these searches:\n")[1].splitlines()
    examples = [line.strip() for line in examples if line.startswith("  ")]
    corpus = {r["caption"] for r in short} | {e["caption"] for e in long_rec["events"]}
    assert examples and set(examples) <= corpus  # checked captions of the library
    assert json.loads((root / "home" / "examples.json").read_text())["examples"] == examples
    assert "from the command line: " in res.output and "vtr search --home" in res.output

    engine = SearchEngine(root / "home", reload_interval=0.0)
    stats = engine.stats()
    n_events = len(long_rec["events"])
    assert stats["videos"] == 7 and stats["failed"] == 0
    assert stats["clips"] == 6 + n_events  # 2-second clips: one per short clip, one per event
    assert stats["texts"] == len({r["caption"] for r in short} | {e["caption"] for e in long_rec["events"]})
    assert stats["model"] == "viclip-tiny-synth"
    hits = engine.search_text(examples[0], k=3)["results"]
    assert len(hits) == 3 and all(h["video_path"].startswith(str(root / "library")) for h in hits)
    where = {str(root / "library" / "clips" / r["path"]): r["caption"] for r in short}
    for text in examples:  # every printed example finds a right clip first
        top = engine.search_text(text, k=1)["results"][0]
        if top["video_path"] in where:
            assert where[top["video_path"]] == text or text in corpus
    assert "no_good_match" in engine.search_text(examples[0], k=1)
    long_clips = engine.get_video(engine.catalog.video_by_path(str(root / "library" / "long" / long_rec["path"])).id)[
        "clips"
    ]
    assert [round(c["start"]) for c in long_clips] == [round(e["start"]) for e in long_rec["events"]]
    engine.close()

    # the printed command-line search works as printed
    out = runner.invoke(search, ["--home", str(root / "home"), examples[0], "--json", "-k", "2"])
    assert out.exit_code == 0, out.output
    assert len(json.loads(out.output)["results"]) == 2

    # a second run keeps the library and re-indexes nothing
    again = runner.invoke(demo, ["--dir", str(root), "--clips", "6", "--long", "1", "--no-serve"])
    assert again.exit_code == 0 and "generating" not in again.output
    assert SearchEngine(root / "home").stats()["clips"] == stats["clips"]
