"""How candidates become the final order, and the score fields every hit carries.

Why a pure module (numpy only: no Flask, SQLAlchemy, faiss or torch): the ranking rule is the part
of search most likely to change, and it should change in one place, testable without a model or
an index.

Candidates arrive in ITC (cosine) order; the top ``rerank_k`` that have a re-rank score (a ``[2]``
logit pair from the matching head) are sorted by their *head score*, and every other candidate
follows in ITC order. The head score is

* the fitted fusion ``logit_scale * cosine + match_weight * (logit[1] - logit[0])`` when the
  model's checkpoint ships :class:`~retrieval.calibration.RankingParams` (fitted on held-out data by
  ``vtr fit-ranking``; the same rule ``vtr eval`` reports as ``fused``);
* else InternVideo2-s2's rule, the match logit ``logit[1]`` alone.

When the home has a query bank (:mod:`retrieval.query_bank`) and the fitted parameters carry a
bank mix, each re-ranked candidate's score array gains a third entry, its bank similarity, and
the head score is the bank mix (``RankingParams.fused`` with ``bank_sim``) instead. When that mix
gives the head no weight (fitted ``match_weight`` 0: it did not help on held-out data), the head is
not run at all; its logits are NaN and the hits' ``match_score`` is null.

Every hit carries ``score`` (what it was ranked by), the raw ``itc_score`` and ``match_score``, and
``match_probability``: the calibrated probability that the hit is right for the query, from the
fused score when re-ranked and from the cosine otherwise, so re-ranked and plain hits (and the
moments grouped under one video) share one readable scale. Without fitted parameters it is the
head's own softmax for re-ranked hits and null otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from retrieval.calibration import RankingParams

Candidate = tuple[Any, float]  # (record, ITC similarity), in ITC order
# (record, ITC similarity, [2] logits, or [3]: logits + bank similarity, or None when not re-ranked)
Ranked = tuple[Any, float, "np.ndarray | None"]


class Ranker:
    """The ranking rule and score fields for one model (``params``: its fitted fusion, or None).

    ``text_video=False`` is for video->video searches, whose re-rank pairs are token-set
    similarities rather than head logits: they sort by that similarity and carry no probability.
    """

    def __init__(self, params: RankingParams | None = None, text_video: bool = True):
        self.params = params if text_video else None
        self.text_video = text_video

    def head_score(self, itc: float, logits: np.ndarray) -> float:
        if self.params is None:
            return float(logits[1])
        return float(self.params.fused(itc, _margin(logits), _bank_sim(logits)))

    @property
    def head_unused(self) -> bool:
        """Whether, with a bank, the fitted mix ignores the head (so it need not run)."""
        return self.uses_bank and self.params.bank.match_weight == 0.0

    @property
    def uses_bank(self) -> bool:
        """Whether re-ranked candidates should carry their bank similarity (a fitted bank mix exists)."""
        return self.params is not None and self.params.bank is not None

    def order(
        self, cands: Sequence[Candidate], key: Callable[[Any], int], logits: dict[int, np.ndarray], rerank_k: int
    ) -> list[Ranked]:
        """Re-ranked head (by head score, ties by ITC order) followed by the rest in ITC order."""
        head = [(c, s, logits[key(c)]) for c, s in cands[:rerank_k] if key(c) in logits]
        head.sort(key=lambda t: -self.head_score(t[1], t[2]))  # stable: equal scores keep ITC order
        scored = {key(c) for c, _, _ in head}
        tail = [(c, s, None) for c, s in cands if key(c) not in scored]
        return head + tail

    def probability(self, itc: float, logits: np.ndarray | None) -> float | None:
        if not self.text_video:
            return None
        if self.params is not None:
            margin = None if logits is None else _margin(logits)
            bank_sim = None if logits is None else _bank_sim(logits)
            return round(float(self.params.probability(itc, margin, bank_sim)), 4)
        if logits is None:
            return None
        return round(float(1.0 / (1.0 + np.exp(float(logits[0]) - float(logits[1])))), 4)  # the head's softmax

    def score_fields(self, itc: float, logits: np.ndarray | None, rank: int) -> dict:
        """The score fields every hit carries."""
        match = None if logits is None or not np.isfinite(logits[1]) else float(logits[1])
        return {
            "score": float(itc) if logits is None else self.head_score(itc, logits),
            "itc_score": float(itc),
            "match_score": match,
            "match_probability": self.probability(itc, logits),
            "reranked": logits is not None,
            "rank": rank,
        }

    def describe(self) -> dict:
        """What ``stats`` reports: which rule ranks re-ranked hits, and its fitted weight."""
        if not self.text_video:
            return {"rule": "token_similarity"}
        if self.params is None:
            return {"rule": "match_logit", "calibrated": False}
        out = {"rule": "fused", "match_weight": self.params.match_weight, "calibrated": True}
        if self.params.bank is not None:
            b = self.params.bank
            out["query_bank"] = {"beta": b.beta, "weight": b.weight, "match_weight": b.match_weight}
        return out


def _bank_sim(scores: np.ndarray) -> float | None:
    return float(scores[2]) if len(scores) > 2 else None


def _margin(scores: np.ndarray) -> float:
    """The head's margin; 0 where the head was not run (NaN logits: the fitted mix gives it no weight)."""
    margin = float(scores[1]) - float(scores[0])
    return margin if np.isfinite(margin) else 0.0


def bank_only(bank_sims: dict[int, float]) -> dict[int, np.ndarray]:
    """Re-rank scores for candidates scored by the bank alone: NaN logits (head not run) + bank similarity."""
    return {i: np.array([np.nan, np.nan, s], np.float32) for i, s in bank_sims.items()}


def with_bank(logits: dict[int, np.ndarray], bank_sims: dict[int, float]) -> dict[int, np.ndarray]:
    """Re-rank scores extended with each candidate's bank similarity; unchanged unless every one has it
    (a mix of extended and plain scores would rank on two scales)."""
    if not logits or not all(i in bank_sims for i in logits):
        return logits
    return {i: np.append(np.asarray(lg, np.float32)[:2], np.float32(bank_sims[i])) for i, lg in logits.items()}


def for_model(model) -> Ranker:
    """The ranking rule of a loaded model: its fitted fusion when its checkpoint ships one, else s2's."""
    params = getattr(model, "ranking", None)
    return S2 if params is None else Ranker(params)


S2 = Ranker()  # the rule for a model without fitted parameters
PLAIN = Ranker(text_video=False)  # video->video


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
