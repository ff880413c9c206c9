"""Recall measured, not assumed: tune ``nprobe``/``efSearch`` on the index's own vectors at build time."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from retrieval.index.faiss_ops import all_cores, faiss_lib, faiss_threads, has_refine, inner_index, is_ivf

if TYPE_CHECKING:
    from retrieval.index.vector_index import VectorIndex

log = logging.getLogger(__name__)

TUNE_K = 20  # recall@k measured at build time (the engine's default page size)
TUNE_QUERIES = 1000  # sample of the index's own vectors used as queries
# IVF never probes fewer lists than this: the tuning queries are the index's own vectors (moved),
# and queries from elsewhere, texts above all, sit farther from the cells: on the demo model's
# vectors own-vector tuning was met at nprobe 1 where text queries needed 4 (recall@20 0.80 at 1,
# 0.92 at 2, 0.99 at 4, 0.998 at 8). 8 lists cost ~0.1-0.5 ms at 1M clips.
MIN_NPROBE = 8
# Refine indexes shortlist k * k_factor candidates from their coarse codes: a larger factor needs fewer
# probes for the same recall but re-scores more vectors. Which pair is fastest depends on the data, so
# each factor is tuned and the quickest pair that reaches the target is kept (at 1M clustered 512-d:
# k_factor 16 + nprobe 16 took 0.56 ms, 32 + 16 0.77 ms, 8 + 32 0.64 ms).
REFINE_K_FACTORS = (8, 16, 32)
LATENCY_QUERIES = 200  # single queries timed per candidate setting (one thread, the serving case)


def tune(
    self: VectorIndex,
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    target: float | None = None,
    k: int = TUNE_K,
    queries: int = TUNE_QUERIES,
    seed: int = 0,
) -> dict:
    """Measure recall@k on a seeded sample of the indexed ``vectors`` used as queries, against
    exact search over all of them, and raise ``nprobe``/``efSearch`` until it reaches ``target``.
    The queries are the sample moved off the stored points (:meth:`probe_queries`).

    Sets the search parameter, stores the result in :attr:`recall` (saved in the sidecar) and
    returns it. When even the largest setting falls short, that setting is kept and the
    shortfall is logged and recorded (``value`` < ``target``).
    """
    from retrieval.settings import resolve

    faiss = faiss_lib()
    t0 = time.perf_counter()
    target = float(resolve("index_recall", target))
    vectors = self._check(vectors)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1)
    n = len(vectors)
    if n == 0:
        self.recall = None
        return {}
    k = max(1, min(int(k), n - 1))
    with all_cores():
        q, truth, origin = probe_queries(self, vectors, ids, k=k, queries=queries, seed=seed)

        def recall_at(value=None, name=None) -> float:
            if name is not None:
                setattr(self, name, int(value))
            _, got = self.search(q, k + 1)
            return recall_of(without_origin(got, origin, k), truth)

        inner = inner_index(self.index)
        name, ladder = None, []
        if is_ivf(inner):
            name, ladder = "nprobe", powers_of_two(1, faiss.extract_index_ivf(inner).nlist)
        elif isinstance(inner, faiss.IndexHNSW):
            name, ladder = "ef_search", powers_of_two(max(16, k), 4096)
        refine = has_refine(self.index)
        factors = REFINE_K_FACTORS if refine else (self.refine_k_factor,)
        tried = []  # per k_factor: (misses the target, latency if met, -recall), setting
        for kf in factors:
            self.refine_k_factor = kf
            reached = None
            if name is None:  # nothing to tune (Flat, plain PQ, ...): measure what it is
                best, value = recall_at(), None
            else:
                best, value = tune_ladder(lambda v: recall_at(v, name), ladder, target)
                reached = value
                if name == "nprobe" and value < min(MIN_NPROBE, ladder[-1]):
                    value = min(MIN_NPROBE, ladder[-1])
                    best = recall_at(value, name)
                setattr(self, name, value)
            met = best >= target
            ms = latency_ms(self, q[:LATENCY_QUERIES], k) if len(factors) > 1 and met else None
            tried.append(((not met, ms or 0.0, -best), (best, kf, value, reached, ms)))
        best, kf, value, reached, ms = min(tried, key=lambda t: t[0])[1]
        self.refine_k_factor = kf
        if name is not None:
            setattr(self, name, value)
    self.recall = {
        "k": k,
        "target": target,
        "value": round(float(best), 4),
        "queries": len(q),
        "count": n,
        "param": {"nprobe": "nprobe", "ef_search": "efSearch"}.get(name) if name else None,
        "param_value": value,
        "param_reached": reached if name else None,  # the smallest setting that met the target
        "refine_k_factor": kf if refine else None,
        "query_ms": round(ms, 3) if ms else None,  # one-thread latency measured for the kept setting
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if best < target:
        log.warning(
            "index %s reaches recall@%d %.3f < target %.3f at best (%s %s)",
            self.factory, k, best, target, self.recall["param"], value,
        )  # fmt: skip
    return self.recall


def latency_ms(self: VectorIndex, queries: np.ndarray, k: int) -> float:
    """Median one-thread latency of single-query searches, the way the service searches."""
    times = []
    with faiss_threads(1):
        for row in queries:
            t = time.perf_counter()
            self.search(row[None], k)
            times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000.0


def probe_queries(
    self: VectorIndex,
    vectors: np.ndarray,
    ids: np.ndarray,
    *,
    k: int = TUNE_K,
    queries: int = TUNE_QUERIES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The queries :meth:`tune` measures with, their exact top-``k`` ids and the ids they came from.

    A seeded sample of the index's own vectors, each moved by a random step as long as its
    distance to its k-th nearest neighbour or to its IVF centroid, whichever is larger (then
    re-normalised for inner product); the vector it came from is left out of both the exact and
    the searched lists. Unmoved, or with its origin counted, a stored vector finds its
    neighbours too easily (it sits inside its own cell, and its origin is a free hit): on
    clustered 512-d vectors that said 0.96 where new queries got 0.947.
    """
    faiss = faiss_lib()
    n = len(vectors)
    k = max(1, min(int(k), n - 1))
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(n, min(int(queries), n), replace=False))
    q = np.ascontiguousarray(vectors[sample], dtype=np.float32)
    ftype = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
    d, _ = faiss.knn(q, vectors, min(k + 1, n), ftype)
    reach = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * d[:, -1]) if self.metric == "ip" else np.maximum(0.0, d[:, -1]))
    reach = np.maximum(reach, cell_radius(self, q))
    step = rng.standard_normal(q.shape).astype(np.float32)
    step *= (reach / np.maximum(np.linalg.norm(step, axis=1), 1e-12))[:, None]
    q = q + step
    if self.metric == "ip":
        q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    q = np.ascontiguousarray(q, dtype=np.float32)
    _, exact = faiss.knn(q, vectors, k + 1, ftype)
    ids = np.asarray(ids, dtype=np.int64)
    return q, without_origin(ids[exact], ids[sample], k), ids[sample]


