"""kill -9 a real `vtr index` mid-run, run it again: complete, no duplicates, no orphan vectors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from indexer.pipeline import IndexOptions, run_index
from retrieval.catalog import Catalog
from retrieval.home import DataHome
from retrieval.index import VectorIndex
from retrieval.token_store import TokenStore
from tests.home import indexed_count
from tests.videos import make_library

MODEL = "viclip-tiny-test"
COUNT = 24


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    lib = tmp_path_factory.mktemp("crashlib")
    make_library(lib, count=COUNT, seconds=9, fps=10)
    return lib


def _kill_after(lib, home, videos: int, timeout: float = 120) -> int:
    """Start `vtr index`, SIGKILL it once ``videos`` videos are committed; returns how many were."""
    cmd = [sys.executable, "-c", "from indexer.cli import main; main()", "index", str(lib), "--home", str(home),
           "--model", MODEL, "--workers", "1", "--batch-size", "4", "-q"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = home / "catalog.db"
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if indexed_count(db) >= videos:
                break
            time.sleep(0.005)
        assert proc.poll() is None, "the indexer finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.5)  # orphaned decode workers see their pipes close and exit
    return indexed_count(db)


@pytest.mark.parametrize("kill_at", [1, COUNT // 2])
def test_kill_minus_nine_then_resume(library, tmp_path, kill_at):
    home = tmp_path / "home"
    committed = _kill_after(library, home, kill_at)
    assert kill_at <= committed < COUNT
    h = DataHome(home)
    saved = VectorIndex.load(h.clip_index_path, model=MODEL).ntotal if h.clip_index_path.exists() else 0
    cat = Catalog(h.db_url(), create=False)
    assert saved < cat.stats()["clips"]  # the crash hit between catalog commit and FAISS save

    rep = run_index(IndexOptions(paths=[str(library)], home=str(home), model=MODEL, workers=1, progress=False))
    assert rep.exit_code == 0 and rep.failed == []
    assert rep.unchanged == committed and len(rep.indexed) == COUNT - committed

    videos = cat.list_videos()
    assert len(videos) == COUNT and len({v.path for v in videos}) == COUNT
    assert all(v.status == "indexed" and v.clip_count == 3 for v in videos)  # no half-indexed video
    ids = cat.all_clip_ids()
    assert len(ids) == 3 * COUNT and len(np.unique(ids)) == len(ids)
    index = VectorIndex.load(h.clip_index_path, model=MODEL)
    assert index.ntotal == len(ids) and np.array_equal(index.ids(), ids)  # no orphan, no missing vector
    tokens = TokenStore(h.tokens_dir, readonly=True)
    assert tokens.contains(ids).all()
    assert {int(p.stem) for p in h.thumbs_dir.glob("*.jpg")} == set(ids.tolist())
    # the same clip embeds to the same vector whatever run wrote it
    # (its FAISS vector is the token store's: cosine 1; identical clips of duplicate videos may tie ahead of it)
    scores, hits = index.search(tokens.get_vectors(ids[:5]), len(ids))
    for row_scores, row_hits, cid in zip(scores, hits, ids[:5], strict=True):
        own = row_scores[row_hits == cid]
        assert len(own) == 1 and np.isclose(own[0], 1.0, atol=1e-4) and np.isclose(row_scores[0], own[0], atol=1e-4)
    cat.close()


def test_lost_faiss_file_is_rebuilt_from_the_catalog(library, tmp_path):
    home = tmp_path / "home"
    opts = IndexOptions(paths=[str(library)], home=str(home), model=MODEL, workers=2, progress=False)
    run_index(opts)
    h = DataHome(home)
    ids = VectorIndex.load(h.clip_index_path, model=MODEL).ids()
    h.clip_index_path.unlink()
    h.clip_sidecar_path.unlink()
    rep = run_index(opts)
    assert rep.indexed == [] and rep.unchanged == COUNT
    assert np.array_equal(VectorIndex.load(h.clip_index_path, model=MODEL).ids(), ids)
