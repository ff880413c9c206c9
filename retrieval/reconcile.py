"""Putting FAISS (and the thumbnails) back in agreement with the catalog, the source of truth.

Why: the catalog (SQL, transactional), the token store (append-only, fsynced) and the FAISS files
(rewritten whole, atomically, now and then) cannot share one transaction. Writers commit the catalog
first and follow with FAISS (see :mod:`retrieval.clip_writer`), so after a crash FAISS may hold
vectors of clips that are gone or miss vectors of committed clips. Every writer reconciles before it
writes: extra vectors are removed, missing ones re-added from the token store (clips) or re-embedded
(captions), and thumbnails of clips that do not exist are deleted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from retrieval.home import DataHome
from retrieval.thumbnails import remove_orphan_thumbnails

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    index_removed: int = 0
    index_added: int = 0
    videos_requeued: list[str] = field(default_factory=list)
    thumbnails_removed: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.index_removed or self.index_added or self.videos_requeued or self.thumbnails_removed)


def sync_index(
    index, want: np.ndarray, vectors: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], chunk: int
) -> tuple[int, int]:
    """Make ``index`` hold exactly the sorted ids ``want``: drop extra ids, add the missing ones.

    ``vectors(ids)`` returns ``(vectors, ids)`` for a chunk of missing ids (it may leave some out).
    Returns ``(removed, added)``.
    """
    have = index.ids()
    extra = np.setdiff1d(have, want, assume_unique=True)
    removed = index.remove(extra) if len(extra) else 0
    missing = np.setdiff1d(want, have, assume_unique=True)
    for i in range(0, len(missing), chunk):
        vecs, ids = vectors(missing[i : i + chunk])
        index.add(vecs, ids)
    return removed, len(missing)


def reconcile_clips(catalog, index, tokens, home: DataHome) -> ReconcileReport:
    """Make the clip index and the thumbnails agree with the catalog; re-queue videos whose vectors are lost."""
    rep = ReconcileReport()
    catalog_ids = catalog.all_clip_ids()
    stored = tokens.contains(catalog_ids)
    if not stored.all():
        lost = catalog_ids[~stored]
        recs = catalog.clips_by_ids(lost.tolist())
        video_ids = sorted({r.video_id for r in recs})
        rep.videos_requeued = sorted({r.path for r in recs})
        log.warning(
            "%d clips have no stored vectors (token store lost?); re-indexing %d videos", len(lost), len(video_ids)
        )
        catalog.delete_videos(video_ids)
        catalog_ids = catalog.all_clip_ids()
    rep.index_removed, rep.index_added = sync_index(
        index, catalog_ids, lambda part: (tokens.get_vectors(part), part), 65536
    )
    rep.thumbnails_removed = remove_orphan_thumbnails(home, catalog_ids)
    if rep.changed:
        log.info("reconciled: %s", rep)
    return rep


def reconcile_texts(catalog, index, embed: Callable[[list[str]], np.ndarray]) -> int:
    """Make the text index hold exactly the catalog's captions; returns how many were re-embedded."""

    def vectors(part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        recs = catalog.texts_by_ids(part.tolist())
        return embed([r.text for r in recs]), np.array([r.id for r in recs], dtype=np.int64)

    _, added = sync_index(index, catalog.all_text_ids(), vectors, 4096)
    return added
