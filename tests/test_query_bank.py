"""Query-bank normalisation (QB-Norm): the bank similarity, its fitting, and the engine's use of it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from retrieval.calibration import BankParams, RankingParams, fit_ranking
from retrieval.query_bank import BANK_MIN, BankCache, QueryBank, bank_similarities, soft_max_similarity


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_soft_max_similarity_is_the_log_mean_exp_of_scaled_cosines():
    rng = np.random.default_rng(0)
    items, bank = _unit(rng.normal(size=(5, 16))), _unit(rng.normal(size=(40, 16)))
    for beta in (1.0, 30.0):
        direct = np.log(np.mean(np.exp(beta * items @ bank.T), axis=1)) / beta
        assert np.allclose(soft_max_similarity(items, bank, beta), direct, atol=1e-5)
    # on the cosine scale whatever the bank's size: a bank repeated twice gives the same values
    assert np.allclose(
        soft_max_similarity(items, np.vstack([bank, bank]), 30.0), soft_max_similarity(items, bank, 30.0)
    )
    assert np.allclose(bank_similarities(items, bank, 30.0, chunk=2), soft_max_similarity(items, bank, 30.0))


def test_a_hub_close_to_many_bank_queries_scores_higher_than_a_specific_item():
    rng = np.random.default_rng(1)
    hub, specific = _unit(rng.normal(size=(2, 32)))
    bank = _unit(hub + 0.3 * rng.normal(size=(50, 32)))  # the bank's queries all resemble the hub
    sims = soft_max_similarity(np.stack([hub, specific]), bank, 30.0)
    assert sims[0] > sims[1] + 0.3


def test_query_bank_samples_large_id_sets_reproducibly():
    ids = np.arange(1000, 2000)
    fetch = lambda got: np.repeat(got[:, None].astype(np.float32), 4, axis=1)  # noqa: E731
    a, b = QueryBank.sample(ids, fetch, size=100, seed=3), QueryBank.sample(ids, fetch, size=100, seed=3)
    assert len(a) == 100 and np.array_equal(a.vectors, b.vectors)
    assert set(a.vectors[:, 0].astype(int)) <= set(ids.tolist())
    assert len(QueryBank.sample(ids[:50], fetch, size=100)) == 50
    assert not QueryBank.sample(ids[: BANK_MIN - 1], fetch).usable


def test_bank_cache_rebuilds_when_the_index_grows_or_is_replaced():
    from retrieval.index import VectorIndex

    rng = np.random.default_rng(2)
    index = VectorIndex.create(8, model="m", factory="Flat")
    cache = BankCache()
    index.add(_unit(rng.normal(size=(BANK_MIN - 1, 8))).astype(np.float32), np.arange(BANK_MIN - 1))
    assert cache.get("texts", index) is None  # too small to estimate anything
    index.add(_unit(rng.normal(size=(5, 8))).astype(np.float32), np.arange(100, 105))
    bank = cache.get("texts", index)
    assert bank is not None and len(bank) == BANK_MIN + 4 and cache.get("texts", index) is bank
    index.add(_unit(rng.normal(size=(1, 8))).astype(np.float32), np.array([200]))
    assert len(cache.get("texts", index)) == BANK_MIN + 5


def _hubby_direction(rng, n: int = 300, k: int = 16, d: int = 24) -> dict:
    """A split whose wrong candidates are often hubs: items near the mean of all queries."""
    queries = _unit(rng.normal(size=(n, d)))
    items = _unit(queries + 0.9 * rng.normal(size=(n, d)))
    hubs = rng.choice(n, n // 5, replace=False)
    items[hubs] = _unit(items[hubs] + 3.0 * queries.mean(0) / np.linalg.norm(queries.mean(0)))
    sim = queries @ items.T
    top = np.argsort(-sim, axis=1)[:, :k]
    gt = np.eye(n, dtype=bool)
    margin = rng.normal(size=top.shape)  # a head that knows nothing
    return {"sim": sim, "top": top, "margin": margin, "gt": gt, "gallery": items, "bank": queries}


def test_fit_ranking_keeps_a_bank_mix_only_where_it_raises_r1():
    rng = np.random.default_rng(4)
    fit = fit_ranking(20.0, [_hubby_direction(rng)])
    assert fit.bank is not None and fit.fitted_on["r1_bank"] > fit.fitted_on["r1_plain"]
    assert RankingParams.from_json(fit.to_json()) == fit
    perfect = _hubby_direction(rng)
    perfect["sim"] = perfect["sim"] + 5.0 * perfect["gt"]  # ITC already ranks every right item first
    perfect["top"] = np.argsort(-perfect["sim"], axis=1)[:, :16]
    kept_plain = fit_ranking(20.0, [perfect])
    assert kept_plain.bank is None and kept_plain.fitted_on["r1_plain"] == 100.0  # nothing to gain: no bank mix


def test_the_bank_mix_weights_the_head_only_where_it_adds_the_minimum_gain():
    rng = np.random.default_rng(5)
    d = _hubby_direction(rng)
    top_truth = np.take_along_axis(d["gt"], d["top"], 1)
    d["margin"] = 1.2 * top_truth + rng.normal(size=d["top"].shape)  # a head that knows a little
    free = fit_ranking(20.0, [d], min_head_gain=0.0)
    by_w = free.fitted_on["r1_bank_by_match_weight"]
    gain = free.fitted_on["r1_bank"] - by_w["0.0"]
    assert free.bank.match_weight > 0 and gain > 0
    strict = fit_ranking(20.0, [d], min_head_gain=gain + 0.5)
    assert strict.bank is not None and strict.bank.match_weight == 0.0
    assert strict.fitted_on["r1_bank"] <= free.fitted_on["r1_bank"]


def _engine(search_home, tiny, bank: BankParams | None):
    from retrieval.engine import SearchEngine

    model = copy.deepcopy(tiny[0])
    model.match_head_trained = True
    model.ranking = RankingParams(10.0, 1.0, (1.0, 0.0), (10.0, -2.0), bank=bank)
    return SearchEngine(search_home["home"], bundle=(model, *tiny[1:]), rerank_k=8, reload_interval=0.0)


def test_engine_lowers_each_re_ranked_clip_by_its_similarity_to_the_caption_corpus(search_home, tiny):
    """Same fitted mix with and without a bank (same match weight): scores differ by exactly
    logit_scale * weight * bank_sim, the bank being the home's caption corpus."""
    with_bank = _engine(search_home, tiny, BankParams(beta=30.0, weight=0.5, match_weight=1.0, fused_platt=(1.0, 0.0)))
    plain = _engine(search_home, tiny, None)
    try:
        texts = with_bank._text_index()
        assert texts.ntotal >= BANK_MIN  # the fixture's corpus is a usable bank
        bank = texts.reconstruct(texts.ids())
        query = "a red circle moves left"
        got = {h["clip_id"]: h for h in with_bank.search_text(query, k=8)["results"] if h["reranked"]}
        ref = {h["clip_id"]: h for h in plain.search_text(query, k=8)["results"] if h["reranked"]}
        assert got and set(got) == set(ref)
        ids = np.array(sorted(got))
        vecs, have = with_bank._tokens.vectors(ids)
        assert np.array_equal(have, ids)
        bank_sim = soft_max_similarity(vecs, bank, 30.0)
        for cid, b in zip(ids.tolist(), bank_sim, strict=True):
            assert got[cid]["score"] == pytest.approx(ref[cid]["score"] - 10.0 * 0.5 * b, abs=1e-3)
            assert got[cid]["itc_score"] == pytest.approx(ref[cid]["itc_score"])
        order = [h["score"] for h in with_bank.search_text(query, k=8)["results"] if h["reranked"]]
        assert order == sorted(order, reverse=True)
        assert with_bank.stats()["ranking"]["query_bank"]["weight"] == 0.5
        assert "query_bank" not in plain.stats()["ranking"]
    finally:
        with_bank.close()
        plain.close()


