"""Re-ranking's fast path gives the scores of the plain one: the factored head pass against the
head's forward, concurrent requests batched into one pass against one request at a time, and the
token store's one-lookup read against its plain read."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from retrieval import rerank as rescore
from retrieval import token_store
from retrieval.config import MatchHeadCfg
from retrieval.match_head import MatchHead
from retrieval.token_store import StoreLayout, TokenStore

QUERIES = [
    "a red circle moves left",
    "a small green cross moving downward on a white backdrop",
    "a yellow square grows",
    "first a red circle, then a blue square over a black background",
    "a cyan triangle",
]


def _texts(n: int, width: int, length: int = 12, seed: int = 0):
    """n texts of different lengths: [n,L,W] states and [n,L] ids with the end-of-text id (the largest) at n_i."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.zeros(n, length, dtype=torch.long)
    for i in range(n):
        eot = 2 + (3 * i) % (length - 2)
        ids[i, :eot] = torch.randint(1, 49000, (eot,), generator=g)
        ids[i, eot] = 49407
    return torch.randn(n, length, width, generator=g), ids


@pytest.mark.parametrize(
    "layers,frame_positions,act",
    [(1, 0, torch.nn.GELU), (2, 0, torch.nn.GELU), (2, 9, torch.nn.SiLU), (3, 9, torch.nn.GELU)],
)
def test_the_factored_head_pass_is_the_forward_pass(layers, frame_positions, act):
    torch.manual_seed(layers)
    head = MatchHead(
        MatchHeadCfg(width=32, layers=layers, heads=4, frame_positions=frame_positions), 16, 24, act
    ).eval()
    for p in head.parameters():  # trained-looking weights: zero-initialised parts would hide mistakes
        torch.nn.init.normal_(p, std=0.3)
    text, ids = _texts(4, 16)
    video = torch.randn(40, 9, 24, generator=torch.Generator().manual_seed(2))
    query_of = torch.tensor([i % 4 for i in range(40)])
    with torch.inference_mode():
        want = head(text[query_of], ids[query_of], video)
        got = head.score(text, ids, video, query_of)
        one = head.score(text[1:2], ids[1:2], video[1::4], torch.zeros(10, dtype=torch.long))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(one, want[1::4], rtol=1e-5, atol=1e-5)
    assert want[:, 1].std() > 0.05  # the pairs differ: not trivially equal


def test_the_head_pass_reads_fp16_token_sets_as_stored(tiny):
    model, _, tokenizer = tiny
    head = model.match_head.eval()
    ids = tokenizer(QUERIES[:2])
    video = torch.randn(6, 5, model.match_head.video_in.in_features).half()
    with torch.inference_mode():
        _, states = model.encode_text(ids, normalize=True, return_tokens=True)
        query_of = torch.tensor([0, 1, 0, 1, 0, 1])
        want = head(states[query_of], ids[query_of], video.float())
        got = head.score(states, ids, video, query_of)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def _candidates(engine, query, r):
    enc = engine.encode_text(query)
    return enc, engine._clip_candidates(enc.vector, r, None, False)[:r]


def test_batched_rerank_equals_one_request_at_a_time(engine):
    """Several queries' candidates in one head pass get the logits each query gets alone."""
    r = engine.rerank_k
    jobs = [_candidates(engine, q, r) for q in QUERIES]
    alone = [rescore.clips_for_text(engine.encoder, engine._tokens, enc, c) for enc, c in jobs]
    items = []
    for enc, c in jobs:
        toks, mask = engine._tokens.tokens([rec.id for rec, _ in c])
        assert mask.all()
        items.append((enc, toks))
    together = engine.encoder._rerank_batch(items)
    for one, (enc, c), batch in zip(alone, jobs, together, strict=True):
        ids = [rec.id for rec, _ in c]
        assert list(one) == ids
        np.testing.assert_allclose(np.stack([one[i] for i in ids]), batch, rtol=1e-5, atol=1e-5)
        # and the order they give is the same
        assert (
            np.argsort(-batch[:, 1], kind="stable").tolist()
            == np.argsort(-np.stack([one[i] for i in ids])[:, 1], kind="stable").tolist()
        )