def cell_radius(self: VectorIndex, x: np.ndarray) -> float:
    """Median distance from ``x`` to its nearest IVF centroid (0 for other types): the scale of the partition."""
    faiss = faiss_lib()
    inner = inner_index(self.index)
    if not is_ivf(inner):
        return 0.0
    ivf = faiss.extract_index_ivf(inner)
    _, assign = ivf.quantizer.search(x, 1)
    centroids = ivf.quantizer.reconstruct_batch(assign[:, 0])
    return float(np.median(np.linalg.norm(x - centroids, axis=1)))


def without_origin(rows: np.ndarray, drop: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` ids of each row other than that row's ``drop`` id (-1 pads a short row)."""
    out = np.full((len(rows), k), -1, np.int64)
    for r, (row, d) in enumerate(zip(rows, drop, strict=True)):
        rest = row[row != d][:k]
        out[r, : len(rest)] = rest
    return out


def recall_of(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` found in the same row of ``got``."""
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(g, t)) / k for g, t in zip(got, truth, strict=True)]))


def powers_of_two(lo: int, hi: int) -> list[int]:
    out, v = [], 1
    while v < hi:
        if v >= lo:
            out.append(v)
        v *= 2
    return [*out, int(hi)]


def tune_ladder(recall_at, ladder: list[int], target: float) -> tuple[float, int]:
    """The smallest setting on ``ladder`` (then bisected) whose recall reaches ``target``: (recall, setting)."""
    seen: dict[int, float] = {}

    def r(v: int) -> float:
        if v not in seen:
            seen[v] = recall_at(v)
        return seen[v]

    lo = None
    for v in ladder:
        if r(v) >= target:
            hi = v
            break
        lo = v
    else:
        best = max(ladder, key=lambda v: (seen[v], -v))
        return seen[best], best
    if lo is not None:  # bisect between the last setting that fell short and the first that did not
        while hi - lo > max(1, lo // 8):
            mid = (lo + hi) // 2
            if r(mid) >= target:
                hi = mid
            else:
                lo = mid
    return seen[hi], hi
