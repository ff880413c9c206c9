"""Catalog writes: what the indexer commits and what deletes remove, each in one transaction.

Why a mixin of its own: the write side carries the crash-safety contract (a video is ``indexed``
only together with all its clip rows; deletes return the clip ids so FAISS can follow) and is
used by the one write path (:mod:`retrieval.clip_writer`, :mod:`retrieval.text_corpus`); the read
side is :class:`retrieval.catalog_reads.CatalogReads`. :class:`retrieval.catalog.Catalog` is both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from retrieval.catalog_records import ClipSpan, VideoMeta, thumbnail_relpath
from retrieval.catalog_schema import (
    STATUS_FAILED,
    STATUS_INDEXED,
    chunks,
    clips,
    libraries,
    text_hash,
    texts,
    utc_now,
    videos,
)


def _update_thumbnails(conn: Connection, rows: list[dict]) -> None:
    """Set ``clips.thumbnail`` from ``[{"cid": clip id, "thumb": relative path}]`` in one executemany."""
    conn.execute(
        sa.update(clips).where(clips.c.id == sa.bindparam("cid")).values(thumbnail=sa.bindparam("thumb")),
        rows,
    )


class CatalogWrites:
    """Writes over the catalog's engine (mixed into :class:`retrieval.catalog.Catalog`)."""

    engine: Engine

    def touch_video(self, video_id: int, mtime_ns: int) -> None:
        """Record a new mtime for a file whose content is unchanged (same size and hash)."""
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(videos)
                .where(videos.c.id == int(video_id))
                .values(mtime_ns=int(mtime_ns), updated_at=utc_now())
            )

    def delete_videos(self, video_ids: Sequence[int]) -> list[int]:
        """Delete videos and their clips in one transaction; returns the removed clip ids.

        The caller removes those ids from FAISS and the token store afterwards (a crash in between
        leaves orphan vectors that the next index run reconciles away, never dangling catalog rows).
        """
        ids = [int(v) for v in video_ids]
        removed: list[int] = []
        with self.engine.begin() as conn:
            for chunk in chunks(ids):
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
        now = utc_now()
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
            _, old = self._upsert_video(conn, lib_id, meta, STATUS_FAILED, utc_now(), error=reason)
        return old

    def _library_id(self, conn: Connection, root: str) -> int:
        lib_id = conn.execute(sa.select(libraries.c.id).where(libraries.c.root == root)).scalar()
        if lib_id is None:
            lib_id = conn.execute(
                sa.insert(libraries).values(root=root, created_at=utc_now()).returning(libraries.c.id)
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
            "frame_offset": meta.frame_offset,
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

    # -- texts
    def add_texts(self, items: Sequence[str], source: str | None = None) -> tuple[list[int], list[int]]:
        """Insert captions not yet in the corpus; returns ``(new ids, ids of all items in order)``.

        Texts are stripped; empty ones are skipped. Duplicates (same text) keep their first row.
        """
        cleaned = [t.strip() for t in items]
        cleaned = [t for t in cleaned if t]
        hashes = [text_hash(t) for t in cleaned]
        now = utc_now()
        new: list[int] = []
        with self.engine.begin() as conn:
            known: dict[str, int] = {}
            for chunk in chunks(list(dict.fromkeys(hashes))):
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

    def delete_texts(self, ids: Sequence[int]) -> int:
        ids = [int(i) for i in ids]
        n = 0
        with self.engine.begin() as conn:
            for chunk in chunks(ids):
                n += conn.execute(sa.delete(texts).where(texts.c.id.in_(chunk))).rowcount
        return n
