"""The one write path for clips: commit embedded videos durably, delete videos, keep FAISS in step.

Three stores hold an index: the catalog (SQL, transactional), the token store (append-only files,
fsynced) and the FAISS file (rewritten whole, atomically, every ``save_interval`` seconds). They
cannot share one transaction, so the write order makes the catalog the single source of truth:

1. inside the catalog transaction, once the new clip ids are known, append each clip's vector and
   token set to the token store and fsync; write thumbnails;
2. commit the catalog transaction (video row ``indexed`` + all its clip rows, atomically);
3. add the vectors to the in-memory FAISS index; save it atomically now and then and at the end.

Deletes follow the same rule: catalog first, then FAISS and thumbnails (:func:`remove_videos`, used
by ``vtr index --prune`` and the server's ``DELETE /api/v1/videos/<id>`` alike).

A ``kill -9`` between any two steps leaves either nothing committed (the token rows and thumbnails
are unreferenced garbage; the video is indexed again on the next run) or a committed video whose
vectors FAISS does not have yet. :meth:`ClipSink.reconcile` (:mod:`retrieval.reconcile`), run at the
start of every run, makes FAISS equal to the catalog. A video cannot be ``indexed`` with half its
clips, and a clip id can be in FAISS only if it is in the catalog.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.catalog import Catalog, ClipSpan, VideoMeta
from retrieval.errors import IndexMismatch
from retrieval.home import DataHome
from retrieval.index import VectorIndex, choose_factory
from retrieval.reconcile import ReconcileReport, reconcile_clips
from retrieval.thumbnails import remove_thumbnails, write_thumbnail
from retrieval.token_store import StoreLayout, TokenStore

log = logging.getLogger(__name__)

# rewrite the token store at the end of a run once dead rows (replaced or removed clips) are this share of it
_COMPACT_GARBAGE = 0.1


@dataclass
class PendingVideo:
    """A fully embedded video waiting to be committed."""

    meta: VideoMeta
    spans: list[ClipSpan]
    vectors: np.ndarray  # float32 [n, D]
    tokens: np.ndarray  # [n, N, W]
    thumbnails: list[bytes | tuple[bytes, bytes] | None]  # thumbnail, or (thumbnail, filmstrip)


def forget_clips(home: DataHome, index: VectorIndex | None, clip_ids: Sequence[int]) -> None:
    """Drop clips the catalog no longer has from FAISS (when given) and their thumbnails."""
    if index is not None:
        index.remove(np.asarray(clip_ids, dtype=np.int64))
    remove_thumbnails(home, clip_ids)


def remove_videos(home: DataHome, catalog: Catalog, video_ids: Sequence[int], index: VectorIndex | None) -> list[int]:
    """Delete videos: the catalog commits first, then FAISS and the thumbnails follow; returns removed clip ids.

    A crash in between leaves orphan vectors that the next reconcile removes, never dangling rows.
    """
    clip_ids = catalog.delete_videos(video_ids)
    if clip_ids:
        forget_clips(home, index, clip_ids)
    return clip_ids


def delete_video(
    home: DataHome, catalog: Catalog, video_id: int, on_save: Callable[[VectorIndex], None] | None = None
) -> dict:
    """Remove one video (:class:`NotFound` if absent) and save the clip index; the caller holds the home lock.

    ``on_save(index)`` runs after the index is saved (the server installs it for its next query).
    """
    v = catalog.get_video(video_id)
    path = home.clip_index_path
    index = VectorIndex.load(path) if path.exists() else None
    removed = remove_videos(home, catalog, [video_id], index)
    if removed and index is not None:
        index.save(path)
        if on_save is not None:
            on_save(index)
    return {"deleted": int(video_id), "path": v.path, "clips_removed": len(removed)}


class ClipSink:
    """The clip index of one data home, opened for writing by one `vtr index` run."""

    def __init__(
        self,
        home: DataHome,
        catalog: Catalog,
        *,
        model_name: str,
        layout: StoreLayout,
        factory: str = "auto",
        save_interval: float = 60.0,
    ):
        self.home = home.ensure()
        self.catalog = catalog
        self.model_name = model_name
        self.layout = layout
        self.dim = layout.dim
        self.factory = factory or "auto"
        self.save_interval = float(save_interval)
        self.index = self._open_index()  # first: its mismatch message is the one users understand
        self.tokens = TokenStore(home.tokens_dir, layout)
        self._dirty = False
        self._last_save = time.monotonic()
        self._last_save_cost = 0.0

    # ------------------------------------------------------------------ opening
    def _open_index(self) -> VectorIndex:
        path = self.home.clip_index_path
        if path.exists():
            index = VectorIndex.load(path, model=self.model_name, dim=self.dim)
            return index
        # an index type that must be trained starts exact; finish() converts it once vectors exist
        return VectorIndex.create(self.dim, self.model_name, "Flat")

    def reconcile(self) -> ReconcileReport:
        """Make FAISS and the thumbnails agree with the catalog (see :mod:`retrieval.reconcile`)."""
        rep = reconcile_clips(self.catalog, self.index, self.tokens, self.home)
        if rep.index_removed or rep.index_added:
            self._dirty = True
            self.save()
        return rep

    # ------------------------------------------------------------------ writing
    def write(self, videos: list[PendingVideo]) -> list[list[int]]:
        """Commit several embedded videos in one transaction; returns their new clip ids."""
        if not videos:
            return []

        def before_commit(new_ids: list[list[int]], old_ids: list[int]) -> None:
            flat = np.array([i for ids in new_ids for i in ids], dtype=np.int64)
            if len(flat):
                vecs = np.concatenate([v.vectors for v, ids in zip(videos, new_ids, strict=True) if ids])
                toks = np.concatenate([v.tokens for v, ids in zip(videos, new_ids, strict=True) if ids])
                self.tokens.append(flat, vecs, toks)
            for v, ids in zip(videos, new_ids, strict=True):
                for cid, thumb in zip(ids, v.thumbnails, strict=True):
                    if thumb is not None:
                        write_thumbnail(self.home, cid, thumb)

        items = [(v.meta, v.spans) for v in videos]
        new_ids, old_ids = self.catalog.commit_videos(items, before_commit)
        # committed: FAISS follows (a crash from here on is repaired by reconcile)
        if old_ids:
            self._forget(old_ids)
        for v, ids in zip(videos, new_ids, strict=True):
            if ids:
                self.index.add(v.vectors, np.asarray(ids, dtype=np.int64))
        self._dirty = True
        return new_ids

    def fail(self, meta: VideoMeta, reason: str) -> None:
        """Record a file that could not be indexed (replacing an older indexed version, if any)."""
        old = self.catalog.record_failure(meta, reason)
        if old:
            self._forget(old)
            self._dirty = True

    def remove_videos(self, video_ids: list[int]) -> int:
        """Delete videos (``--prune``) from the catalog, then from FAISS and the thumbnails."""
        clip_ids = remove_videos(self.home, self.catalog, video_ids, self.index)
        if clip_ids:
            self._dirty = True
        return len(clip_ids)

    def _forget(self, clip_ids) -> None:
        forget_clips(self.home, self.index, clip_ids)

    # ------------------------------------------------------------------ saving
    def save(self) -> None:
        t0 = time.monotonic()
        self.index.save(self.home.clip_index_path)
        self._dirty = False
        self._last_save = time.monotonic()
        self._last_save_cost = self._last_save - t0

    def maybe_save(self) -> bool:
        """Checkpoint FAISS if dirty and the interval (at least 5x the last save's cost) has passed."""
        interval = max(self.save_interval, 5 * self._last_save_cost)
        if self._dirty and time.monotonic() - self._last_save >= interval:
            self.save()
            return True
        return False

    def finish(self) -> None:
        """End of run: pick the index type for the library's size, save, and compact the token store."""
        self._retype()
        if self._dirty or not self.home.clip_index_path.exists():
            self.save()
        self.compact_tokens()

    def compact_tokens(self, threshold: float = _COMPACT_GARBAGE) -> int:
        """Drop the token rows of clips the catalog no longer has, once they are ``threshold`` of the store.

        Crash-safe: the store is rewritten as a new generation and switched to atomically (see
        :meth:`TokenStore.compact`); an interrupted compaction leaves the old generation in use and its
        partial files are removed here next time. Returns the rows dropped.
        """
        self.tokens.remove_stale_generations()
        rows = self.tokens.rows()
        live = self.catalog.all_clip_ids()
        dead = self.tokens.dead_rows(live)
        if dead == 0 or dead < threshold * rows:
            return 0
        dropped = self.tokens.compact(live)
        log.info("token store compacted: %d dead rows dropped, %d live", dropped, rows - dropped)
        return dropped

    def _retype(self) -> None:
        n = self.index.ntotal
        if self.factory in ("", "auto"):
            want = choose_factory(n, self.dim)
        else:
            want = self.factory
        if want == self.index.factory:
            return
        ids = self.index.ids()
        try:
            vectors = self.tokens.get_vectors(ids) if len(ids) else np.empty((0, self.dim), np.float32)
            if len(ids) == 0 and want != "Flat":
                probe = VectorIndex.create(self.dim, self.model_name, want)
                if not probe.index.is_trained:
                    return  # cannot train on nothing: stay exact until vectors exist
            fresh = VectorIndex.build(vectors, ids, model=self.model_name, factory=want)
        except IndexMismatch:
            raise
        except Exception as exc:  # e.g. IVF4096 with 300 vectors: keep the exact index and say why
            log.warning("keeping a %s index: building %s failed: %s", self.index.factory, want, exc)
            return
        log.info("index type %s -> %s for %d vectors", self.index.factory, want, n)
        self.index = fresh
        self._dirty = True
