"""The SQL catalog: which files were indexed, into which clips, and the caption corpus.

SQLAlchemy Core (not the ORM: it is twice as fast for bulk rows and the queries stay visible).
Works on SQLite (WAL) and PostgreSQL. The schema is owned by Alembic (``migrations/``); a fresh,
empty database is created from these tables directly and stamped with :data:`SCHEMA_REVISION`, so a
test pins that the migrations produce exactly these tables.

The catalog is the source of truth for the index: a clip exists when its row exists, and a video is
``indexed`` only when all its clip rows were committed in the same transaction as its status. FAISS
and the token store are reconciled against it (see ``indexer.sink``).

Query methods return small frozen records (``VideoRecord``, ``ClipRecord``, ``TextRecord``) with
``to_dict()`` for JSON.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
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
from sqlalchemy.engine import Connection, Engine

from retrieval.errors import InvalidInput, NotFound, StoreError

log = logging.getLogger(__name__)

SCHEMA_REVISION = "0001"  # the Alembic head these tables correspond to (pinned by tests/test_migrations.py)

STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"

_CHUNK = 5000  # ids per IN (...) clause: below SQLite's variable limit, fast on PostgreSQL

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

_alembic_version = Table(  # exactly as Alembic creates it, so either may have made it
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def text_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _chunks(items: Sequence) -> Iterator[Sequence]:
    """``items`` in slices of :data:`_CHUNK`, one ``IN (...)`` clause each."""
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _record(cls: type, row) -> Any:
    """A record dataclass from a result row that has a column for each of its fields."""
    m = row._mapping
    return cls(**{f: m[f] for f in cls.__dataclass_fields__})


def _update_thumbnails(conn: Connection, rows: list[dict]) -> None:
    """Set ``clips.thumbnail`` from ``[{"cid": clip id, "thumb": relative path}]`` in one executemany."""
    conn.execute(
        sa.update(clips).where(clips.c.id == sa.bindparam("cid")).values(thumbnail=sa.bindparam("thumb")),
        rows,
    )


# ---------------------------------------------------------------------------------------------
# records


@dataclass(frozen=True)
class VideoRecord:
    id: int
    library_id: int
    root: str
    path: str
    size: int
    mtime_ns: int
    fingerprint: str
    status: str
    error: str | None
    duration: float | None
    fps: float | None
    num_frames: int | None
    width: int | None
    height: int | None
    codec: str | None
    rotation: int | None
    model: str | None
    clip_seconds: float | None
    stride: float | None
    clip_count: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClipRecord:
    id: int
    video_id: int
    idx: int
    start: float
    end: float
    start_frame: int
    end_frame: int
    thumbnail: str | None
    path: str  # of the video
    root: str  # library root of the video
    duration: float | None  # of the video
    fps: float | None
    width: int | None
    height: int | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TextRecord:
    id: int
    text: str
    source: str | None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VideoMeta:
    """What the indexer knows about a file it is about to write (input to :meth:`Catalog.commit_videos`)."""

    root: str
    path: str
    size: int
    mtime_ns: int
    fingerprint: str
    duration: float | None = None
    fps: float | None = None
    num_frames: int | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    rotation: int | None = None
    model: str | None = None
    clip_seconds: float | None = None
    stride: float | None = None
    error: str | None = None  # warning for a partly readable file, or the failure reason


@dataclass(frozen=True)
class ClipSpan:
    idx: int
    start: float
    end: float
    start_frame: int
    end_frame: int
    has_thumbnail: bool = False  # a JPEG exists at thumbs/<clip id>.jpg in the data home


def thumbnail_relpath(clip_id: int) -> str:
    """Where a clip's thumbnail lives, relative to the data home (see retrieval.home)."""
    return f"thumbs/{int(clip_id)}.jpg"


# ---------------------------------------------------------------------------------------------


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


