"""retrieval.ranking: the order and score fields, checked without a model or an index."""

from __future__ import annotations

import numpy as np

from retrieval.calibration import RankingParams
from retrieval.ranking import PLAIN, S2, Ranker, as_logits, for_model, frame_aligned_similarity


def test_head_sorted_by_match_logit_then_tail_in_itc_order():
    cands = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6)]
    logits = {"b": np.array([0, 2.0]), "a": np.array([0, 1.0]), "c": np.array([0, 2.0])}
    ranked = S2.order(cands, lambda c: c, logits, rerank_k=3)
    assert [c for c, _, _ in ranked] == ["b", "c", "a", "d"]  # ties keep ITC order
    assert ranked[-1][2] is None
    assert [c for c, _, _ in S2.order(cands, lambda c: c, logits, rerank_k=0)] == ["a", "b", "c", "d"]


def test_score_fields():
    assert S2.score_fields(0.5, None, 3) == {
        "score": 0.5, "itc_score": 0.5, "match_score": None, "match_probability": None, "reranked": False, "rank": 3
    }  # fmt: skip
    s = S2.score_fields(0.5, np.array([0.0, 4.0]), 1)
    assert s["score"] == 4.0 and s["match_score"] == 4.0 and s["reranked"]
    assert s["match_probability"] == round(1 / (1 + np.exp(-4.0)), 4)  # the head's own softmax, uncalibrated
    assert PLAIN.score_fields(0.9, np.array([0.0, 0.8]), 1)["match_probability"] is None


FITTED = RankingParams(logit_scale=50.0, match_weight=2.0, fused_platt=(0.2, -8.0), itc_platt=(12.0, -6.0))


def test_a_fitted_ranking_orders_by_the_fusion_of_cosine_and_head_margin():
    cands = [("a", 0.60), ("b", 0.50), ("c", 0.40)]
    logits = {"a": np.array([0.0, 1.0]), "b": np.array([-1.0, 1.5]), "c": np.array([-3.0, 2.0])}
    by_logit = [c for c, _, _ in S2.order(cands, lambda c: c, logits, 3)]
    fused = Ranker(FITTED)
    by_fusion = [c for c, _, _ in fused.order(cands, lambda c: c, logits, 3)]
    assert by_logit == ["c", "b", "a"]
    # fused: a = 30 + 2*1 = 32, b = 25 + 2*2.5 = 30, c = 20 + 2*5 = 30 (ties keep ITC order)
    assert by_fusion == ["a", "b", "c"]
    hit = fused.score_fields(0.6, logits["a"], 1)
    assert hit["score"] == 32.0 and hit["match_score"] == 1.0
    assert hit["match_probability"] == round(1 / (1 + np.exp(-(0.2 * 32 - 8))), 4)
    plain = fused.score_fields(0.6, None, 7)  # not re-ranked: from the cosine, on the same scale
    assert plain["match_probability"] == round(1 / (1 + np.exp(-(12 * 0.6 - 6))), 4)
    assert fused.describe() == {"rule": "fused", "match_weight": 2.0, "calibrated": True}


def test_for_model_uses_the_checkpoint_s_fitted_ranking():
    class M:
        ranking = None

    assert for_model(M()) is S2
    M.ranking = FITTED
    assert for_model(M()).params is FITTED


def test_frame_aligned_similarity_of_a_clip_with_itself_is_one():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    sim = frame_aligned_similarity(q, np.stack([q, -q]))
    np.testing.assert_allclose(sim, [1.0, -1.0], atol=1e-6)
    assert frame_aligned_similarity(q, np.zeros((1, 2, 8), np.float32)) is None
    assert as_logits([5], sim[:1])[5].tolist() == [0.0, 1.0]
