"""A small real data home for the search tests: how it is built (the fixtures are in ``conftest.py``).

Two libraries of real H.264 files, synthetic scenes with captions (``retrieval.synth``) and barcoded
clips of other lengths (``tests.videos``), indexed by the real indexer (``vtr index``'s pipeline)
into 1-second clips with the tiny test model, plus the captions as the text corpus.
"""

from __future__ import annotations

from pathlib import Path

MODEL = "viclip-tiny-test"  # no shipped weights: the indexer and the engine both seed its init with 0
CLIP_SECONDS = 1.0


def indexed_count(db: Path) -> int:
    """Videos committed as indexed in a SQLite catalog that another process may be writing (0 before it exists)."""
    import sqlite3

    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("select count(*) from videos where status='indexed'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # schema not created yet, or locked
        return 0


def index_paths(home, paths: list[Path]) -> dict[str, list[int]]:
    """Run the indexer on ``paths`` into ``home``; returns {video path: [clip ids]} of what it indexed."""
    from indexer.pipeline import IndexOptions, run_index
    from retrieval.catalog import Catalog

    report = run_index(
        IndexOptions(
            paths=[str(p) for p in paths],
            home=str(home.root),
            model=MODEL,
            clip_seconds=CLIP_SECONDS,
            workers=1,
            progress=False,
        )
    )
    assert not report.failed, report.failed
    catalog = Catalog(home.db_url())
    try:
        out = {}
        for path in report.indexed:
            video = catalog.video_by_path(path)
            out[path] = [c.id for c in catalog.clips_of_video(video.id)]
        return out
    finally:
        catalog.close()


def build_home(root: Path) -> dict:
    """Generate the two libraries under ``root`` and index them into ``root/home``."""
    from retrieval.home import DataHome
    from retrieval.synth import generate, read_captions
    from tests.videos import make_library, make_video

    lib1, lib2 = root / "lib1", root / "lib2"
    generate(lib1, 8, seed=1, split="test")
    generate(lib2 / "long", 2, seed=1, split="test", long=True)
    make_library(lib2 / "barcodes", count=2, seconds=3.0, fps=10)
    one = make_video(lib2 / "one_second.mp4", seconds=1.0, fps=10, color=(250, 250, 20))  # exactly one clip
    captions = read_captions(lib1)
    long_caps = read_captions(lib2 / "long")
    home = DataHome(root / "home")
    clip_ids = index_paths(home, [lib1, lib2])
    texts = [r["caption"] for r in captions] + [e["caption"] for r in long_caps for e in r["events"]]
    return {
        "home": home,
        "lib1": lib1,
        "lib2": lib2,
        "clip_ids": clip_ids,
        "captions": captions,
        "texts": texts,
        "one_second": one,
    }


def make_engine(search_home, tiny, **kw):
    """A SearchEngine over ``search_home`` with the session's tiny model, re-ranking 8, reloading at once."""
    from retrieval.engine import SearchEngine

    kw.setdefault("rerank_k", 8)
    kw.setdefault("reload_interval", 0.0)
    return SearchEngine(search_home["home"], bundle=tiny, **kw)
