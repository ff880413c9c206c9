"""How a candidate's two scores become one ranking score and a match probability.

The dual encoder gives a cosine (ITC) for every clip; the matching head gives a match margin
(``logit[match] - logit[no match]``) for the top candidates only. Neither alone is the best order:
the head sees frame order and binding that one pooled vector loses, while ITC is the steadier
signal for coarse content. BLIP adds the two; here the mix is *fitted* on a held-out split of the
model's own data, and shipped in the checkpoint's metadata beside the weights it belongs to:

    fused  = logit_scale * cosine + match_weight * margin
    p(match) = sigmoid(a * fused + b)            (Platt scaling, fitted on the same split)
    p(match) = sigmoid(a_itc * cosine + b_itc)   (hits that were not re-ranked)

Both probabilities estimate one thing (is this the right clip for this text?), so re-ranked and
plain hits are comparable, which raw logits and cosines are not.

When the search has a query bank (:mod:`retrieval.query_bank`: the home's captions for
text->video, its clips for video->text), a second fitted mix also subtracts each candidate's soft
maximum similarity to the bank (QB-Norm), with its own match weight and Platt scaling:

    fused_bank = logit_scale * (cosine - bank_weight * bank_sim) + bank_match_weight * margin

It is fitted on the same split with the split's own captions and clips as the banks, and kept only
when it beats the plain mix there. Nothing here imports torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

METADATA_KEY = "ranking"  # key of the fitted parameters in a project checkpoint's metadata
MATCH_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 1000.0)
BANK_BETAS = (10.0, 20.0, 30.0, 50.0, 100.0, 200.0)  # inverse temperatures of the bank's soft maximum
BANK_WEIGHTS = (0.25, 0.5, 0.75, 1.0)  # how much of the bank similarity to subtract (1: inverted softmax)
# The head is given a weight only where it adds at least this much mean R@1 (points) on the held-out
# split. Why: its pass over the top ``rerank_k`` is most of a re-ranked query's cost (64 candidates:
# 3.4-3.6x a plain query over HTTP, against 1.2x when the fitted mix leaves it out), and a gain
# below ~1 point (20 of 2,000 validation queries) is within what moves between test splits.
MIN_HEAD_GAIN = 1.0


@dataclass(frozen=True)
class BankParams:
    """The fitted query-bank mix (see the module docstring); used when a search has a bank."""

    beta: float
    weight: float
    match_weight: float
    fused_platt: tuple[float, float]


@dataclass(frozen=True)
class RankingParams:
    logit_scale: float  # 1/temperature of the dual encoder the weights were fitted with
    match_weight: float  # weight of the head's margin against the scaled cosine (large = head alone)
    fused_platt: tuple[float, float]  # (a, b): p = sigmoid(a * fused + b)
    itc_platt: tuple[float, float]  # (a, b): p = sigmoid(a * cosine + b), for hits without a head score
    fitted_on: dict = field(default_factory=dict)  # what split, how many queries, the R@1 it reached
    bank: BankParams | None = None  # the mix with a query bank; None: not fitted, or it did not help

    def fused(self, cosine: np.ndarray, margin: np.ndarray, bank_sim: np.ndarray | None = None) -> np.ndarray:
        """The ranking score; with ``bank_sim`` (and fitted bank parameters) the query-bank mix."""
        cosine, margin = np.asarray(cosine, np.float64), np.asarray(margin, np.float64)
        if bank_sim is None or self.bank is None:
            return self.logit_scale * cosine + self.match_weight * margin
        corrected = cosine - self.bank.weight * np.asarray(bank_sim, np.float64)
        return self.logit_scale * corrected + self.bank.match_weight * margin

    def probability(self, cosine, margin=None, bank_sim=None) -> np.ndarray:
        """p(match) of hits: from the fused score where a margin exists, else from the cosine alone."""
        cosine = np.asarray(cosine, np.float64)
        if margin is None:
            return _sigmoid(self.itc_platt[0] * cosine + self.itc_platt[1])
        a, b = self.bank.fused_platt if bank_sim is not None and self.bank is not None else self.fused_platt
        return _sigmoid(a * self.fused(cosine, margin, bank_sim) + b)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | None) -> RankingParams | None:
        """None for a checkpoint without fitted ranking (foreign weights, older project files)."""
        if not text:
            return None
        try:
            d = json.loads(text)
            bank = d.get("bank")
            if bank is not None:
                bank = BankParams(
                    beta=float(bank["beta"]),
                    weight=float(bank["weight"]),
                    match_weight=float(bank["match_weight"]),
                    fused_platt=tuple(float(x) for x in bank["fused_platt"]),
                )
            return cls(
                logit_scale=float(d["logit_scale"]),
                match_weight=float(d["match_weight"]),
                fused_platt=tuple(float(x) for x in d["fused_platt"]),
                itc_platt=tuple(float(x) for x in d["itc_platt"]),
                fitted_on=dict(d.get("fitted_on") or {}),
                bank=bank,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def platt_fit(scores: np.ndarray, labels: np.ndarray, iters: int = 100, l2: float = 1e-4) -> tuple[float, float]:
    """(a, b) maximising the likelihood of sigmoid(a*s+b) for binary labels (Newton's method).

    Labels are weighted so positives and negatives count equally in total: a search's candidate
    list holds one right clip among many wrong ones, and the unweighted fit would learn that prior
    rather than the evidence in the score.
    """
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels, np.float64).ravel()
    n_pos, n_neg = max(1.0, y.sum()), max(1.0, (1 - y).sum())
    w = np.where(y > 0, 0.5 / n_pos, 0.5 / n_neg)
    mu, sd = s.mean(), s.std() or 1.0
    z = (s - mu) / sd
    a, b = 1.0, 0.0
    for _ in range(iters):
        p = _sigmoid(a * z + b)
        g = np.array([np.sum(w * (p - y) * z) + l2 * a, np.sum(w * (p - y))])
        h = w * p * (1 - p)
        hess = np.array([[np.sum(h * z * z) + l2, np.sum(h * z)], [np.sum(h * z), np.sum(h) + 1e-12]])
        step = np.linalg.solve(hess, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-9:
            break
    return float(a / sd), float(b - a * mu / sd)


def _topk_r1(sim: np.ndarray, top: np.ndarray, fused_top: np.ndarray, gt: np.ndarray) -> float:
    """R@1 when each row's top-k candidates are re-ordered by ``fused_top`` (the rest keep ``sim`` order)."""
    best = top[np.arange(len(top)), np.argmax(fused_top, axis=1)]
    return float(gt[np.arange(len(top)), best].mean() * 100.0)


def fit_ranking(
    logit_scale: float,
    directions: list[dict[str, Any]],
    fitted_on: dict | None = None,
    weights: tuple[float, ...] = MATCH_WEIGHTS,
    min_head_gain: float | None = None,
) -> RankingParams:
    """Choose ``match_weight`` by mean R@1 over the given directions, then fit both Platt scalings;
    then the query-bank mix, when every direction has a bank, kept only if it raises mean R@1.
    Either mix gives the head a weight only when that adds ``min_head_gain`` mean R@1 over the same
    mix without it (None: ``MIN_HEAD_GAIN``).

    Each direction is ``{"sim": [Q,N] cosines, "top": [Q,k] candidate indices, "margin": [Q,k] head
    margins, "gt": [Q,N] bool}`` (text->video and video->text of a held-out split), optionally with
    ``"gallery": [N,D]`` (the ranked items' embeddings) and ``"bank": [B,D]`` (a query bank).
    """
    min_head_gain = MIN_HEAD_GAIN if min_head_gain is None else float(min_head_gain)
    directions = [dict(d) for d in directions]  # the working copies gain derived arrays
    for d in directions:
        d["cos"] = np.take_along_axis(d["sim"], d["top"], 1)
        d["label"] = np.take_along_axis(d["gt"], d["top"], 1)

    def mean_r1(scorer) -> float:
        return float(np.mean([_topk_r1(d["sim"], d["top"], scorer(d), d["gt"]) for d in directions]))

    scores = [mean_r1(lambda d, w=w: logit_scale * d["cos"] + w * d["margin"]) for w in weights]
    best = _with_head_only_if_it_pays(scores, weights, min_head_gain)
    match_weight = float(weights[best])
    cos_top, margin, labels = (
        np.concatenate([d[key].ravel() for d in directions]) for key in ("cos", "margin", "label")
    )
    report = {"r1_by_match_weight": dict(zip([str(w) for w in weights], [round(s, 2) for s in scores], strict=True))}
    params = RankingParams(
        logit_scale=float(logit_scale),
        match_weight=match_weight,
        fused_platt=platt_fit(logit_scale * cos_top + match_weight * margin, labels),
        itc_platt=platt_fit(cos_top, labels),
        fitted_on={**(fitted_on or {}), **report},
    )
    if all("bank" in d and "gallery" in d for d in directions):
        params = _fit_bank(params, directions, mean_r1, scores[best], weights, min_head_gain)
    return params


def _with_head_only_if_it_pays(scores: list[float], weights, min_head_gain: float) -> int:
    """Index of the best-scoring weight (the smallest that reaches it), or of weight 0 when the best
    beats weight 0 by less than ``min_head_gain``."""
    best = int(np.argmax(scores))  # first maximum: the smallest weight that reaches it
    zero = [i for i, w in enumerate(weights) if w == 0]
    if zero and scores[best] - scores[zero[0]] < min_head_gain:
        return zero[0]
    return best


def _fit_bank(
    params: RankingParams, directions: list[dict], mean_r1, plain_r1: float, weights, min_head_gain: float
) -> RankingParams:
    """The best (beta, bank weight, match weight) by mean R@1, the head weighted only where it adds
    ``min_head_gain``; ``params`` unchanged unless the mix beats ``plain_r1``."""
    from dataclasses import replace

    from retrieval.query_bank import bank_similarities

    found = {True: (None, -1.0), False: (None, -1.0)}  # with the head / without: (beta, bw, w), R@1
    grid: dict[tuple[float, float, float], float] = {}  # (beta, bw, w) -> mean R@1
    sims: dict[float, list[np.ndarray]] = {}  # beta -> each direction's candidates' bank similarities
    for beta in BANK_BETAS:
        sims[beta] = [bank_similarities(d["gallery"], d["bank"], beta)[d["top"]] for d in directions]
        for d, bank_sim in zip(directions, sims[beta], strict=True):
            d["bank_sim"] = bank_sim
        for bw in BANK_WEIGHTS:
            for w in weights:
                r1 = mean_r1(
                    lambda d, bw=bw, w=w: params.logit_scale * (d["cos"] - bw * d["bank_sim"]) + w * d["margin"]
                )
                grid[beta, bw, float(w)] = r1
                if r1 > found[w > 0][1] + 1e-9:
                    found[w > 0] = (beta, bw, float(w)), r1
    head_gain = found[True][1] - found[False][1]
    best, best_r1 = found[head_gain >= min_head_gain and found[True][0] is not None]
    if best_r1 <= plain_r1 + 1e-9:
        best, best_r1 = None, plain_r1
    report = {**params.fitted_on, "r1_plain": round(plain_r1, 2), "r1_bank": round(best_r1, 2)}
    if best is None:
        return replace(params, fitted_on={**report, "bank": "no gain on this split"})
    beta, bw, w = best
    # what the head adds on top of the bank correction (the head pass is most of a re-ranked query's cost)
    report["r1_bank_by_match_weight"] = {str(v): round(grid[beta, bw, float(v)], 2) for v in weights}
    unscaled = replace(params, bank=BankParams(beta=beta, weight=bw, match_weight=w, fused_platt=(1.0, 0.0)))
    fused = [unscaled.fused(d["cos"], d["margin"], b).ravel() for d, b in zip(directions, sims[beta], strict=True)]
    labels = np.concatenate([d["label"].ravel() for d in directions])
    bank = replace(unscaled.bank, fused_platt=platt_fit(np.concatenate(fused), labels))
    return replace(params, bank=bank, fitted_on=report)


def embed_in_checkpoint(path, params: RankingParams) -> None:
    """Store ``params`` in a project ``.safetensors`` file's metadata (atomically, weights untouched).

    The fitted mix belongs to the weights it was fitted on, so it travels inside their file.
    """
    import os
    from pathlib import Path

    from safetensors import safe_open
    from safetensors.torch import save_file

    path = Path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta[METADATA_KEY] = params.to_json()
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
