"""Candidate retrieval: the top clips or captions by embedding similarity (ITC), filters applied.

Why apart from ranking: this is where the index and the catalog meet (FAISS ids must still have a
catalog row; filters are catalog queries), while the order of the candidates is
:mod:`retrieval.ranking`'s business. Filtered searches over a small allowed set score the stored
embeddings exactly instead of over-fetching from an approximate index.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.errors import NotFound
from retrieval.query import MAX_CANDIDATES, SearchFilters

EXACT_FILTER_MAX = 50_000  # filtered search scores up to this many allowed clips exactly

# ids -> (exact stored embeddings of the ids that have one, those ids); see retrieval.live.LiveTokens
VectorLookup = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def allowed_ids(catalog, filters: SearchFilters | None) -> np.ndarray | None:
    """Sorted ids of the clips the filters allow; None when nothing is filtered."""
    if filters is None or not filters.active:
        return None
    root = None
    if filters.library is not None:
        lib = str(filters.library).strip()
        libs = catalog.libraries()
        match = [x for x in libs if str(x["id"]) == lib or x["root"] == lib or x["root"] == lib.rstrip("/")]
        if not match:
            raise NotFound(f"no library {lib!r}; libraries: " + ", ".join(f"{x['id']}={x['root']}" for x in libs))
        root = match[0]["root"]
    return catalog.clip_ids(
        root=root,
        path_prefix=filters.path_prefix,
        min_duration=filters.min_duration,
        max_duration=filters.max_duration,
    )


def itc(
    index, query: np.ndarray, fetch: int, allowed: np.ndarray | None, vectors: VectorLookup | None = None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Top ``fetch`` (scores, ids) by embedding similarity among ``allowed``; and whether that is all there is."""
    q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    total = index.ntotal
    if allowed is not None:
        if len(allowed) == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64), True
        if vectors is not None and (len(allowed) <= EXACT_FILTER_MAX or len(allowed) * 8 <= total):
            vecs, have = vectors(allowed)
            if len(have) > 0:  # exact scores from the stored embeddings
                scores = vecs @ q[0]
                order = np.lexsort((have, -scores))[:fetch]
                return scores[order].astype(np.float32), have[order], fetch >= len(have)
    f = min(max(fetch, 1), total)
    while True:
        scores, ids = index.search(q, f)
        scores, ids = scores[0], ids[0]
        keep = ids >= 0
        if allowed is not None:
            keep &= np.isin(ids, allowed)
        scores, ids = scores[keep], ids[keep]
        if len(ids) >= fetch or f >= total:
            return scores[:fetch], ids[:fetch], f >= total
        f = min(total, f * 4)


def clip_candidates(
    catalog, index, query: np.ndarray, need: int, allowed: np.ndarray | None, group: bool, vectors: VectorLookup
) -> list[tuple[Any, float]]:
    """ITC-ordered (ClipRecord, itc score) with at least ``need`` entries (videos, if grouping) when there are."""
    if index is None or index.ntotal == 0:
        return []
    fetch = min(max(need, 1), MAX_CANDIDATES)
    while True:
        scores, ids, exhausted = itc(index, query, fetch, allowed, vectors)
        records = catalog.clips_by_ids(ids.tolist())  # drops vectors of clips deleted since
        by_id = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        cands = [(r, by_id[r.id]) for r in records]
        have = len({r.video_id for r, _ in cands}) if group else len(cands)
        if have >= need or exhausted or fetch >= min(index.ntotal, MAX_CANDIDATES):
            return cands
        fetch = min(index.ntotal, MAX_CANDIDATES, fetch * 2 + 16)


@dataclass(frozen=True)
class ClipId:
    """A candidate known by its id only: re-ranking needs ids and scores, the page needs records."""

    id: int


def clip_candidate_ids(index, query: np.ndarray, need: int, allowed: np.ndarray | None, vectors: VectorLookup):
    """ITC-ordered (:class:`ClipId`, itc score), at most ``need``, without reading the catalog."""
    if index is None or index.ntotal == 0:
        return []
    scores, ids, _ = itc(index, query, min(max(need, 1), MAX_CANDIDATES), allowed, vectors)
    return [(ClipId(int(i)), float(s)) for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]


def with_records(catalog, ordered: list, upto: int) -> list | None:
    """The first ``upto`` ranked entries with their clips' catalog records in place of their ids.

    None when some of them have no record (clips deleted since the index was loaded): the caller then
    reads every candidate's record, as ranking with records from the start does.
    """
    head = ordered[:upto]
    records = {r.id: r for r in catalog.clips_by_ids([c.id for c, _, _ in head])}
    if len(records) < len(head):
        return None
    return [(records[c.id], s, lg) for c, s, lg in head]


def text_candidates(catalog, index, query: np.ndarray, fetch: int) -> list[tuple[Any, float]]:
    """ITC-ordered (TextRecord, itc score): the top ``fetch`` captions of the corpus."""
    scores, ids, _ = itc(index, query, fetch, None)
    records = catalog.texts_by_ids(ids.tolist())
    by_id = dict(zip(ids.tolist(), scores.tolist(), strict=True))
    return [(t, by_id[t.id]) for t in records]
