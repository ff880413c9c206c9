"""How candidates become the final order, and the score fields every hit carries.

Why a pure module (numpy only: no Flask, SQLAlchemy, faiss or torch): the ranking rule is the part
of search most likely to change (score fusion, QB-Norm, dual softmax at query time), and it should
change in one place, testable without a model or an index.

The rule today is InternVideo2-s2's: candidates arrive in ITC (cosine) order; the top ``rerank_k``
that have a re-rank score are sorted by their match logit (index 1 of a ``[2]`` logit pair; ties
keep ITC order), and every other candidate follows in ITC order. A hit's ``score`` is the match
logit when it was re-ranked, else its ITC similarity; both are reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

Candidate = tuple[Any, float]  # (record, ITC similarity), in ITC order
Ranked = tuple[Any, float, "np.ndarray | None"]  # (record, ITC similarity, [2] logits or None)


def order(
    cands: Sequence[Candidate], key: Callable[[Any], int], logits: dict[int, np.ndarray], rerank_k: int
) -> list[Ranked]:
    """Re-ranked head (by match logit, ties by ITC order) followed by the rest in ITC order."""
    head = [(c, s, logits[key(c)]) for c, s in cands[:rerank_k] if key(c) in logits]
    head.sort(key=lambda t: -float(t[2][1]))  # stable: equal logits keep ITC order
    scored = {key(c) for c, _, _ in head}
    tail = [(c, s, None) for c, s in cands if key(c) not in scored]
    return head + tail


def score_fields(itc: float, logits: np.ndarray | None, rank: int) -> dict:
    """The score fields every hit carries: ranked by the match logit when re-ranked, else by ITC."""
    match = None if logits is None else float(logits[1])
    return {
        "score": float(itc) if match is None else match,
        "itc_score": float(itc),
        "match_score": match,
        "reranked": logits is not None,
        "rank": rank,
    }


def as_logits(ids: Sequence[int], similarities: np.ndarray) -> dict[int, np.ndarray]:
    """Similarities from a re-ranker without a head (video->video) as ``[0, s]`` logit pairs for :func:`order`."""
    return {i: np.array([0.0, float(x)], np.float32) for i, x in zip(ids, similarities, strict=True)}


def frame_aligned_similarity(query: np.ndarray, cands: np.ndarray) -> np.ndarray | None:
    """Mean over tokens of the cosine between the query's token set and each candidate's, token by token.

    ``query`` [N, W] and ``cands`` [n, N, W] are the sets the matching head reads (class token + one
    pooled token per frame); comparing frame i with frame i adds the temporal alignment one pooled
    embedding loses. A clip compared with itself scores 1. None when the shapes differ.
    """
    if cands.shape[1:] != query.shape:
        return None
    q = query / np.maximum(np.linalg.norm(query, axis=-1, keepdims=True), 1e-12)
    c = cands / np.maximum(np.linalg.norm(cands, axis=-1, keepdims=True), 1e-12)
    return (c * q[None]).sum(-1).mean(-1)
