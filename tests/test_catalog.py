"""retrieval.catalog on a real SQLite file: writes, query methods, filters, texts, schema checks."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from retrieval.catalog import SCHEMA_REVISION, Catalog, ClipSpan, VideoMeta
from retrieval.errors import NotFound, StoreError
from retrieval.token_store import StoreLayout, TokenStore


def _meta(path, root="/lib", duration=10.0, **kw):
    return VideoMeta(root=root, path=path, size=100, mtime_ns=1, fingerprint="fp", duration=duration, fps=25.0, **kw)


def _spans(n, thumbs=False):
    return [ClipSpan(i, 4.0 * i, 4.0 * i + 4, 100 * i, 100 * i + 100, has_thumbnail=thumbs) for i in range(n)]


@pytest.fixture
def cat(tmp_path):
    c = Catalog(f"sqlite:///{tmp_path / 'sub' / 'catalog.db'}")
    yield c
    c.close()


def test_fresh_database_is_created_in_wal_mode_and_stamped(cat, tmp_path):
    assert cat.schema_revision() == SCHEMA_REVISION
    con = sqlite3.connect(tmp_path / "sub" / "catalog.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    con.close()


def test_commit_and_query_clips(cat):
    (a, b), old = cat.commit_videos(
        [(_meta("/lib/a.mp4"), _spans(3, thumbs=True)), (_meta("/lib/x/b.mp4", duration=3.0), _spans(1))]
    )
    assert old == [] and len(a) == 3 and len(b) == 1
    recs = cat.clips_by_ids([b[0], -1, a[2], 123456, a[0]])  # order kept, unknown ids dropped
    assert [r.id for r in recs] == [b[0], a[2], a[0]]
    r = cat.get_clip(a[1])
    assert (r.path, r.root, r.idx, r.start, r.end, r.duration, r.fps) == ("/lib/a.mp4", "/lib", 1, 4.0, 8.0, 10.0, 25.0)
    assert r.thumbnail == f"thumbs/{a[1]}.jpg" and cat.get_clip(b[0]).thumbnail is None
    assert [c.idx for c in cat.clips_of_video(r.video_id)] == [0, 1, 2]
    with pytest.raises(NotFound):
        cat.get_clip(999999)
    with pytest.raises(NotFound):
        cat.get_video(999999)
    v = cat.video_by_path("/lib/a.mp4")
    assert v.clip_count == 3 and v.status == "indexed" and cat.get_video(v.id).path == "/lib/a.mp4"
    assert cat.stats() == {"videos": 2, "clips": 4, "texts": 0, "failed": 0, "libraries": 1, "duration": 13.0}
    assert cat.libraries() == [{"id": 1, "root": "/lib", "videos": 2, "clips": 4}]


def test_filters(cat):
    cat.commit_videos([
        (_meta("/lib/100%_real.mp4", duration=30.0), _spans(2)),
        (_meta("/lib/100x_real.mp4", duration=5.0), _spans(1)),
        (_meta("/other/c.mp4", root="/other", duration=60.0), _spans(1)),
    ])  # fmt: skip
    paths = lambda **kw: [v.path for v in cat.list_videos(**kw)]  # noqa: E731
    assert paths(path_prefix="/lib/100%") == ["/lib/100%_real.mp4"]  # % and _ are literal, not wildcards
    assert paths(root="/other") == ["/other/c.mp4"]
    assert paths(min_duration=10, max_duration=40) == ["/lib/100%_real.mp4"]
    assert paths(limit=1, offset=1) == ["/lib/100x_real.mp4"]
    assert cat.count_videos(root="/lib") == 2
    ids = cat.clip_ids(root="/lib", min_duration=10)
    assert len(ids) == 2 and ids.dtype == np.int64 and (np.diff(ids) > 0).all()
    assert len(cat.clip_ids()) == 4 and len(cat.clip_ids(path_prefix="/nowhere")) == 0


def test_reindex_replaces_clips_and_ids_are_never_reused(cat):
    (first,), _ = cat.commit_videos([(_meta("/lib/a.mp4"), _spans(3))])
    (second,), old = cat.commit_videos([(_meta("/lib/a.mp4", codec="hevc"), _spans(2))])
    assert sorted(old) == sorted(first) and min(second) > max(first)
    assert cat.video_by_path("/lib/a.mp4").codec == "hevc"
    removed = cat.delete_video(cat.video_by_path("/lib/a.mp4").id)
    assert sorted(removed) == sorted(second) and cat.stats()["clips"] == 0
    (third,), _ = cat.commit_videos([(_meta("/lib/a.mp4"), _spans(1))])
    assert third[0] > max(second)  # AUTOINCREMENT: a stale vector can never point at a new clip


def test_failure_replaces_an_indexed_version(cat):
    (ids,), _ = cat.commit_videos([(_meta("/lib/a.mp4"), _spans(2))])
    old = cat.record_failure(_meta("/lib/a.mp4"), "empty file (0 bytes)")
    assert sorted(old) == sorted(ids)
    assert cat.failed_videos() == [{"path": "/lib/a.mp4", "reason": "empty file (0 bytes)"}]
    assert cat.stats()["videos"] == 0 and cat.stats()["failed"] == 1


def test_a_failing_before_commit_hook_rolls_everything_back(cat, tmp_path):
    store = TokenStore(tmp_path / "tokens", StoreLayout("m", 2, 4, 3))

    def write_tokens_then_die(new_ids, old_ids):
        flat = [i for ids in new_ids for i in ids]
        store.append(flat, np.zeros((len(flat), 3)), np.zeros((len(flat), 2, 4)))
        raise OSError("disk full")

    with pytest.raises(OSError):
        cat.commit_videos([(_meta("/lib/a.mp4"), _spans(2)), (_meta("/lib/b.mp4"), _spans(1))], write_tokens_then_die)
    assert cat.stats()["videos"] == 0 and cat.stats()["clips"] == 0 and cat.all_clip_ids().size == 0
    assert len(store) == 3  # garbage the indexer compacts away; no catalog row points at it


def test_texts_are_deduplicated(cat):
    new, ids = cat.add_texts(["a dog runs", "  a dog runs ", "", "a cat"], source="caps.txt")
    assert len(new) == 2 and ids[0] == ids[1]
    new2, ids2 = cat.add_texts(["a cat", "a bird"], source="more.txt")
    assert len(new2) == 1 and ids2[0] == ids[2]
    assert [t.text for t in cat.texts_by_ids([ids2[1], ids[0], 999])] == ["a bird", "a dog runs"]
    assert cat.texts_by_ids([ids[0]])[0].source == "caps.txt"
    assert cat.all_text_ids().tolist() == sorted(set(ids + ids2))
    assert cat.delete_texts([ids[0]]) == 1 and cat.stats()["texts"] == 2


def test_video_states_and_touch(cat):
    cat.commit_videos([(_meta("/lib/a.mp4", model="m", clip_seconds=4.0, stride=4.0), _spans(1))])
    st = cat.video_states(["/lib/a.mp4", "/lib/none.mp4"])
    assert list(st) == ["/lib/a.mp4"] and st["/lib/a.mp4"]["model"] == "m"
    cat.touch_video(st["/lib/a.mp4"]["id"], 777)
    assert cat.video_states()["/lib/a.mp4"]["mtime_ns"] == 777


def test_schema_checks(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with pytest.raises(StoreError, match="is empty"):
        Catalog(url, create=False)
    Catalog(url).close()
    con = sqlite3.connect(tmp_path / "c.db")
    con.execute("UPDATE alembic_version SET version_num='0000'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="vtr db upgrade"):
        Catalog(url)
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot reach"):
        Catalog(f"sqlite:///{tmp_path / 'dir.db'}")
    with pytest.raises(Exception, match="not a database URL"):
        Catalog("nonsense")


def test_queries_span_several_in_clauses(cat, monkeypatch):
    """Every chunked ``IN (...)`` query gives the same answer when the ids need several chunks."""
    from retrieval import catalog_schema

    monkeypatch.setattr(catalog_schema, "CHUNK", 2)
    paths = [f"/lib/{i}.mp4" for i in range(5)]
    per_video, _ = cat.commit_videos([(_meta(p), _spans(1)) for p in paths])
    ids = [v[0] for v in per_video]
    wanted = [ids[4], ids[0], -1, ids[2], ids[3], ids[1]]
    assert [r.id for r in cat.clips_by_ids(wanted)] == [i for i in wanted if i >= 0]
    assert sorted(cat.video_states(paths[::-1])) == paths
    new, all_ids = cat.add_texts([f"caption {i}" for i in range(5)])
    assert cat.add_texts([f"caption {i}" for i in range(5)]) == ([], all_ids)  # known hashes found across chunks
    assert [t.id for t in cat.texts_by_ids(all_ids[::-1])] == all_ids[::-1]
    assert cat.delete_texts(all_ids) == 5
    removed = cat.delete_videos([cat.get_clip(i).video_id for i in ids])
    assert sorted(removed) == sorted(ids) and cat.stats()["videos"] == 0
