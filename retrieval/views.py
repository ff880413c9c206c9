"""JSON-ready views of catalog records and search results (plain dicts, in documented field order).

Why here and not in the web app: ``vtr search --json``, the notebook API and the HTTP routes all
return these shapes; the web app only adds URLs. Score fields come from :mod:`retrieval.ranking`.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from retrieval.query import MAX_MOMENTS
from retrieval.ranking import S2, Ranked, Ranker


def clip_view(rec) -> dict:
    """A clip (catalog ``ClipRecord``) with its video's path, library and duration."""
    return {
        "clip_id": int(rec.id),
        "video_id": int(rec.video_id),
        "video_path": rec.path,
        "library": rec.root,
        "index": int(rec.idx),
        "start": round(float(rec.start), 3),
        "end": round(float(rec.end), 3),
        "video_duration": rec.duration,
    }


def video_view(v, clips: Sequence) -> dict:
    """A video (``VideoRecord``) with its clips; a failed video's reason is ``error``, a partly readable one's ``warning``."""
    return {
        "video_id": v.id,
        "path": v.path,
        "name": os.path.basename(v.path),
        "library": v.root,
        "status": v.status,
        "warning": v.error if v.status == "indexed" else None,
        "error": v.error if v.status != "indexed" else None,
        "duration": v.duration,
        "fps": v.fps,
        "width": v.width,
        "height": v.height,
        "codec": v.codec,
        "frame_offset": v.frame_offset,
        "size": v.size,
        "model": v.model,
        "clips": [clip_view(c) for c in clips],
    }


def index_facts(index) -> dict | None:
    """What ``stats`` reports about a vector index (None when there is none yet)."""
    if index is None:
        return None
    return {
        "vectors": index.ntotal,
        "dim": index.dim,
        "factory": index.factory,
        "metric": index.metric,
        "model": index.model,
    }


def clip_hit(rec, itc: float, logits, rank: int, ranker: Ranker = S2) -> dict:
    """One ranked clip as a search hit."""
    return {
        "clip_id": int(rec.id),
        "video_id": int(rec.video_id),
        "video_path": rec.path,
        "start": round(float(rec.start), 3),
        "end": round(float(rec.end), 3),
        **ranker.score_fields(itc, logits, rank),
    }


def text_hit(rec, itc: float, logits, rank: int, ranker: Ranker = S2) -> dict:
    """One ranked caption as a search hit."""
    return {"text_id": int(rec.id), "text": rec.text, "source": rec.source, **ranker.score_fields(itc, logits, rank)}


def page_clips(ordered: Sequence[Ranked], offset: int, k: int, group: bool, ranker: Ranker = S2) -> list[dict]:
    """The requested page of clip hits; with ``group``, one entry per video (its best moment plus others)."""
    if not group:  # hits for the page only: scoring a hit costs a few fused scores and a probability
        page = enumerate(ordered[offset : offset + k], start=offset + 1)
        return [clip_hit(rec, itc, lg, i, ranker) for i, (rec, itc, lg) in page]
    hits = [clip_hit(rec, itc, lg, i + 1, ranker) for i, (rec, itc, lg) in enumerate(ordered)]
    groups: OrderedDict[int, dict] = OrderedDict()
    for h in hits:
        g = groups.get(h["video_id"])
        if g is None:
            groups[h["video_id"]] = {**h, "rank": len(groups) + 1, "moments": []}
        elif len(g["moments"]) < MAX_MOMENTS:
            g["moments"].append(h)
    return list(groups.values())[offset : offset + k]


def page_texts(ordered: Sequence[Ranked], offset: int, k: int, ranker: Ranker = S2) -> list[dict]:
    """The requested page of caption hits."""
    page = enumerate(ordered[offset : offset + k], start=offset + 1)
    return [text_hit(t, itc, lg, i, ranker) for i, (t, itc, lg) in page]


def best_probability(ordered: Sequence[Ranked], ranker: Ranker) -> float | None:
    """``match_probability`` of the best hit (rank 1), None when there is none or it has none."""
    if not ordered:
        return None
    _, itc, logits = ordered[0]
    return ranker.probability(itc, logits)


def no_good_match(best: float | None, threshold: float) -> bool | None:
    """True when even the best hit is below ``threshold``; None when the best hit has no probability."""
    return None if best is None else bool(best < threshold)


def envelope(
    query: Any,
    target: str,
    t0: float,
    offset: int,
    k: int,
    reranked: int,
    results: list[dict],
    relevance: tuple[float | None, float] = (None, 0.5),
) -> dict:
    """The response every search returns: the query as understood, timing, page, relevance and results.

    ``relevance`` is (the best hit's match probability, the ``min_match_probability`` setting).
    """
    best, threshold = relevance
    return {
        "query": query,
        "target": target,
        "took_ms": round((time.perf_counter() - t0) * 1000, 2),
        "offset": offset,
        "k": k,
        "reranked": reranked,
        "no_good_match": no_good_match(best, threshold),
        "best_match_probability": best,
        "min_match_probability": threshold,
        "results": results,
    }
