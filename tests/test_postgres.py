"""The catalog and the indexer against a real PostgreSQL 15 server started by the test."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tests.videos import make_library, make_zero_byte

pytestmark = pytest.mark.postgres


def test_migrations_on_postgres_match_the_tables(postgres_url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import migrations
    from retrieval.catalog import SCHEMA_REVISION, make_engine, metadata

    assert migrations.upgrade(postgres_url) == SCHEMA_REVISION
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, metadata) == []
        kinds = {r[0]: r[1] for r in conn.execute(sa.text(
            "select column_name, data_type from information_schema.columns where table_name='clips'"))}  # fmt: skip
    engine.dispose()
    assert kinds["id"] == "bigint"  # 64-bit vector ids on PostgreSQL
    assert migrations.upgrade(postgres_url) == SCHEMA_REVISION  # idempotent


def test_catalog_queries_on_postgres(postgres_url):
    from retrieval.catalog import Catalog, ClipSpan, VideoMeta

    cat = Catalog(postgres_url)
    spans = [ClipSpan(i, i * 4.0, i * 4.0 + 4, i * 40, i * 40 + 40, has_thumbnail=True) for i in range(3)]
    metas = [VideoMeta(root="/lib", path=f"/lib/{n}.mp4", size=10, mtime_ns=1, fingerprint="f", duration=d)
             for n, d in (("a_%", 12.0), ("b", 3.0))]  # fmt: skip
    seen = []
    new_ids, old = cat.commit_videos([(metas[0], spans), (metas[1], spans[:1])], lambda ids, old: seen.append(ids))
    assert seen == [new_ids] and old == []
    assert [r.idx for r in cat.clips_by_ids(list(reversed(new_ids[0])))] == [2, 1, 0]
    assert cat.get_clip(new_ids[0][1]).thumbnail == f"thumbs/{new_ids[0][1]}.jpg"
    assert [v.path for v in cat.list_videos(path_prefix="/lib/a_%")] == ["/lib/a_%.mp4"]
    assert [v.path for v in cat.list_videos(min_duration=5)] == ["/lib/a_%.mp4"]
    assert cat.clip_ids(max_duration=5).tolist() == new_ids[1]
    again, old = cat.commit_videos([(metas[0], spans[:2])])
    assert sorted(old) == sorted(new_ids[0]) and min(again[0]) > max(new_ids[1])  # sequences never reuse ids
    new, all_ids = cat.add_texts(["a dog", "a cat", "a dog"], "f.txt")
    assert len(new) == 2 and all_ids[0] == all_ids[2]
    assert cat.stats() == {"videos": 2, "clips": 3, "texts": 2, "failed": 0, "libraries": 1, "duration": 15.0}

    def boom(ids, old):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cat.commit_videos(
            [(VideoMeta(root="/lib", path="/lib/c.mp4", size=1, mtime_ns=1, fingerprint="x"), spans)], boom
        )
    assert cat.video_by_path("/lib/c.mp4") is None
    cat.close()


def test_vtr_index_into_postgres(postgres_url, tmp_path):
    from indexer.cli import main
    from retrieval.catalog import Catalog
    from retrieval.index import VectorIndex

    lib = tmp_path / "lib"
    make_library(lib, count=2, seconds=5)
    make_zero_byte(lib / "empty.mp4")
    home = tmp_path / "home"
    runner = CliRunner()
    args = ["--home", str(home), "--db", postgres_url, "--model", "viclip-tiny-test"]
    res = runner.invoke(main, ["index", str(lib), *args, "--workers", "1", "-q"])
    assert res.exit_code == 1, res.output  # the empty file failed, the rest is committed
    assert not (home / "catalog.db").exists()  # the catalog went to PostgreSQL
    st = json.loads(runner.invoke(main, ["status", "--json", "--home", str(home), "--db", postgres_url]).output)
    assert (st["videos"], st["clips"], st["vectors"]) == (2, 4, 4)
    assert st["failed"] == [{"path": str(lib / "empty.mp4"), "reason": "empty file (0 bytes)"}]
    cat = Catalog(postgres_url, create=False)
    index = VectorIndex.load(home / "index" / "clips.faiss", model="viclip-tiny-test")
    assert np.array_equal(index.ids(), cat.all_clip_ids())
    cat.close()