def test_video_to_text_uses_the_indexed_clips_as_bank(search_home, tiny):
    with_bank = _engine(search_home, tiny, BankParams(beta=30.0, weight=0.5, match_weight=1.0, fused_platt=(1.0, 0.0)))
    plain = _engine(search_home, tiny, None)
    try:
        clips = with_bank._clip_index()
        bank = clips.reconstruct(clips.ids())
        got = with_bank.search_video(path=search_home["one_second"], target="texts", k=8)["results"]
        ref = {
            h["text_id"]: h for h in plain.search_video(path=search_home["one_second"], target="texts", k=8)["results"]
        }
        got = [h for h in got if h["reranked"]]
        assert got
        texts = with_bank._text_index()
        vecs = texts.reconstruct(np.array([h["text_id"] for h in got]))
        for h, b in zip(got, soft_max_similarity(vecs, bank, 30.0), strict=True):
            assert h["score"] == pytest.approx(ref[h["text_id"]]["score"] - 10.0 * 0.5 * b, abs=1e-3)
    finally:
        with_bank.close()
        plain.close()


def test_similarity_of_reads_each_item_once_per_bank():
    rng = np.random.default_rng(5)
    vecs = _unit(rng.normal(size=(10, 8))).astype(np.float32)
    bank = QueryBank(_unit(rng.normal(size=(20, 8))))
    reads = []

    def fetch(ids):
        reads.append(ids.tolist())
        keep = ids[ids < 10]  # ids past 9 have no stored embedding
        return vecs[keep], keep

    first = bank.similarity_of(np.array([1, 2, 11]), fetch, 30.0)
    assert set(first) == {1, 2} and np.allclose([first[1], first[2]], bank.similarity(vecs[[1, 2]], 30.0))
    again = bank.similarity_of(np.array([2, 3]), fetch, 30.0)
    assert reads == [[1, 2, 11], [3]] and again[2] == first[2]


def test_a_bank_mix_that_gives_the_head_no_weight_skips_it(search_home, tiny):
    """Fitted match weight 0: the head is not run (match_score null), scores are the bank-corrected
    cosine alone, and each hit is still marked re-ranked, in both directions."""
    eng = _engine(search_home, tiny, BankParams(beta=30.0, weight=0.5, match_weight=0.0, fused_platt=(1.0, 0.0)))
    try:
        texts = eng._text_index()
        bank = texts.reconstruct(texts.ids())
        hits = [h for h in eng.search_text("a red circle moves left", k=8)["results"] if h["reranked"]]
        assert len(hits) == 8 and all(h["match_score"] is None for h in hits)
        vecs, _ = eng._tokens.vectors(np.array([h["clip_id"] for h in hits]))
        for h, b in zip(hits, soft_max_similarity(vecs, bank, 30.0), strict=True):
            assert h["score"] == pytest.approx(10.0 * (h["itc_score"] - 0.5 * b), abs=1e-3)
            assert 0.0 <= h["match_probability"] <= 1.0
        assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
        captions = eng.search_video(path=search_home["one_second"], target="texts", k=5)["results"]
        assert captions[0]["reranked"] and all(c["match_score"] is None for c in captions if c["reranked"])
    finally:
        eng.close()
