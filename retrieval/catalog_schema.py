"""The catalog's tables and database plumbing: schema, engines, URLs, id chunks.

Why apart from the queries: Alembic's ``env.py`` and the migration test need the tables without
the query layer, and the engine options (SQLite WAL, foreign keys, busy timeout; pre-ping on
PostgreSQL) are one concern. The schema is owned by Alembic (``migrations/``); a fresh, empty
database is created from these tables directly and stamped with :data:`SCHEMA_REVISION`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Engine

from retrieval.errors import InvalidInput, StoreError

SCHEMA_REVISION = "0002"  # the Alembic head these tables correspond to (pinned by tests/test_migrations.py)

STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"

CHUNK = 5000  # ids per IN (...) clause: below SQLite's variable limit, fast on PostgreSQL

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# 64-bit ids on PostgreSQL; INTEGER PRIMARY KEY (the rowid, also 64-bit) on SQLite.
_Id = BigInteger().with_variant(Integer, "sqlite")

libraries = Table(
    "libraries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("root", Text, nullable=False, unique=True),  # absolute folder given to `vtr index`
    Column("created_at", DateTime(timezone=True), nullable=False),
)

videos = Table(
    "videos",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("library_id", Integer, ForeignKey("libraries.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("path", Text, nullable=False, unique=True),  # absolute path as found under the root
    Column("size", BigInteger, nullable=False),  # bytes
    Column("mtime_ns", BigInteger, nullable=False),
    Column("fingerprint", String(64), nullable=False),  # size + hash of head and tail (see indexer.fingerprint)
    Column("status", String(16), nullable=False, index=True),  # indexed | failed
    Column("error", Text),  # why it failed, or a warning for a partly readable file
    Column("duration", Float),  # seconds
    Column("fps", Float),
    Column("num_frames", Integer),
    Column("width", Integer),  # displayed size (after rotation)
    Column("height", Integer),
    Column("codec", String(32)),
    Column("rotation", Integer),
    Column("model", String(200)),  # model that embedded the clips
    Column("clip_seconds", Float),  # window and stride the clips were cut with
    Column("stride", Float),
    # seconds: the largest distance of a sampled frame from its target (reference-frame decoding,
    # --frame-tolerance); 0 = exact frames; NULL = indexed before it was recorded
    Column("frame_offset", Float),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("indexed_at", DateTime(timezone=True)),
)

clips = Table(
    "clips",
    metadata,
    Column("id", _Id, primary_key=True),  # = FAISS vector id = token store id
    Column("video_id", Integer, ForeignKey("videos.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),  # position of the clip in its video (0, 1, ...)
    Column("start", Float, nullable=False),  # seconds
    Column("end", Float, nullable=False),
    Column("start_frame", Integer, nullable=False),
    Column("end_frame", Integer, nullable=False),  # exclusive
    Column("thumbnail", String(255)),  # path relative to the data home, or NULL
    UniqueConstraint("video_id", "idx"),
    sqlite_autoincrement=True,  # never reuse an id: a stale vector must not point at a new clip
)
Index("ix_clips_video_id", clips.c.video_id)

texts = Table(
    "texts",
    metadata,
    Column("id", _Id, primary_key=True),  # = text FAISS vector id
    Column("text", Text, nullable=False),
    Column("source", Text),  # file it came from
    Column("text_hash", String(40), nullable=False, unique=True),  # sha1 of the text: one row per caption
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,
)

ALEMBIC_VERSION = Table(  # exactly as Alembic creates it, so either may have made it
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def chunks(items: Sequence) -> Iterator[Sequence]:
    """``items`` in slices of :data:`CHUNK`, one ``IN (...)`` clause each."""
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")  # with WAL: consistent after a crash; fast
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _parse_url(url: str) -> sa.engine.URL:
    try:
        return sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise InvalidInput(f"not a database URL: {url!r} (e.g. sqlite:///path/catalog.db)") from exc


def sqlite_file_missing(url: str) -> bool:
    """Whether ``url`` is SQLite and its file does not exist yet: nothing to read, and opening it would create it."""
    u = _parse_url(url)
    return u.get_backend_name() == "sqlite" and bool(u.database) and not Path(u.database).exists()


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL, foreign keys and a busy timeout."""
    u = _parse_url(url)
    kwargs: dict[str, Any] = {}
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(url, **kwargs)
    except (ImportError, sa.exc.NoSuchModuleError) as exc:
        raise StoreError(f"no database driver for {u.drivername}: {exc} (pip install 'psycopg[binary]')") from exc
    if u.get_backend_name() == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"
