"""VectorIndex: a FAISS index plus what it needs to be used correctly (model, dim, metric, factory, tombstones)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from retrieval.atomic import atomic_write_bytes
from retrieval.errors import IndexMismatch, InvalidInput, StoreError
from retrieval.index import recall
from retrieval.index.choice import choose_factory
from retrieval.index.faiss_ops import (
    all_cores,
    as_matrix,
    drop_ids,
    faiss_lib,
    faiss_threads,
    gpu_available,
    has_refine,
    inner_index,
    is_ivf,
    quiet_train,
    reconstruct_vectors,
    stored_ids,
    supports_add_with_ids,
    train_sample,
)  # fmt: skip
from retrieval.index.gpu import ADD_CHUNK, build_on_gpu, search_index
from retrieval.index.sidecar import FORMAT_VERSION, check_compatible, read_sidecar, sidecar_path

log = logging.getLogger(__name__)

_TOMBSTONE_COMPACT_FRACTION = 0.1
# A search of fewer queries runs on one thread: OpenMP teams for one query gain little and, on a
# busy 2-core machine, cost 8-12 ms of spinning where the IVF search itself takes 0.1 ms (measured).
_PARALLEL_MIN_QUERIES = 16


class VectorIndex:
    """A FAISS index plus what it needs to be used correctly: model, dim, metric, factory, tombstones."""

    def __init__(self, index, *, model: str, dim: int, factory: str, metric: str = "ip", tombstones=()):
        self.index = index
        self.model = model
        self.dim = int(dim)
        self.factory = factory
        self.metric = metric
        self.tombstones: set[int] = {int(t) for t in tombstones}
        self.ef_search = 128
        self.nprobe = 32
        self.refine_k_factor = 32  # refine stages re-score this many times k candidates (fp16: cheap)
        self.recall: dict | None = None  # what tune() measured (None: never measured, e.g. an old index)
        self._gpu_index = None
        self._gpu_dirty = True
        self._configured: tuple | None = None  # (index object, nprobe, efSearch, k_factor) last applied
        self.use_gpu = "auto"

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, dim: int, model: str, factory: str | None = None, metric: str = "ip") -> VectorIndex:
        """An empty index; ``factory=None`` or ``"auto"`` starts exact (``Flat``)."""
        faiss = faiss_lib()
        if dim <= 0:
            raise InvalidInput(f"index dimension must be positive, got {dim}")
        if metric not in ("ip", "l2"):
            raise InvalidInput(f"metric must be 'ip' or 'l2', got {metric!r}")
        factory = "Flat" if factory in (None, "", "auto") else factory.strip()
        ftype = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        try:
            index = faiss.index_factory(int(dim), factory, ftype)
        except RuntimeError as exc:
            raise InvalidInput(f"invalid FAISS factory string {factory!r}: {str(exc).splitlines()[-1]}") from exc
        if not supports_add_with_ids(index):
            index = faiss.IndexIDMap2(index)
        return cls(index, model=model, dim=dim, factory=factory, metric=metric)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: np.ndarray,
        *,
        model: str,
        factory: str | None = None,
        metric: str = "ip",
        seed: int = 0,
        recall_target: float | None = None,
        tune: bool = True,
    ) -> VectorIndex:
        """A new index over ``vectors``/``ids``, trained when the type needs it, then tuned (:meth:`tune`).

        Uses every core (FAISS threads) and the GPU for IVF training and adding when faiss-gpu sees one.
        """
        vectors = as_matrix(vectors)
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        factory = choose_factory(len(vectors), vectors.shape[1]) if factory in (None, "", "auto") else factory
        vi = cls.create(vectors.shape[1], model, factory, metric)
        with all_cores():
            if not (gpu_available() and build_on_gpu(vi, vectors, ids, seed)):
                if not vi.index.is_trained:
                    vi.train(vectors, seed=seed)
                for s in range(0, len(vectors), ADD_CHUNK):
                    vi.add(vectors[s : s + ADD_CHUNK], ids[s : s + ADD_CHUNK])
            if tune:
                vi.tune(vectors, ids, target=recall_target, seed=seed)
        return vi

    def train(self, vectors: np.ndarray, seed: int = 0) -> None:
        faiss = faiss_lib()
        vectors = self._check(vectors)
        if len(vectors) == 0:
            raise InvalidInput("cannot train an index on zero vectors")
        inner = inner_index(self.index)
        nlist = getattr(faiss.extract_index_ivf(inner), "nlist", 0) if is_ivf(inner) else 0
        if nlist and len(vectors) < nlist:
            raise InvalidInput(f"{self.factory} needs at least {nlist} training vectors, got {len(vectors)}")
        quiet_train(self.index, train_sample(vectors, nlist, seed) if nlist else vectors, seed)

    # ------------------------------------------------------------------ recall, measured
    def tune(self, vectors: np.ndarray, ids: np.ndarray, **kw) -> dict:
        """Measure recall@k on the index's own vectors and tune the search parameter (:func:`recall.tune`)."""
        return recall.tune(self, vectors, ids, **kw)

    def probe_queries(self, vectors: np.ndarray, ids: np.ndarray, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The queries :meth:`tune` measures with (:func:`recall.probe_queries`)."""
        return recall.probe_queries(self, vectors, ids, **kw)

    def search_params(self) -> dict:
        """The search parameters that apply to this index type (for ``vtr status``)."""
        faiss = faiss_lib()
        inner = inner_index(self.index)
        out: dict = {}
        if is_ivf(inner):
            ivf = faiss.extract_index_ivf(inner)
            out.update(nlist=int(ivf.nlist), nprobe=int(min(self.nprobe, ivf.nlist)))
        if isinstance(inner, faiss.IndexHNSW):
            out["efSearch"] = int(max(self.ef_search, 16))
        if has_refine(self.index):
            out["refine_k_factor"] = self.refine_k_factor
        return out

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(
        cls, path: str | os.PathLike, *, model: str | None = None, dim: int | None = None, mmap: bool = False
    ) -> VectorIndex:
        """Load ``path`` and its sidecar; refuse another model or dimension with :class:`IndexMismatch`."""
        faiss = faiss_lib()
        path = Path(path)
        meta = read_sidecar(path)
        if meta is None:
            raise StoreError(f"index {path} has no sidecar {sidecar_path(path).name}; it was not written by vtr")
        check_compatible(meta, path, model=model, dim=dim)
        try:
            flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
            index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            raise StoreError(f"index file {path} is unreadable ({str(exc).splitlines()[-1]}); rebuild it") from exc
        if index.d != meta["dim"]:
            raise IndexMismatch(f"index {path} has dimension {index.d}, its sidecar says {meta['dim']}")
        vi = cls(
            index,
            model=meta["model"],
            dim=meta["dim"],
            factory=meta.get("factory", "Flat"),
            metric=meta.get("metric", "ip"),
            tombstones=meta.get("tombstones", ()),
        )
        vi.ef_search = int(meta.get("ef_search", vi.ef_search))
        vi.nprobe = int(meta.get("nprobe", vi.nprobe))
        vi.refine_k_factor = int(meta.get("refine_k_factor", vi.refine_k_factor))
        vi.recall = meta.get("recall")  # absent in indexes written before recall was measured
        if meta.get("count") is not None and meta["count"] != vi.ntotal:
            log.warning(
                "index %s holds %d vectors, its sidecar says %d (interrupted save?)", path, vi.ntotal, meta["count"]
            )
        return vi

    def sidecar(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "model": self.model,
            "dim": self.dim,
            "metric": self.metric,
            "count": self.ntotal,
            "factory": self.factory,
            "ef_search": self.ef_search,
            "nprobe": self.nprobe,
            "refine_k_factor": self.refine_k_factor,
            "search": self.search_params(),
            "recall": self.recall,
            "tombstones": sorted(self.tombstones),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write the index and then its sidecar."""
        faiss = faiss_lib()
        path = Path(path)
        buf = faiss.serialize_index(self.index)
        atomic_write_bytes(path, buf.tobytes())
        atomic_write_bytes(sidecar_path(path), json.dumps(self.sidecar(), indent=1).encode())

    def memory_bytes(self) -> int:
        """Size of the serialised index (≈ its RAM footprint)."""
        return int(faiss_lib().serialize_index(self.index).size)

    # ------------------------------------------------------------------ content
    @property
    def ntotal(self) -> int:
        """Live vectors (tombstoned ones excluded)."""
        return int(self.index.ntotal) - len(self.tombstones)

    def __len__(self) -> int:
        return self.ntotal

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = as_matrix(vectors)
        if vectors.shape[1] != self.dim:
            raise IndexMismatch(f"vectors have dimension {vectors.shape[1]}, the index {self.dim}")
        return vectors

    def add(self, vectors: np.ndarray, ids) -> None:
        """Add vectors under ``ids`` (int64, unique, not yet present)."""
        vectors = self._check(vectors)
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(ids) != len(vectors):
            raise InvalidInput(f"{len(vectors)} vectors but {len(ids)} ids")
        if len(ids) == 0:
            return
        if (ids < 0).any():
            raise InvalidInput("vector ids must be non-negative")
        if not self.index.is_trained:
            raise StoreError(f"index {self.factory} is not trained; build it with VectorIndex.build")
        revived = self.tombstones.intersection(ids.tolist())
        if revived:  # an id coming back after removal from a no-remove index: rebuild to drop the old copy
            self.compact()
        self.index.add_with_ids(vectors, ids)
        self._gpu_dirty = True

    def remove(self, ids) -> int:
        """Remove ``ids``; returns how many were present. Unknown ids are ignored."""
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        if len(ids) == 0 or self.index.ntotal == 0:
            return 0
        present = ids[np.isin(ids, self.ids())]
        if len(present) == 0:
            return 0
        faiss = faiss_lib()
        try:
            removed = int(self.index.remove_ids(faiss.IDSelectorBatch(present)))
        except RuntimeError:  # HNSW & co. cannot remove: hide, and rebuild once they pile up
            self.tombstones.update(int(i) for i in present)
            removed = len(present)
            if len(self.tombstones) > _TOMBSTONE_COMPACT_FRACTION * max(1, self.index.ntotal):
                self.compact()
        self._gpu_dirty = True
        return removed

    def ids(self) -> np.ndarray:
        """Sorted ids of the live vectors."""
        return stored_ids(self.index, self.tombstones)

    def reconstruct(self, ids) -> np.ndarray:
        """Stored vectors for ``ids`` (exact for Flat/HNSW, approximate for quantised types)."""
        return reconstruct_vectors(self.index, ids, self.dim)

    def compact(self) -> None:
        """Rebuild without tombstoned vectors (for index types that cannot remove)."""
        if not self.tombstones:
            return
        live = self.ids()
        vectors = self.reconstruct(live)
        fresh = VectorIndex.create(self.dim, self.model, self.factory, self.metric)
        if not fresh.index.is_trained:
            fresh.train(vectors)
        fresh.tombstones = set()
        fresh.index.add_with_ids(as_matrix(vectors), live)
        self.index = fresh.index
        self.tombstones = set()
        self._gpu_dirty = True

    # ------------------------------------------------------------------ search
    def _configure(self) -> None:
        """Apply the search parameters to the FAISS objects, once per (index object, parameters).

        Why remembered: finding the IVF, HNSW and refine layers (SWIG downcasts) costs 20-36 us, a few
        percent of a whole search at 10k clips, and the parameters change only when tuned or set.
        The index object itself is kept in the key (not its id), so a replaced index is configured.
        """
        key = (self.index, self.nprobe, self.ef_search, self.refine_k_factor)
        done = self._configured
        if done is not None and done[0] is key[0] and done[1:] == key[1:]:
            return
        faiss = faiss_lib()
        outer = faiss.downcast_index(self.index)
        if isinstance(outer, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            outer = faiss.downcast_index(outer.index)
        if isinstance(outer, faiss.IndexRefine):
            outer.k_factor = float(self.refine_k_factor)
        inner = inner_index(self.index)
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = max(self.ef_search, 16)
        if is_ivf(inner):
            ivf = faiss.extract_index_ivf(inner)
            ivf.nprobe = min(self.nprobe, ivf.nlist)
        self._configured = key

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores float32 [n,k], ids int64 [n,k])``, best first; missing slots are -1 / -inf."""
        queries = self._check(queries)
        k = int(k)
        if k <= 0:
            raise InvalidInput("k must be positive")
        n = len(queries)
        if self.ntotal == 0 or n == 0:
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        # faiss's own choice between its SIMD kernels and BLAS is left alone: a lowered
        # ``distance_compute_blas_threshold`` sent single queries through sgemm, which made the IVF
        # coarse step 4x slower (2,048 centroids x 512-d: 0.41 ms against 0.10 ms; faiss 1.15 compares
        # the threshold with the work size, not the query count) for no gain on batches (measured).
        self._configure()
        fetch = min(k + len(self.tombstones), int(self.index.ntotal))
        with faiss_threads(1 if n < _PARALLEL_MIN_QUERIES else None):
            scores, ids = search_index(self).search(queries, fetch)
        if self.tombstones:
            scores, ids = drop_ids(scores, ids, self.tombstones, k)
        if ids.shape[1] < k:
            pad = k - ids.shape[1]
            scores = np.hstack([scores, np.full((n, pad), -np.inf, np.float32)])
            ids = np.hstack([ids, np.full((n, pad), -1, np.int64)])
        scores = scores[:, :k].astype(np.float32, copy=False)
        ids = ids[:, :k].astype(np.int64, copy=False)
        if self.metric == "l2":
            scores = -scores  # larger is better everywhere
        scores[ids < 0] = -np.inf
        return scores, ids