def _redact(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<database>"


class Catalog:
    """Queries and writes over one catalog database.

    ``create=True`` creates the tables in an empty database (stamped with the Alembic head); a
    database at another schema revision raises :class:`StoreError` asking for ``vtr db upgrade``.
    """

    def __init__(self, url: str, *, create: bool = True):
        self.url = url
        self.engine = make_engine(url)
        self._check_schema(create)

    def __repr__(self) -> str:
        return f"Catalog({_redact(self.url)!r})"

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
                    version = conn.execute(sa.select(_alembic_version.c.version_num)).scalar()
        except sa.exc.OperationalError as exc:
            raise StoreError(f"cannot reach the catalog at {_redact(self.url)}: {exc.orig}") from exc
        if version == SCHEMA_REVISION:
            return
        ours = set(metadata.tables)
        if version is None and not (names & ours):
            if not create:
                raise StoreError(f"the catalog at {_redact(self.url)} is empty; run `vtr index` or `vtr db upgrade`")
            with self.engine.begin() as conn:
                metadata.create_all(conn)
                _alembic_version.create(conn, checkfirst=True)
                conn.execute(sa.delete(_alembic_version))
                conn.execute(sa.insert(_alembic_version).values(version_num=SCHEMA_REVISION))
            log.info("created catalog schema %s at %s", SCHEMA_REVISION, _redact(self.url))
            return
        raise StoreError(
            f"the catalog at {_redact(self.url)} has schema revision {version or 'unknown'}, this version of vtr "
            f"needs {SCHEMA_REVISION}: run `vtr db upgrade`"
        )

    def schema_revision(self) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(_alembic_version.c.version_num)).scalar()

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.OperationalError as exc:
            raise StoreError(f"catalog unavailable: {exc.orig}") from exc

    # -- libraries
    def libraries(self) -> list[dict]:
        """Every library root with its video and clip counts."""
        vc = (
            sa.select(videos.c.library_id, sa.func.count().label("n"))
            .where(videos.c.status == STATUS_INDEXED)
            .group_by(videos.c.library_id)
            .subquery()
        )
        cc = (
            sa.select(videos.c.library_id, sa.func.count(clips.c.id).label("n"))
            .select_from(clips.join(videos))
            .group_by(videos.c.library_id)
            .subquery()
        )
        q = (
            sa.select(libraries.c.id, libraries.c.root, vc.c.n.label("videos"), cc.c.n.label("clips"))
            .outerjoin(vc, vc.c.library_id == libraries.c.id)
            .outerjoin(cc, cc.c.library_id == libraries.c.id)
            .order_by(libraries.c.root)
        )
        with self._read() as conn:
            return [
                {"id": r.id, "root": r.root, "videos": int(r.videos or 0), "clips": int(r.clips or 0)}
                for r in conn.execute(q)
            ]

    # -- videos
    def _video_query(self):
        n = sa.select(sa.func.count(clips.c.id)).where(clips.c.video_id == videos.c.id).scalar_subquery()
        return sa.select(videos, libraries.c.root, n.label("clip_count")).select_from(videos.join(libraries))

    def get_video(self, video_id: int) -> VideoRecord:
        """The video with this id; :class:`NotFound` if there is none."""
        with self._read() as conn:
            row = conn.execute(self._video_query().where(videos.c.id == int(video_id))).first()
        if row is None:
            raise NotFound(f"no video with id {video_id}")
        return _record(VideoRecord, row)

    def video_by_path(self, path: str) -> VideoRecord | None:
        with self._read() as conn:
            row = conn.execute(self._video_query().where(videos.c.path == str(path))).first()
        return _record(VideoRecord, row) if row else None

    def _video_filters(
        self,
        *,
        root: str | None = None,
        path_prefix: str | None = None,
        status: str | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
    ) -> list:
        cond = []
        if root is not None:
            cond.append(libraries.c.root == str(root))
        if path_prefix:
            # literal prefix match: %, _ and the escape char in user paths must not act as wildcards
            esc = str(path_prefix).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            cond.append(videos.c.path.like(esc + "%", escape="\\"))
        if status is not None:
            cond.append(videos.c.status == status)
        if min_duration is not None:
            cond.append(videos.c.duration >= float(min_duration))
        if max_duration is not None:
            cond.append(videos.c.duration <= float(max_duration))
        return cond

    def list_videos(
        self,
        *,
        root: str | None = None,
        path_prefix: str | None = None,
        status: str | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[VideoRecord]:
        """Videos ordered by path, filtered by library root, path prefix, status and duration range."""
        q = self._video_query().order_by(videos.c.path)
        for c in self._video_filters(
            root=root, path_prefix=path_prefix, status=status, min_duration=min_duration, max_duration=max_duration
        ):
            q = q.where(c)
        if offset:
            q = q.offset(int(offset))
        if limit is not None:
            q = q.limit(int(limit))
        with self._read() as conn:
            return [_record(VideoRecord, r) for r in conn.execute(q)]

    def count_videos(self, **filters) -> int:
        q = sa.select(sa.func.count()).select_from(videos.join(libraries))
        for c in self._video_filters(**filters):
            q = q.where(c)
        with self._read() as conn:
            return int(conn.execute(q).scalar_one())

    def failed_videos(self) -> list[dict]:
        """``[{path, reason}]`` for every file the last run could not index."""
        q = sa.select(videos.c.path, videos.c.error).where(videos.c.status == STATUS_FAILED).order_by(videos.c.path)
        with self._read() as conn:
            return [{"path": r.path, "reason": r.error or "unknown error"} for r in conn.execute(q)]

    def warnings(self) -> list[dict]:
        """``[{path, warning}]`` for indexed files that were only partly readable."""
        q = (
            sa.select(videos.c.path, videos.c.error)
            .where(videos.c.status == STATUS_INDEXED, videos.c.error.is_not(None))
            .order_by(videos.c.path)
        )
        with self._read() as conn:
            return [{"path": r.path, "warning": r.error} for r in conn.execute(q)]

    def video_states(self, paths: Iterable[str] | None = None) -> dict[str, dict]:
        """``path -> {id, size, mtime_ns, fingerprint, status, model, clip_seconds, stride}`` for change detection."""
        cols = [
            videos.c.id,
            videos.c.path,
            videos.c.size,
            videos.c.mtime_ns,
            videos.c.fingerprint,
            videos.c.status,
            videos.c.model,
            videos.c.clip_seconds,
            videos.c.stride,
        ]
        out: dict[str, dict] = {}
        with self._read() as conn:
            if paths is None:
                rows = conn.execute(sa.select(*cols))
                out = {r.path: dict(r._mapping) for r in rows}
            else:
                for chunk in _chunks(list(paths)):
                    rows = conn.execute(sa.select(*cols).where(videos.c.path.in_(chunk)))
                    out.update({r.path: dict(r._mapping) for r in rows})
        return out

    def touch_video(self, video_id: int, mtime_ns: int) -> None:
        """Record a new mtime for a file whose content is unchanged (same size and hash)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(videos).where(videos.c.id == int(video_id)).values(mtime_ns=int(mtime_ns), updated_at=_now())
            )

    def delete_videos(self, video_ids: Sequence[int]) -> list[int]:
        """Delete videos and their clips in one transaction; returns the removed clip ids.

        The caller removes those ids from FAISS and the token store afterwards (a crash in between
        leaves orphan vectors that the next index run reconciles away, never dangling catalog rows).
        """
        ids = [int(v) for v in video_ids]
        removed: list[int] = []
        with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                removed += [
                    int(x) for x in conn.execute(sa.select(clips.c.id).where(clips.c.video_id.in_(chunk))).scalars()
                ]
                conn.execute(sa.delete(clips).where(clips.c.video_id.in_(chunk)))
                conn.execute(sa.delete(videos).where(videos.c.id.in_(chunk)))
        return removed

    def delete_video(self, video_id: int) -> list[int]:
        """Delete one video (NotFound if absent); returns its clip ids for removal from the indexes."""
        self.get_video(video_id)
        return self.delete_videos([video_id])

    # -- indexer writes
    def commit_videos(
        self,
        items: Sequence[tuple[VideoMeta, Sequence[ClipSpan]]],
        before_commit: Callable[[list[list[int]], list[int]], None] | None = None,
    ) -> tuple[list[list[int]], list[int]]:
        """Write several indexed videos and their clips in ONE transaction.

        Each video row is inserted or replaced with status ``indexed``; its previous clips (if it was
        indexed before) are deleted and new clip rows inserted. ``before_commit(new_ids_per_video,
        old_ids)`` runs inside the transaction once the new clip ids are known: the indexer writes
        the vectors and token sets there, durably, so a committed clip always has its data. If it
        raises, nothing is committed. Returns ``(new clip ids per video, replaced clip ids)``.
        """
        now = _now()
        new_ids: list[list[int]] = []
        old_ids: list[int] = []
        with self.engine.begin() as conn:
            lib_cache: dict[str, int] = {}
            for meta, spans in items:
                lib_id = lib_cache.get(meta.root)
                if lib_id is None:
                    lib_id = self._library_id(conn, meta.root)
                    lib_cache[meta.root] = lib_id
                vid, old = self._upsert_video(conn, lib_id, meta, STATUS_INDEXED, now)
                old_ids += old
                ids: list[int] = []
                if spans:
                    rows = [
                        {
                            "video_id": vid,
                            "idx": s.idx,
                            "start": float(s.start),
                            "end": float(s.end),
                            "start_frame": int(s.start_frame),
                            "end_frame": int(s.end_frame),
                            "thumbnail": None,
                        }
                        for s in spans
                    ]
                    ids = self._insert_clips(conn, rows)
                    thumbs = [
                        {"cid": c, "thumb": thumbnail_relpath(c)}
                        for c, sp in zip(ids, spans, strict=True)
                        if sp.has_thumbnail
                    ]
                    if thumbs:
                        _update_thumbnails(conn, thumbs)
                new_ids.append(ids)
            if before_commit is not None:
                before_commit(new_ids, old_ids)
        return new_ids, old_ids

    def _insert_clips(self, conn: Connection, rows: list[dict]) -> list[int]:
        stmt = sa.insert(clips).returning(clips.c.id, sort_by_parameter_order=True)
        return [int(x) for x in conn.execute(stmt, rows).scalars()]

    def record_failure(self, meta: VideoMeta, reason: str) -> list[int]:
        """Mark a file failed with ``reason``; returns clip ids of an older indexed version (now removed)."""
        with self.engine.begin() as conn:
            lib_id = self._library_id(conn, meta.root)
            _, old = self._upsert_video(conn, lib_id, meta, STATUS_FAILED, _now(), error=reason)
        return old

    def _library_id(self, conn: Connection, root: str) -> int:
        lib_id = conn.execute(sa.select(libraries.c.id).where(libraries.c.root == root)).scalar()
        if lib_id is None:
            lib_id = conn.execute(
                sa.insert(libraries).values(root=root, created_at=_now()).returning(libraries.c.id)
            ).scalar_one()
        return int(lib_id)

    def _upsert_video(
        self, conn: Connection, lib_id: int, meta: VideoMeta, status: str, now: datetime, error: str | None = None
    ) -> tuple[int, list[int]]:
        values = {
            "library_id": lib_id,
            "path": meta.path,
            "size": int(meta.size),
            "mtime_ns": int(meta.mtime_ns),
            "fingerprint": meta.fingerprint,
            "status": status,
            "error": error if error is not None else meta.error,
            "duration": meta.duration,
            "fps": meta.fps,
            "num_frames": meta.num_frames,
            "width": meta.width,
            "height": meta.height,
            "codec": meta.codec,
            "rotation": meta.rotation,
            "model": meta.model,
            "clip_seconds": meta.clip_seconds,
            "stride": meta.stride,
            "updated_at": now,
            "indexed_at": now if status == STATUS_INDEXED else None,
        }
        existing = conn.execute(sa.select(videos.c.id).where(videos.c.path == meta.path)).scalar()
        old: list[int] = []
        if existing is None:
            vid = conn.execute(sa.insert(videos).values(created_at=now, **values).returning(videos.c.id)).scalar_one()
        else:
            vid = int(existing)
            values.pop("library_id")  # a file keeps the library it was first found in
            old = [int(x) for x in conn.execute(sa.select(clips.c.id).where(clips.c.video_id == vid)).scalars()]
            if old:
                conn.execute(sa.delete(clips).where(clips.c.video_id == vid))
            conn.execute(sa.update(videos).where(videos.c.id == vid).values(**values))
        return int(vid), old

    # -- clips
    def _clip_query(self):
        return sa.select(
            clips,
            videos.c.path,
            libraries.c.root,
            videos.c.duration,
            videos.c.fps,
            videos.c.width,
            videos.c.height,
        ).select_from(clips.join(videos).join(libraries))

    def get_clip(self, clip_id: int) -> ClipRecord:
        """The clip with this id (with its video's path, root, duration); :class:`NotFound` if none."""
        with self._read() as conn:
            row = conn.execute(self._clip_query().where(clips.c.id == int(clip_id))).first()
        if row is None:
            raise NotFound(f"no clip with id {clip_id}")
        return _record(ClipRecord, row)

    def _records_by_ids(self, ids: Iterable[int], query: Callable[[Sequence[int]], Any], make: Callable) -> list:
        """``make(row)`` for each of ``ids`` in the same order, fetched in chunks by ``query(chunk)``.

        Negative ids (FAISS pads short result lists with -1) and ids with no row are left out.
        """
        wanted = [int(i) for i in ids if int(i) >= 0]
        found: dict[int, Any] = {}
        with self._read() as conn:
            for chunk in _chunks(list(dict.fromkeys(wanted))):
                for row in conn.execute(query(chunk)):
                    rec = make(row)
                    found[rec.id] = rec
        return [found[i] for i in wanted if i in found]

    def clips_by_ids(self, ids: Iterable[int]) -> list[ClipRecord]:
        """Clips for ``ids`` in the same order; ids with no clip (deleted since) are left out."""
        return self._records_by_ids(
            ids, lambda chunk: self._clip_query().where(clips.c.id.in_(chunk)), lambda r: _record(ClipRecord, r)
        )

    def clips_of_video(self, video_id: int) -> list[ClipRecord]:
        with self._read() as conn:
            rows = conn.execute(self._clip_query().where(clips.c.video_id == int(video_id)).order_by(clips.c.idx))
            return [_record(ClipRecord, r) for r in rows]

    def clip_ids(
        self,
        *,
        root: str | None = None,
        path_prefix: str | None = None,
        min_duration: float | None = None,
        max_duration: float | None = None,
        video_ids: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Sorted int64 ids of clips of indexed videos matching the filters (for filtered search)."""
        q = (
            sa.select(clips.c.id)
            .select_from(clips.join(videos).join(libraries))
            .where(videos.c.status == STATUS_INDEXED)
        )
        for c in self._video_filters(
            root=root, path_prefix=path_prefix, min_duration=min_duration, max_duration=max_duration
        ):
            q = q.where(c)
        if video_ids is not None:
            q = q.where(videos.c.id.in_([int(v) for v in video_ids]))
        return self._sorted_ids(q)

    def all_clip_ids(self) -> np.ndarray:
        """Every clip id in the catalog, sorted (what FAISS and the token store must agree with)."""
        return self._sorted_ids(sa.select(clips.c.id))

    def _sorted_ids(self, q) -> np.ndarray:
        """The ids ``q`` selects as a sorted int64 array (the form FAISS id selectors take)."""
        with self._read() as conn:
            ids = np.fromiter((int(x) for x in conn.execute(q).scalars()), dtype=np.int64)
        ids.sort()
        return ids

    # -- texts
    def add_texts(self, items: Sequence[str], source: str | None = None) -> tuple[list[int], list[int]]:
        """Insert captions not yet in the corpus; returns ``(new ids, ids of all items in order)``.

        Texts are stripped; empty ones are skipped. Duplicates (same text) keep their first row.
        """
        cleaned = [t.strip() for t in items]
        cleaned = [t for t in cleaned if t]
        hashes = [text_hash(t) for t in cleaned]
        now = _now()
        new: list[int] = []
        with self.engine.begin() as conn:
            known: dict[str, int] = {}
            for chunk in _chunks(list(dict.fromkeys(hashes))):
                rows = conn.execute(sa.select(texts.c.id, texts.c.text_hash).where(texts.c.text_hash.in_(chunk)))
                known.update({r.text_hash: int(r.id) for r in rows})
            stmt = sa.insert(texts).returning(texts.c.id)
            for t, h in zip(cleaned, hashes, strict=True):
                if h in known:
                    continue
                tid = int(
                    conn.execute(stmt, {"text": t, "source": source, "text_hash": h, "created_at": now}).scalar_one()
                )
                known[h] = tid
                new.append(tid)
        return new, [known[h] for h in hashes]

    def texts_by_ids(self, ids: Iterable[int]) -> list[TextRecord]:
        """Captions for ``ids`` in the same order; unknown ids are left out."""
        return self._records_by_ids(
            ids,
            lambda chunk: sa.select(texts.c.id, texts.c.text, texts.c.source).where(texts.c.id.in_(chunk)),
            lambda r: TextRecord(int(r.id), r.text, r.source),
        )

    def all_text_ids(self) -> np.ndarray:
        return self._sorted_ids(sa.select(texts.c.id))

    def delete_texts(self, ids: Sequence[int]) -> int:
        ids = [int(i) for i in ids]
        n = 0
        with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                n += conn.execute(sa.delete(texts).where(texts.c.id.in_(chunk))).rowcount
        return n

    # -- summary
    def stats(self) -> dict:
        """Counts for `vtr status` and the web UI: videos (indexed), clips, texts, failed, libraries."""
        with self._read() as conn:

            def count(q) -> int:
                return int(conn.execute(q).scalar_one())

            return {
                "videos": count(
                    sa.select(sa.func.count()).select_from(videos).where(videos.c.status == STATUS_INDEXED)
                ),
                "clips": count(sa.select(sa.func.count()).select_from(clips)),
                "texts": count(sa.select(sa.func.count()).select_from(texts)),
                "failed": count(sa.select(sa.func.count()).select_from(videos).where(videos.c.status == STATUS_FAILED)),
                "libraries": count(sa.select(sa.func.count()).select_from(libraries)),
                "duration": float(
                    conn.execute(
                        sa.select(sa.func.coalesce(sa.func.sum(videos.c.duration), 0.0)).where(
                            videos.c.status == STATUS_INDEXED
                        )
                    ).scalar_one()
                ),
            }
