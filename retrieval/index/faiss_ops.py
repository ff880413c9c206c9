"""Thin helpers over the faiss API (the package's one faiss importer): index structure, training,
threads, and reading ids and vectors back out of any index type."""

from __future__ import annotations

import os
from contextlib import contextmanager

import numpy as np

from retrieval.errors import InvalidInput, StoreError

TRAIN_PER_LIST = 32  # k-means training points per IVF list (faiss warns below 39; recall is measured anyway)


def faiss_lib():
    import faiss

    return faiss


def gpu_available() -> bool:
    """True when faiss was built with CUDA and sees a GPU."""
    faiss = faiss_lib()
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # a broken CUDA install must not take CPU search down
        return False


def as_matrix(vectors) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidInput(f"vectors must be a 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidInput("vectors contain NaN or infinity")
    return x


def inner_index(index):
    faiss = faiss_lib()
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        index = faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.base_index)
    return index


def is_ivf(index) -> bool:
    faiss = faiss_lib()
    try:
        return faiss.extract_index_ivf(index) is not None
    except RuntimeError:
        return False


def supports_add_with_ids(index) -> bool:
    faiss = faiss_lib()
    index = faiss.downcast_index(index)
    return isinstance(index, faiss.IndexIVF)


def quiet_train(index, vectors: np.ndarray, seed: int = 0) -> None:
    faiss = faiss_lib()
    ivf = None
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        pass
    if ivf is not None:
        ivf.cp.verbose = False
        ivf.cp.min_points_per_centroid = 1  # small libraries: no warnings, still a usable coarse quantiser
        ivf.cp.niter = 10  # half faiss's default: the lists need not be optimal, recall is tuned after
        ivf.cp.seed = 1234 + int(seed)
        down = faiss.downcast_index(ivf)
        if hasattr(down, "do_polysemous_training"):
            down.do_polysemous_training = False  # 4x the training time for a search mode we do not use
        pq = getattr(down, "pq", None)
        if pq is not None:
            pq.cp.min_points_per_centroid = 1
    index.train(vectors)


def drop_ids(scores: np.ndarray, ids: np.ndarray, dead: set[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isin(ids, np.fromiter(dead, np.int64))
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for r in range(len(ids)):
        s, i = scores[r][keep[r]][:k], ids[r][keep[r]][:k]
        out_s[r, : len(s)], out_i[r, : len(i)] = s, i
    return out_s, out_i


def train_sample(vectors: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """A seeded sample of ``TRAIN_PER_LIST`` vectors per IVF list (at least 16,384), in original order."""
    cap = max(nlist * TRAIN_PER_LIST, 16_384)
    if len(vectors) <= cap:
        return vectors
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(vectors[np.sort(rng.choice(len(vectors), cap, replace=False))])


@contextmanager
def faiss_threads(n: int | None):
    """FAISS (OpenMP) threads of the calling thread set to ``n`` for the block (None: unchanged)."""
    faiss = faiss_lib()
    if n is None:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def all_cores():
    """FAISS threads = the CPU cores this process may use, for builds and batched searches."""
    return faiss_threads(
        max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )


def has_refine(index) -> bool:
    faiss = faiss_lib()
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        index = faiss.downcast_index(index.index)
    return isinstance(index, faiss.IndexRefine)


def stored_ids(index, tombstones: set[int]) -> np.ndarray:
    """Sorted ids of the live vectors of ``index`` (``tombstones`` left out)."""
    faiss = faiss_lib()
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        all_ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    elif is_ivf(index):
        ivf = faiss.extract_index_ivf(index)
        inv = ivf.invlists
        parts = []
        for lst in range(ivf.nlist):
            n = inv.list_size(lst)
            if n:
                parts.append(faiss.rev_swig_ptr(inv.get_ids(lst), n).astype(np.int64).copy())
        all_ids = np.concatenate(parts) if parts else np.empty(0, np.int64)
    else:
        raise StoreError(f"cannot list the ids of a {type(index).__name__} index")
    if tombstones:
        all_ids = all_ids[~np.isin(all_ids, np.fromiter(tombstones, np.int64))]
    all_ids.sort()
    return all_ids


def reconstruct_vectors(index, ids, dim: int) -> np.ndarray:
    """Stored vectors for ``ids`` (exact for Flat/HNSW, approximate for quantised types)."""
    faiss = faiss_lib()
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    if isinstance(index, faiss.IndexIDMap2):
        return np.stack([index.reconstruct(int(i)) for i in ids]) if len(ids) else np.empty((0, dim), np.float32)
    if is_ivf(index):
        ivf = faiss.extract_index_ivf(index)
        ivf.make_direct_map(True)
        try:
            return np.stack([index.reconstruct(int(i)) for i in ids]) if len(ids) else np.empty((0, dim), np.float32)
        finally:
            ivf.make_direct_map(False)
    raise StoreError(f"cannot reconstruct vectors from a {type(index).__name__} index")
