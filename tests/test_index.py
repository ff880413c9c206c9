"""retrieval.index: every index type against brute force, removal, sidecar checks, atomic saves."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from retrieval.errors import IndexMismatch, InvalidInput, StoreError
from retrieval.index import (
    MIN_NPROBE,
    VectorIndex,
    choose_factory,
    gpu_available,
    ivf_nlist,
    read_sidecar,
    sidecar_path,
)

ANN_TYPES = [
    "HNSW32", "IVF64,SQ8", "IVF64,SQfp16", "IVF64,Flat", "IVF64,PQ16x4,Refine(Flat)", "IVF64,PQ8x4fs,RFlat",
    "IVF64,PQ8x4fs,Refine(SQfp16)",  # the large-scale auto type
]  # fmt: skip


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    """A seeded set shaped like embeddings: clusters of normalised vectors, queries near data points."""
    rng = np.random.default_rng(1234)
    d, n = 48, 6000
    centers = rng.standard_normal((150, d))
    x = _unit(centers[rng.integers(0, 150, n)] + 0.6 * rng.standard_normal((n, d)))
    ids = rng.permutation(np.arange(10, 10 + 3 * n, 3)).astype(np.int64)  # sparse, shuffled: like clip ids
    q = _unit(x[rng.choice(n, 200, replace=False)] + 0.05 * rng.standard_normal((200, d)))
    return x, ids, q


def _brute(x, ids, q, k):
    scores = q @ x.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), ids[order]


def _recall(got, ref):
    return float(np.mean([len(set(a) & set(b)) / ref.shape[1] for a, b in zip(got, ref, strict=True)]))


def test_flat_is_exact(data):
    x, ids, q = data
    index = VectorIndex.build(x, ids, model="m", factory="Flat")
    scores, got = index.search(q, 10)
    ref_scores, ref_ids = _brute(x, ids, q, 10)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)
    assert (got == ref_ids).mean() > 0.999  # ties may swap
    assert index.ntotal == len(x) and np.array_equal(index.ids(), np.sort(ids))


@pytest.mark.parametrize("factory", ANN_TYPES)
def test_ann_recall_at_10_against_brute_force(data, factory):
    x, ids, q = data
    index = VectorIndex.build(x, ids, model="m", factory=factory)
    _, got = index.search(q, 10)
    _, ref = _brute(x, ids, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref, strict=True)])
    assert recall >= 0.95, f"{factory}: recall@10 {recall:.3f}"
    assert set(np.unique(got)) <= set(ids.tolist())


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF64,SQ8", "IVF64,PQ16x4,Refine(Flat)"])
def test_removed_ids_never_come_back(data, factory):
    x, ids, q = data
    index = VectorIndex.build(x, ids, model="m", factory=factory)
    _, before = index.search(q, 10)
    gone = np.unique(before[:, :3])  # the best hits of every query
    assert index.remove(np.concatenate([gone, [999_999_999]])) == len(gone)  # unknown ids are ignored
    assert index.ntotal == len(x) - len(gone)
    _, after = index.search(q, 10)
    assert not np.isin(after, gone).any()
    assert (after >= 0).all()  # still k results
    assert np.array_equal(index.ids(), np.setdiff1d(np.sort(ids), gone))


def test_hnsw_tombstones_are_compacted_and_ids_can_return(data, tmp_path):
    x, ids, _ = data
    index = VectorIndex.build(x[:500], ids[:500], model="m", factory="HNSW32")
    index.remove(ids[:10])
    assert len(index.tombstones) == 10  # HNSW cannot remove in place
    index.save(tmp_path / "h.faiss")
    again = VectorIndex.load(tmp_path / "h.faiss", model="m")
    assert again.tombstones == set(ids[:10].tolist()) and again.ntotal == 490
    _, got = again.search(x[:10], 1)
    assert not np.isin(got, ids[:10]).any()
    index.remove(ids[10:100])  # past 10%: rebuilt without them
    assert index.tombstones == set() and index.index.ntotal == 400
    index.add(x[:1], ids[:1])  # an id that was removed can be added again
    _, got = index.search(x[:1], 1)
    assert got[0, 0] == ids[0]


def test_search_edge_cases(data):
    x, ids, q = data
    empty = VectorIndex.create(x.shape[1], "m")
    scores, got = empty.search(q[:2], 5)
    assert (got == -1).all() and np.isneginf(scores).all()
    small = VectorIndex.build(x[:3], ids[:3], model="m")
    scores, got = small.search(q[:2], 5)
    assert (got[:, 3:] == -1).all() and (got[:, :3] >= 0).all()
    with pytest.raises(IndexMismatch):
        small.search(np.ones((1, 7), np.float32), 1)
    with pytest.raises(InvalidInput):
        small.search(np.full((1, x.shape[1]), np.nan, np.float32), 1)
    with pytest.raises(InvalidInput):
        small.search(q[:1], 0)
    with pytest.raises(InvalidInput):
        small.add(x[:2], ids[:1])
    with pytest.raises(InvalidInput):
        VectorIndex.create(8, "m", "NotAFactory")


def test_sidecar_records_the_model_and_refuses_another(data, tmp_path):
    x, ids, _ = data
    path = tmp_path / "clips.faiss"
    VectorIndex.build(x[:100], ids[:100], model="viclip-B-16", factory="Flat").save(path)
    meta = read_sidecar(path)
    assert {k: meta[k] for k in ("model", "dim", "metric", "count", "factory")} == {
        "model": "viclip-B-16",
        "dim": x.shape[1],
        "metric": "ip",
        "count": 100,
        "factory": "Flat",
    }
    assert VectorIndex.load(path, model="viclip-B-16", dim=x.shape[1]).ntotal == 100
    with pytest.raises(IndexMismatch, match="built with model 'viclip-B-16'"):
        VectorIndex.load(path, model="viclip-L-14")
    with pytest.raises(IndexMismatch, match="dimension"):
        VectorIndex.load(path, dim=768)


def test_load_errors_are_clear(data, tmp_path):
    x, ids, _ = data
    path = tmp_path / "clips.faiss"
    VectorIndex.build(x[:10], ids[:10], model="m").save(path)
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(StoreError, match="unreadable"):
        VectorIndex.load(path, model="m")
    sidecar_path(path).unlink()
    with pytest.raises(StoreError, match="no sidecar"):
        VectorIndex.load(path, model="m")


def test_save_is_atomic(data, tmp_path, monkeypatch):
    x, ids, _ = data
    path = tmp_path / "clips.faiss"
    VectorIndex.build(x[:10], ids[:10], model="m").save(path)
    bigger = VectorIndex.build(x[:20], ids[:20], model="m")

    def crash(src, dst):  # the process dies at the rename: the old index must survive intact
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        bigger.save(path)
    monkeypatch.undo()
    assert VectorIndex.load(path, model="m").ntotal == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clips.faiss", "clips.json"]  # no temp files left
    bigger.save(path)
    assert VectorIndex.load(path, model="m").ntotal == 20
    assert json.loads(sidecar_path(path).read_text())["count"] == 20


def test_choose_factory_measured_rule():
    assert choose_factory(10, 512) == "Flat"
    assert choose_factory(8192, 128) == "Flat" and choose_factory(2048, 512) == "Flat"  # n * dim <= 2**20
    assert choose_factory(8193, 128) == "IVF128,SQfp16"  # lists of at least ~64 vectors
    assert choose_factory(2049, 512) == "IVF32,SQfp16"
    assert choose_factory(100_000, 512) == "IVF512,SQfp16"
    assert choose_factory(1_000_000, 128) == "IVF2048,SQfp16"  # n * dim <= 2**28: fp16 codes scanned directly
    assert choose_factory(1_000_000, 512) == "IVF2048,PQ128x4fs,Refine(SQfp16)"  # past it: fast-scan + refine
    assert choose_factory(10_000_000, 512) == "IVF8192,PQ128x4fs,Refine(SQfp16)"
    assert choose_factory(1_000_000, 500) == "IVF2048,SQfp16"  # 4-dim sub-vectors need dim % 8 == 0
    assert choose_factory(100_000, 512, flat_max=100_000) == "Flat"  # the setting overrides the rule
    assert choose_factory(100_001, 512, flat_max=100_000) == "IVF512,SQfp16"
    VectorIndex.create(512, "m", choose_factory(10_000_000, 512))  # a valid factory string
    assert ivf_nlist(1) == 16 and ivf_nlist(10**12) == 65536


@pytest.mark.parametrize("factory", ["IVF64,SQ8", "HNSW32", "IVF64,PQ16x4,Refine(Flat)"])
def test_build_tunes_to_the_target_recall_and_measures_it_truly(data, factory):
    x, ids, _ = data
    index = VectorIndex.build(x, ids, model="m", factory=factory, recall_target=0.95, seed=3)
    r = index.recall
    assert r["k"] == 20 and r["target"] == 0.95 and r["queries"] == 1000 and r["count"] == len(x)
    assert r["value"] >= 0.95
    name = {"nprobe": "nprobe", "efSearch": "ef_search"}[r["param"]]
    assert getattr(index, name) == r["param_value"]
    # the recorded recall is what a fresh exact search says about the same sample, at that setting
    # the recorded recall is what an independent exact search says about the same queries
    q, truth, origin = index.probe_queries(x, ids, k=20, queries=1000, seed=3)
    assert q.shape == (1000, x.shape[1]) and np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    assert not np.isin(q[:, 0], x[:, 0]).any()  # moved off the stored points
    assert set(origin.tolist()) <= set(ids.tolist()) and not (truth == origin[:, None]).any()

    def drop_origin(rows):
        return np.stack([row[row != o][:20] for row, o in zip(rows, origin, strict=True)])

    ref = drop_origin(_brute(x, ids, q, 21)[1])
    assert _recall(truth, ref) > 0.999

    def measured():
        return _recall(drop_origin(index.search(q, 21)[1]), ref)

    assert abs(measured() - r["value"]) < 2e-3
    if r["param"] == "nprobe":  # served: the smallest setting that reaches the target, at least MIN_NPROBE
        assert r["param_value"] == max(r["param_reached"], MIN_NPROBE)
        if r["param_reached"] > 1:
            setattr(index, name, max(1, r["param_reached"] // 2))
            assert measured() < 0.95


def test_a_harder_target_needs_a_larger_setting_and_is_deterministic(data):
    x, ids, _ = data
    low = VectorIndex.build(x, ids, model="m", factory="IVF64,SQ8", recall_target=0.8)
    high = VectorIndex.build(x, ids, model="m", factory="IVF64,SQ8", recall_target=0.99)
    again = VectorIndex.build(x, ids, model="m", factory="IVF64,SQ8", recall_target=0.99)
    assert low.nprobe < high.nprobe and high.recall["value"] >= 0.99
    assert high.recall == {**again.recall, "seconds": high.recall["seconds"]}


def test_unreachable_target_keeps_the_best_setting_and_says_so(data):
    x, ids, _ = data
    index = VectorIndex.build(x, ids, model="m", factory="IVF64,PQ4x4", recall_target=0.999)
    best = index.recall["value"]
    assert best < 0.999 and 1 <= index.recall["param_value"] <= 64
    index.nprobe = 64  # probing every list finds no more: the kept setting is the cheapest best one
    again = index.tune(x, ids, target=0.999)
    assert again["value"] == best and again["param_value"] == index.nprobe


def test_refine_indexes_keep_the_fastest_k_factor_that_meets_the_target_and_save_it(data, tmp_path):
    from retrieval.index.recall import REFINE_K_FACTORS

    x, ids, q = data
    index = VectorIndex.build(x, ids, model="m", factory="IVF64,PQ16x4fs,Refine(SQfp16)", recall_target=0.95, seed=3)
    r = index.recall
    assert r["refine_k_factor"] in REFINE_K_FACTORS and r["refine_k_factor"] == index.refine_k_factor
    assert r["value"] >= 0.95 and r["query_ms"] > 0
    assert index.search_params()["refine_k_factor"] == index.refine_k_factor
    path = tmp_path / "clips.faiss"
    index.save(path)
    loaded = VectorIndex.load(path, model="m")
    assert loaded.refine_k_factor == index.refine_k_factor and loaded.nprobe == index.nprobe
    assert np.array_equal(loaded.search(q, 20)[1], index.search(q, 20)[1])
    # the factor is what the search uses: a shortlist of k itself loses what re-scoring recovers
    queries, truth, origin = index.probe_queries(x, ids, k=20, queries=1000, seed=3)

    def recall_now():
        got = np.stack([row[row != o][:20] for row, o in zip(index.search(queries, 21)[1], origin, strict=True)])
        return _recall(got, truth)

    assert abs(recall_now() - r["value"]) < 2e-3
    index.refine_k_factor = 1
    assert recall_now() < r["value"] - 0.02


def test_recall_and_search_params_in_the_sidecar_and_old_sidecars_still_load(data, tmp_path):
    x, ids, q = data
    path = tmp_path / "clips.faiss"
    index = VectorIndex.build(x, ids, model="m", factory="IVF64,SQ8")
    index.save(path)
    meta = read_sidecar(path)
    assert meta["recall"] == index.recall and meta["recall"]["value"] >= 0.95
    assert meta["search"] == {"nlist": 64, "nprobe": index.nprobe} and meta["nprobe"] == index.nprobe
    loaded = VectorIndex.load(path, model="m")
    assert loaded.recall == index.recall and loaded.nprobe == index.nprobe
    assert np.array_equal(loaded.search(q, 20)[1], index.search(q, 20)[1])
    # an index written before recall was measured: no recall, no search fields
    old = {k: meta[k] for k in ("format", "model", "dim", "metric", "count", "factory", "ef_search", "nprobe")}
    sidecar_path(path).write_text(json.dumps({**old, "tombstones": []}))
    legacy = VectorIndex.load(path, model="m")
    assert legacy.recall is None and legacy.nprobe == index.nprobe and legacy.ntotal == len(x)
    legacy.save(path)  # and it saves in the new format
    assert read_sidecar(path)["recall"] is None and read_sidecar(path)["search"]["nlist"] == 64


def test_flat_recall_is_exact_and_auto_build_picks_by_size(data):
    x, ids, _ = data
    flat = VectorIndex.build(x[:1000], ids[:1000], model="m")
    assert flat.factory == "Flat" and flat.recall["value"] == 1.0 and flat.recall["param"] is None
    ivf = VectorIndex.build(x, ids, model="m")  # 6000 x 48 > 2**20 cells? no: 288,000 -> Flat
    assert ivf.factory == "Flat"
    assert VectorIndex.build(x[:10], ids[:10], model="m", tune=False).recall is None


def test_memory_mapped_inverted_lists_search_like_the_loaded_index(data, tmp_path):
    """An index larger than RAM: IO_FLAG_MMAP maps the IVF lists from the file (OnDiskInvertedLists)."""
    import faiss

    x, ids, q = data
    path = tmp_path / "clips.faiss"
    index = VectorIndex.build(x, ids, model="m", factory="IVF64,SQ8")
    index.save(path)
    mapped = VectorIndex.load(path, model="m", mmap=True)
    lists = faiss.extract_index_ivf(mapped.index).invlists
    assert isinstance(faiss.downcast_InvertedLists(lists), faiss.OnDiskInvertedLists)
    assert mapped.nprobe == index.nprobe and mapped.recall == index.recall
    s1, i1 = index.search(q, 20)
    s2, i2 = mapped.search(q, 20)
    assert np.array_equal(i1, i2)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    assert np.array_equal(mapped.ids(), np.sort(ids))


def test_l2_metric_scores_larger_is_better(data):
    x, ids, q = data
    index = VectorIndex.build(x, ids, model="m", factory="Flat", metric="l2")
    scores, got = index.search(q[:5], 3)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    _, ref = _brute(x, ids, q[:5], 1)
    assert (got[:, 0] == ref[:, 0]).all()


@pytest.mark.gpu
def test_gpu_search_matches_cpu(data):
    if not gpu_available():
        pytest.skip("no GPU: faiss-gpu is not installed or no CUDA device is visible")
    x, ids, q = data
    index = VectorIndex.build(x, ids, model="m", factory="Flat")
    index.use_gpu = "never"
    cpu_scores, cpu_ids = index.search(q, 10)
    index.use_gpu = "auto"
    gpu_scores, gpu_ids = index.search(q, 10)
    np.testing.assert_allclose(gpu_scores, cpu_scores, atol=1e-4)
    assert (gpu_ids == cpu_ids).mean() > 0.99


def test_vtr_status_shows_the_measured_recall_and_search_parameters(data, tmp_path):
    from click.testing import CliRunner

    from indexer.cli import main
    from retrieval.home import DataHome

    x, ids, _ = data
    home = DataHome(tmp_path / "home").ensure()
    index = VectorIndex.build(x, ids, model="m", factory="IVF64,SQ8")
    index.save(home.clip_index_path)
    res = CliRunner().invoke(main, ["status", "--json", "--home", str(home.root)])
    assert res.exit_code == 0, res.output
    st = json.loads(res.output)
    assert st["index_factory"] == "IVF64,SQ8" and st["vectors"] == len(x)
    assert st["index_search"] == {"nlist": 64, "nprobe": index.nprobe}
    assert st["index_recall"] == index.recall and st["index_recall"]["value"] >= 0.95
    text = CliRunner().invoke(main, ["status", "--home", str(home.root)]).output
    assert f"index     IVF64,SQ8, nlist 64, nprobe {index.nprobe}; recall@20 {index.recall['value']:.3f}" in text
    # an index from before: no recall in the sidecar
    meta = read_sidecar(home.clip_index_path)
    del meta["recall"], meta["search"]
    sidecar_path(home.clip_index_path).write_text(json.dumps(meta))
    st = json.loads(CliRunner().invoke(main, ["status", "--json", "--home", str(home.root)]).output)
    assert st["index_recall"] is None and st["index_search"] == {"nprobe": index.nprobe}
    assert "recall not measured" in CliRunner().invoke(main, ["status", "--home", str(home.root)]).output


@pytest.mark.gpu
def test_gpu_build_matches_the_cpu_build(data):
    if not gpu_available():
        pytest.skip("no GPU: faiss-gpu is not installed or no CUDA device is visible")
    x, ids, q = data
    index = VectorIndex.build(x, ids, model="m", factory="IVF64,SQfp16")  # trained and filled on the GPU
    assert index.ntotal == len(x) and np.array_equal(index.ids(), np.sort(ids))
    assert index.recall["value"] >= 0.95
    _, got = index.search(q, 10)
    _, ref = _brute(x, ids, q, 10)
    assert _recall(got, ref) >= 0.95


def test_search_parameters_changed_after_a_search_take_effect(data):
    """Parameters are applied once per (index object, values): a later change or a swapped index is still applied."""
    import faiss

    x, ids, q = data
    index = VectorIndex.build(x, ids, model="m", factory="IVF64,Flat", recall_target=0.9, seed=1)
    _, truth = _brute(x, ids, q, 10)
    index.nprobe = 1
    one = _recall(index.search(q, 10)[1], truth)
    assert one < 0.99  # measured 0.974: one list misses neighbours across cell borders
    stale = faiss.clone_index(index.index)  # a FAISS object that probes 1 list
    index.nprobe = 64  # every list: exact
    assert _recall(index.search(q, 10)[1], truth) == 1.0
    index.index = stale  # same parameters, another object (as after a rebuild): configured again
    assert _recall(index.search(q, 10)[1], truth) == 1.0


def test_search_leaves_faiss_kernel_choice_alone(data):
    """A single-query search must not lower faiss's BLAS threshold: in faiss >= 1.8 it is compared
    with the work size, so a small value sends every coarse-quantiser step through sgemm (4x slower)."""
    import faiss

    x, ids, q = data
    index = VectorIndex.build(x, ids, model="m", factory="IVF64,Flat", recall_target=0.9, seed=1)
    before = faiss.cvar.distance_compute_blas_threshold
    index.search(q[:1], 10)
    index.search(q, 10)
    assert faiss.cvar.distance_compute_blas_threshold == before
