"""Metrics against a naive, obviously-correct implementation (sort and look)."""

from __future__ import annotations

import numpy as np
import pytest

from retrieval.metrics import dual_softmax, ranks, rerank_scores, retrieval_metrics, summarize


def naive_ranks(sim, gt_sets):
    out = []
    for row, gt in zip(sim, gt_sets):
        # pessimistic: among equal scores wrong items come first
        order = sorted(range(len(row)), key=lambda j: (-row[j], 1 if j in gt else 0))
        out.append(min(order.index(j) for j in gt) + 1)
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranks_match_naive_with_multiple_ground_truths(seed):
    rng = np.random.default_rng(seed)
    sim = rng.normal(size=(40, 60))
    sim[:, :5] = np.round(sim[:, :5], 1)  # some ties
    sim[3, :] = 0.5  # a constant row: all ties
    gt = [set(rng.choice(60, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(40)]
    np.testing.assert_array_equal(ranks(sim, gt), naive_ranks(sim, gt))
    assert ranks(sim, gt)[3] == 60 - len(gt[3]) + 1  # ties count against the query


def test_summary_values():
    m = summarize(np.array([1, 2, 6, 11, 1]))
    assert m["R@1"] == 40.0 and m["R@5"] == 60.0 and m["R@10"] == 80.0
    assert m["MdR"] == 2.0 and m["MnR"] == pytest.approx(4.2) and m["n"] == 5


def test_identity_similarity_is_perfect_and_reversed_is_worst():
    sim = np.eye(10)
    assert retrieval_metrics(sim, list(range(10)))["R@1"] == 100.0
    assert retrieval_metrics(-sim, list(range(10)))["MnR"] == 10.0


def test_bool_mask_equals_id_lists():
    rng = np.random.default_rng(5)
    sim = rng.normal(size=(8, 8))
    mask = rng.random((8, 8)) < 0.3
    mask[np.arange(8), np.arange(8)] = True
    ids = [set(np.flatnonzero(r)) for r in mask]
    np.testing.assert_array_equal(ranks(sim, mask), ranks(sim, ids))


def test_bad_ground_truth_is_a_clear_error():
    with pytest.raises(ValueError, match="no correct item"):
        ranks(np.zeros((2, 3)), [[0], []])
    with pytest.raises(ValueError, match="ground-truth entries"):
        ranks(np.zeros((2, 3)), [[0]])


def test_dual_softmax_matches_naive_and_demotes_hubs():
    rng = np.random.default_rng(0)
    sim = rng.uniform(-1, 1, size=(5, 7))
    naive = np.array(
        [[sim[i, j] * np.exp(100 * sim[i, j]) / sum(np.exp(100 * sim[q, j]) for q in range(5)) for j in range(7)]
         for i in range(5)]
    )  # fmt: skip
    np.testing.assert_allclose(dual_softmax(sim), naive, rtol=1e-9)
    # a hub video scores high for every text; DSL should stop it from winning row 0
    hub = np.array([[0.50, 0.55], [0.10, 0.54], [0.10, 0.53]])
    assert ranks(hub, [0, 0, 0])[0] == 2 and ranks(dual_softmax(hub, 50), [0, 0, 0])[0] == 1


def test_rerank_scores_follow_the_protocol():
    base = np.array([[0.9, 0.8, 0.7, 0.1, 0.0]])
    idx = np.array([[0, 1, 2]])
    scores = np.array([[-1.0, 5.0, 2.0]])
    order = np.argsort(-rerank_scores(base, idx, scores)[0])
    assert order.tolist() == [1, 2, 0, 3, 4]
