"""retrieval.ranking: the order and score fields, checked without a model or an index."""

from __future__ import annotations

import numpy as np

from retrieval.ranking import as_logits, frame_aligned_similarity, order, score_fields


def test_head_sorted_by_match_logit_then_tail_in_itc_order():
    cands = [("a", 0.9), ("b", 0.8), ("c", 0.7), ("d", 0.6)]
    logits = {"b": np.array([0, 2.0]), "a": np.array([0, 1.0]), "c": np.array([0, 2.0])}
    ranked = order(cands, lambda c: c, logits, rerank_k=3)
    assert [c for c, _, _ in ranked] == ["b", "c", "a", "d"]  # ties keep ITC order
    assert ranked[-1][2] is None
    assert [c for c, _, _ in order(cands, lambda c: c, logits, rerank_k=0)] == ["a", "b", "c", "d"]


def test_score_fields():
    assert score_fields(0.5, None, 3) == {
        "score": 0.5, "itc_score": 0.5, "match_score": None, "reranked": False, "rank": 3
    }  # fmt: skip
    s = score_fields(0.5, np.array([0.0, 4.0]), 1)
    assert s["score"] == 4.0 and s["match_score"] == 4.0 and s["reranked"]


def test_frame_aligned_similarity_of_a_clip_with_itself_is_one():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((3, 8)).astype(np.float32)
    sim = frame_aligned_similarity(q, np.stack([q, -q]))
    np.testing.assert_allclose(sim, [1.0, -1.0], atol=1e-6)
    assert frame_aligned_similarity(q, np.zeros((1, 2, 8), np.float32)) is None
    assert as_logits([5], sim[:1])[5].tolist() == [0.0, 1.0]
