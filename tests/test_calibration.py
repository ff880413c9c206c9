"""Fused ranking and match-probability calibration, against direct computations."""

from __future__ import annotations

import numpy as np

from retrieval.calibration import RankingParams, fit_ranking, platt_fit


def test_platt_fit_recovers_a_known_logistic_model():
    rng = np.random.default_rng(0)
    s = rng.normal(size=20000) * 2
    y = rng.random(20000) < 1 / (1 + np.exp(-(1.5 * s - 0.5)))
    a, b = platt_fit(s, y)
    # balanced weighting shifts the intercept by the log prior odds; the slope is unchanged
    prior = np.log(y.mean() / (1 - y.mean()))
    assert abs(a - 1.5) < 0.1 and abs(b - (-0.5 - prior)) < 0.1


def _direction(rng, q: int, n: int, k: int, cos_noise: float, margin_noise: float) -> dict:
    gt = np.eye(q, n, dtype=bool)
    sim = gt * 0.1 + rng.normal(size=(q, n)) * cos_noise
    top = np.argsort(-sim, axis=1)[:, :k]
    truth = np.take_along_axis(gt, top, 1)
    margin = truth * 2.0 + rng.normal(size=top.shape) * margin_noise
    return {"sim": sim, "top": top, "margin": margin, "gt": gt}


def test_fit_ranking_trusts_whichever_score_separates_and_calibrates():
    rng = np.random.default_rng(1)
    head_good = [_direction(rng, 300, 300, 16, 0.05, 0.3)]
    fit = fit_ranking(10.0, head_good)
    r1 = fit.fitted_on["r1_by_match_weight"]
    assert fit.match_weight >= 0.5 and r1[str(fit.match_weight)] > r1["0.0"] + 10  # the head is the better signal
    itc_good = [_direction(rng, 300, 300, 16, 0.01, 20.0)]
    assert fit_ranking(10.0, itc_good).match_weight <= 0.1  # a noisy head gets (almost) no weight
    d = head_good[0]
    cos = np.take_along_axis(d["sim"], d["top"], 1)
    p = fit.probability(cos, d["margin"])
    truth = np.take_along_axis(d["gt"], d["top"], 1)
    assert p[truth].mean() > 0.8 and p[~truth].mean() < 0.2
    assert ((fit.probability(cos) >= 0) & (fit.probability(cos) <= 1)).all()


def test_ranking_params_round_trip_and_reject_garbage():
    rp = RankingParams(50.0, 0.5, (0.1, -2.0), (8.0, -3.0), {"data": "x"})
    assert RankingParams.from_json(rp.to_json()) == rp
    assert RankingParams.from_json(None) is None
    assert RankingParams.from_json('{"logit_scale": "x"}') is None
    assert RankingParams.from_json("not json") is None


def test_the_head_gets_a_weight_only_where_it_adds_the_minimum_gain():
    """The head pass costs most of a re-ranked query: a gain under ``min_head_gain`` R@1 leaves it out."""
    rng = np.random.default_rng(2)
    dirs = [_direction(rng, 400, 400, 16, 0.035, 1.4)]  # both signals informative; the head adds a little
    free = fit_ranking(10.0, dirs, min_head_gain=0.0)
    r1 = free.fitted_on["r1_by_match_weight"]
    gain = r1[str(free.match_weight)] - r1["0.0"]
    assert free.match_weight > 0 and gain > 0
    assert fit_ranking(10.0, dirs, min_head_gain=gain - 0.01).match_weight == free.match_weight
    assert fit_ranking(10.0, dirs, min_head_gain=gain + 0.01).match_weight == 0.0
