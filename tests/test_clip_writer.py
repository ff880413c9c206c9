"""retrieval.clip_writer (the one write path for clips) and retrieval.reconcile, without a model."""

from __future__ import annotations

import numpy as np

from retrieval.catalog import Catalog, ClipSpan, VideoMeta
from retrieval.clip_writer import ClipSink, PendingVideo, remove_videos
from retrieval.home import DataHome
from retrieval.index import VectorIndex
from retrieval.token_store import StoreLayout

LAYOUT = StoreLayout("m", n_tokens=2, width=3, dim=4)


def _video(path: str, n: int, seed: int) -> PendingVideo:
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal((n, 4)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    meta = VideoMeta(root="/lib", path=path, size=1, mtime_ns=1, fingerprint="f", model="m")
    spans = [ClipSpan(i, float(i), i + 1.0, i * 10, i * 10 + 10, True) for i in range(n)]
    return PendingVideo(meta, spans, vec, rng.standard_normal((n, 2, 3)), [b"\xff\xd8jpeg"] * n)


def _sink(tmp_path):
    home = DataHome(tmp_path / "home")
    catalog = Catalog(home.db_url())
    return home, catalog, ClipSink(home, catalog, model_name="m", layout=LAYOUT, factory="Flat")


def test_write_then_remove_keeps_catalog_faiss_tokens_and_thumbnails_in_step(tmp_path):
    home, catalog, sink = _sink(tmp_path)
    ids_a, ids_b = sink.write([_video("/lib/a.mp4", 2, 0), _video("/lib/b.mp4", 3, 1)])
    assert sorted(sink.index.ids().tolist()) == sorted(ids_a + ids_b) == catalog.all_clip_ids().tolist()
    assert sink.tokens.contains(ids_a + ids_b).all()
    assert all(home.thumbnail_path(c).is_file() for c in ids_a + ids_b)
    assert sink.remove_videos([catalog.video_by_path("/lib/a.mp4").id]) == 2
    assert sorted(sink.index.ids().tolist()) == ids_b == catalog.all_clip_ids().tolist()
    assert not any(home.thumbnail_path(c).exists() for c in ids_a)
    sink.finish()
    assert VectorIndex.load(home.clip_index_path).ntotal == 3
    catalog.close()


def test_reconcile_repairs_faiss_after_a_crash(tmp_path):
    home, catalog, sink = _sink(tmp_path)
    (ids,) = sink.write([_video("/lib/a.mp4", 2, 0)])
    sink.save()
    # a crash after the catalog commit: FAISS on disk misses one clip and holds a stale id
    stale = VectorIndex.create(4, "m", "Flat")
    stale.add(sink.tokens.get_vectors(ids[:1]), np.asarray(ids[:1]))
    stale.add(np.ones((1, 4), np.float32) / 2, np.asarray([999]))
    stale.save(home.clip_index_path)
    (home.thumbs_dir / "999.jpg").write_bytes(b"x")
    _, _, again = _sink(tmp_path)
    rep = again.reconcile()
    assert (rep.index_removed, rep.index_added, rep.thumbnails_removed) == (1, 1, 1)
    assert sorted(again.index.ids().tolist()) == ids
    catalog.close()


def test_remove_videos_without_an_index_still_commits_the_catalog(tmp_path):
    home, catalog, sink = _sink(tmp_path)
    (ids,) = sink.write([_video("/lib/a.mp4", 1, 0)])
    assert remove_videos(home, catalog, [catalog.video_by_path("/lib/a.mp4").id], None) == ids
    assert catalog.all_clip_ids().tolist() == [] and not home.thumbnail_path(ids[0]).exists()
    catalog.close()
