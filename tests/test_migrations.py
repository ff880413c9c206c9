"""The Alembic migrations produce exactly the tables in retrieval.catalog."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from click.testing import CliRunner

import migrations
from retrieval.catalog import SCHEMA_REVISION, Catalog, make_engine, metadata


def _diff(url):
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
            return compare_metadata(ctx, metadata)
    finally:
        engine.dispose()


def _schema(url):
    """Tables, columns, keys, uniques and indexes as the database reports them (order-free)."""
    engine = make_engine(url)
    insp = sa.inspect(engine)
    out = {}
    for t in insp.get_table_names():
        out[t] = {
            "columns": sorted((c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)),
            "pk": insp.get_pk_constraint(t)["constrained_columns"],
            "fks": sorted(
                (f["name"], tuple(f["constrained_columns"]), f["referred_table"], f["options"].get("ondelete"))
                for f in insp.get_foreign_keys(t)
            ),  # fmt: skip
            "unique": sorted((u["name"], tuple(u["column_names"])) for u in insp.get_unique_constraints(t)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(t)),
        }
    engine.dispose()
    return out


def test_head_is_the_revision_the_catalog_expects():
    assert migrations.head() == SCHEMA_REVISION


def test_migrated_schema_equals_the_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    assert migrations.upgrade(url) == SCHEMA_REVISION
    assert _diff(url) == []
    # and it is the very same DDL the catalog itself creates in an empty database
    created = f"sqlite:///{tmp_path / 'created.db'}"
    Catalog(created).close()
    assert _schema(url) == _schema(created)


def test_upgrade_is_idempotent_and_downgrade_works(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    Catalog(url).close()  # created + stamped by the catalog
    assert migrations.current(url) == SCHEMA_REVISION
    assert migrations.upgrade(url) == SCHEMA_REVISION
    from alembic import command

    cfg = migrations._config(url)
    command.downgrade(cfg, "base")
    assert migrations.current(url) is None
    engine = make_engine(url)
    assert set(sa.inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    assert migrations.upgrade(url) == SCHEMA_REVISION and _diff(url) == []


def test_vtr_db_upgrade_command(tmp_path):
    from indexer.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["db", "upgrade", "--home", str(tmp_path / "home")])
    assert res.exit_code == 0, res.output
    assert f"upgraded from empty to revision {SCHEMA_REVISION}" in res.output
    assert (tmp_path / "home" / "catalog.db").exists()
    res = runner.invoke(main, ["db", "upgrade", "--home", str(tmp_path / "home")])
    assert "already at revision" in res.output
    res = runner.invoke(main, ["db", "current", "--home", str(tmp_path / "home")])
    assert res.output.strip() == f"current {SCHEMA_REVISION}; head {SCHEMA_REVISION}"


def test_upgrade_from_0001_keeps_indexed_videos(tmp_path):
    """A catalog written before frame offsets were recorded keeps its rows; theirs is unknown (NULL)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert migrations.upgrade(url, "0001") == "0001"
    engine = make_engine(url)
    now = "2026-12-01 00:00:00"
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO libraries (id, root, created_at) VALUES (1, '/lib', :t)"), {"t": now})
        conn.execute(
            sa.text(
                "INSERT INTO videos (id, library_id, path, size, mtime_ns, fingerprint, status, created_at, updated_at)"
                " VALUES (1, 1, '/lib/a.mp4', 10, 1, 'fp', 'indexed', :t, :t)"
            ),
            {"t": now},
        )
    engine.dispose()
    assert migrations.upgrade(url) == SCHEMA_REVISION and _diff(url) == []
    cat = Catalog(url, create=False)
    (video,) = cat.list_videos()
    assert video.path == "/lib/a.mp4" and video.frame_offset is None
    cat.close()
