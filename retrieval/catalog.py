"""The SQL catalog: which files were indexed, into which clips, and the caption corpus.

SQLAlchemy Core (not the ORM: it is twice as fast for bulk rows and the queries stay visible).
Works on SQLite (WAL) and PostgreSQL. The catalog is the source of truth for the index: a clip
exists when its row exists, and a video is ``indexed`` only when all its clip rows were committed in
the same transaction as its status. FAISS and the token store are reconciled against it (see
:mod:`retrieval.reconcile`).

The catalog is four small modules: tables and engines (:mod:`retrieval.catalog_schema`), the
records queries return (:mod:`retrieval.catalog_records`), reads (:mod:`retrieval.catalog_reads`)
and writes (:mod:`retrieval.catalog_writes`). This one opens a database, checks its schema
revision, and re-exports the names callers use.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from retrieval.catalog_reads import CatalogReads
from retrieval.catalog_records import ClipRecord, ClipSpan, TextRecord, VideoMeta, VideoRecord, thumbnail_relpath
from retrieval.catalog_schema import (
    ALEMBIC_VERSION,
    SCHEMA_REVISION,
    STATUS_FAILED,
    STATUS_INDEXED,
    make_engine,
    metadata,
    redact,
    sqlite_file_missing,
    text_hash,
)
from retrieval.catalog_writes import CatalogWrites
from retrieval.errors import NotFound, StoreError

__all__ = [
    "SCHEMA_REVISION",
    "STATUS_FAILED",
    "STATUS_INDEXED",
    "Catalog",
    "ClipRecord",
    "ClipSpan",
    "TextRecord",
    "VideoMeta",
    "VideoRecord",
    "make_engine",
    "open_existing",
    "metadata",
    "redact",
    "sqlite_file_missing",
    "text_hash",
    "thumbnail_relpath",
]

log = logging.getLogger(__name__)


class Catalog(CatalogReads, CatalogWrites):
    """Queries and writes over one catalog database.

    ``create=True`` creates the tables in an empty database (stamped with the Alembic head); a
    database at another schema revision raises :class:`StoreError` asking for ``vtr db upgrade``.
    """

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine = make_engine(url)
        self._check_schema(create)

    def __repr__(self) -> str:
        return f"Catalog({redact(self.url)!r})"

    def close(self) -> None:
        self.engine.dispose()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # -- schema
    def _check_schema(self, create: bool) -> None:
        try:
            with self.engine.connect() as conn:
                names = set(sa.inspect(conn).get_table_names())
                version = None
                if "alembic_version" in names:
                    version = conn.execute(sa.select(ALEMBIC_VERSION.c.version_num)).scalar()
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot reach the catalog at {redact(self.url)}: {exc.orig}") from exc
        if version == SCHEMA_REVISION:
            return
        ours = set(metadata.tables)
        if version is None and not (names & ours):
            if not create:
                raise StoreError(f"the catalog at {redact(self.url)} is empty; run `vtr index` or `vtr db upgrade`")
            with self.engine.begin() as conn:
                metadata.create_all(conn)
                ALEMBIC_VERSION.create(conn, checkfirst=True)
                conn.execute(sa.delete(ALEMBIC_VERSION))
                conn.execute(sa.insert(ALEMBIC_VERSION).values(version_num=SCHEMA_REVISION))
            log.info("created catalog schema %s at %s", SCHEMA_REVISION, redact(self.url))
            return
        raise StoreError(
            f"the catalog at {redact(self.url)} has schema revision {version or 'unknown'}, this version of vtr "
            f"needs {SCHEMA_REVISION}: run `vtr db upgrade`"
        )

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(ALEMBIC_VERSION.c.version_num)).scalar()

    def indexed_video_file(self, video_id: int) -> Path:
        """The file of an indexed video, or :class:`NotFound` (a failed one may be anything; only catalog paths are served)."""
        v = self.get_video(video_id)
        if v.status != STATUS_INDEXED:  # a file that failed to index may be anything (a text renamed .mp4)
            raise NotFound(f"video {video_id} was not indexed ({v.error or v.status}); its file is not served")
        p = Path(v.path)
        if not p.is_file():
            raise NotFound(f"the file of video {video_id} is no longer at its indexed path")
        return p

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise StoreError(f"catalog unavailable: {exc.orig}") from exc


def open_existing(url: str, home) -> Catalog:
    """The catalog of a home that was indexed, for reading: a missing SQLite file is an error, not created.

    Why: opening a missing SQLite file would leave an empty one behind, and the user needs to hear
    that the home was never indexed (``home`` is the :class:`~retrieval.home.DataHome` searched).
    """
    if sqlite_file_missing(url):
        where = home.root if url == f"sqlite:///{home.catalog_path}" else url
        raise StoreError(
            f"no catalog in {where}: index some videos first (`vtr index FOLDER --home {home.root}`), or try `vtr demo`"
        )
    return Catalog(url, create=False)
