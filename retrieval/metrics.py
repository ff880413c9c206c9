"""Retrieval metrics as the field reports them (MSR-VTT 1k-A style): R@1/5/10, MdR, MnR, DSL.

A query may have several correct items (a video described by several captions, or identical
captions of different clips); its rank is the best rank of any of them, as in the CLIP4Clip /
InternVideo evaluation code. Ranks are 1-based; a tie with a wrong item counts against the query
(pessimistic), so a constant scorer cannot look good.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

RECALL_AT = (1, 5, 10)


def _as_gt_mask(gt: Sequence[Iterable[int]] | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if isinstance(gt, np.ndarray) and gt.dtype == bool:
        if gt.shape != shape:
            raise ValueError(f"ground-truth mask shape {gt.shape} != similarity shape {shape}")
        return gt
    mask = np.zeros(shape, bool)
    if len(gt) != shape[0]:
        raise ValueError(f"{len(gt)} ground-truth entries for {shape[0]} queries")
    for i, items in enumerate(gt):
        items = [items] if np.isscalar(items) else list(items)
        if not items:
            raise ValueError(f"query {i} has no correct item")
        mask[i, items] = True
    return mask


def ranks(sim: np.ndarray, gt: Sequence[Iterable[int]] | np.ndarray) -> np.ndarray:
    """1-based rank of the best correct item per query row. gt: per-row ids, a single id, or a bool mask."""
    sim = np.asarray(sim, dtype=np.float64)
    if sim.ndim != 2:
        raise ValueError("similarity must be a 2-D [queries, items] matrix")
    mask = _as_gt_mask(gt, sim.shape)
    best = np.where(mask, sim, -np.inf).max(axis=1)  # best correct score per query
    wrong_better = ((sim >= best[:, None]) & ~mask).sum(axis=1)  # ties with wrong items count against
    return (1 + wrong_better).astype(np.int64)


def summarize(r: np.ndarray) -> dict[str, float]:
    """Ranks -> {"R@1", "R@5", "R@10", "MdR", "MnR", "n"} (recalls in percent)."""
    r = np.asarray(r)
    if r.size == 0:
        return {**{f"R@{k}": float("nan") for k in RECALL_AT}, "MdR": float("nan"), "MnR": float("nan"), "n": 0}
    out = {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in RECALL_AT}
    out["MdR"] = float(np.median(r))
    out["MnR"] = float(np.mean(r))
    out["n"] = int(r.size)
    return out


def retrieval_metrics(sim: np.ndarray, gt) -> dict[str, float]:
    return summarize(ranks(sim, gt))


def dual_softmax(sim: np.ndarray, scale: float = 100.0) -> np.ndarray:
    """DSL (Cheng et al. 2021), as InternVideo applies it: weight each score by a softmax over the
    *other* direction's queries (axis 0), which down-weights items that match every query ("hubs").
    ``sim`` is [queries, items]; the result ranks items for each query row."""
    s = np.asarray(sim, dtype=np.float64) * scale
    s = s - s.max(axis=0, keepdims=True)
    prior = np.exp(s)
    prior /= prior.sum(axis=0, keepdims=True)
    return np.asarray(sim, dtype=np.float64) * prior


def rerank_scores(base: np.ndarray, topk_idx: np.ndarray, topk_scores: np.ndarray) -> np.ndarray:
    """Scores whose ranking puts each row's top-k candidates first, ordered by ``topk_scores``
    (the match head's logit), then every other item in ``base`` order — the s2 re-rank protocol."""
    base = np.asarray(base, dtype=np.float64)
    lo, hi = base.min(), base.max()
    out = base - (hi - lo) - 1.0  # every non-candidate below ...
    k = np.asarray(topk_scores, dtype=np.float64)
    shifted = k - k.min(axis=1, keepdims=True) + 1.0  # ... every candidate (which are >= hi + 1)
    rows = np.arange(base.shape[0])[:, None]
    out[rows, topk_idx] = hi + shifted
    return out