def test_concurrent_searches_share_head_passes_and_rank_as_alone(engine):
    want = {q: engine.search_text(q, k=10, rerank=True)["results"] for q in QUERIES}
    batcher = engine.encoder.rerank_batcher
    real, gate, calls = batcher.fn, threading.Event(), []

    def held(items):  # the real head pass, the first one held until every thread has queued
        calls.append(len(items))
        if len(calls) == 1:
            gate.wait(10)
        return real(items)

    batcher.fn, lanes = held, batcher.lanes
    batcher.lanes = 1  # one lane, held: every other query must queue behind it
    got, errors = {}, []

    def worker(i):
        q = QUERIES[i % len(QUERIES)]
        try:
            got[i] = (q, engine.search_text(q, k=10, rerank=True)["results"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(10)]
        threads[0].start()
        while not calls:
            threading.Event().wait(0.01)
        for t in threads[1:]:
            t.start()
        while len(batcher._pending) < 9:
            threading.Event().wait(0.01)
        gate.set()
        for t in threads:
            t.join(30)
    finally:
        batcher.fn, batcher.lanes = real, lanes
    assert not errors
    assert calls[0] == 1 and max(calls) > 1  # the nine waiting queries shared passes
    for q, hits in got.values():
        assert [h["clip_id"] for h in hits] == [h["clip_id"] for h in want[q]]
        np.testing.assert_allclose([h["score"] for h in hits], [h["score"] for h in want[q]], rtol=1e-5, atol=1e-5)


def test_one_lookup_token_read_equals_the_plain_read(tmp_path, monkeypatch):
    monkeypatch.setattr(token_store, "ROWS_PER_SHARD", 4)  # several shards
    layout = StoreLayout("m", n_tokens=3, width=4, dim=5)
    store = TokenStore(tmp_path, layout)
    rng = np.random.default_rng(0)
    ids = np.arange(10, 21)
    store.append(ids, rng.standard_normal((11, 5)).astype(np.float32), rng.standard_normal((11, 3, 4)))
    ask = [20, 99, 11, 15, 10, 98, 17]
    toks, mask = store.find_tokens(ask)
    assert mask.tolist() == [True, False, True, True, True, False, True]
    np.testing.assert_array_equal(toks, store.get_tokens([20, 11, 15, 10, 17]))
    one_shard, m = store.find_tokens([13, 12])
    np.testing.assert_array_equal(one_shard, store.get_tokens([13, 12]))
    assert one_shard.dtype == np.float16 and m.all()
    none, m = store.find_tokens([1, 2])
    assert none.shape == (0, 3, 4) and not m.any()


def test_traced_text_tower_encodes_any_batch_as_eager(engine, tiny):
    model, _, tokenizer = tiny
    engine.encoder._encode_text_batch(["one query traces the tower"])  # traced on a batch of one
    got = engine.encoder._encode_text_batch(QUERIES)
    ids = tokenizer(QUERIES)
    with torch.inference_mode():
        emb, states = model.encode_text(ids, normalize=True, return_tokens=True)
    for i, enc in enumerate(got):
        np.testing.assert_allclose(enc.vector, emb[i].numpy(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(enc.tokens, states[i].float(), rtol=1e-5, atol=1e-5)
        assert torch.equal(enc.ids, ids[i])
    traced = engine.encoder._traces[(id(model), "encode_text")][1]
    assert isinstance(traced, torch.jit.ScriptModule)  # the fast path is the one tested
    engine.search_text(QUERIES[0] + " traced", k=3, rerank=True)
    assert isinstance(engine.encoder._traces[(id(model.match_head), "score")][1], torch.jit.ScriptModule)
