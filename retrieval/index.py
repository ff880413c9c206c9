"""FAISS vector indexes described by a factory string and a JSON sidecar (the only faiss importer).

Why a sidecar: an index file alone does not say which model made its vectors; mixing two models'
vectors in one index silently ruins search (clip-retrieval #286/#288). The sidecar records
``{model, dim, metric, count, factory}`` and :meth:`VectorIndex.load` refuses a different model or
dimension with :class:`IndexMismatch`.

Index types (``choose_factory``), from costs measured on the 2-core target machine: exact ``Flat``
while it scans at most ``FLAT_MAX_CELLS`` numbers per query (``n * dim``; about 0.3 ms), then
``IVF<nlist>,SQfp16`` with ``nlist`` the power of two nearest ``2*sqrt(n)``: at 100k clips it answers
in 0.1-0.4 ms where Flat takes 14-40 ms, builds in seconds (HNSW32 took 227 s at 1M), can remove ids
in place and stores ``2*dim`` bytes per vector (10M x 512-d = 10.3 GB). Not SQ8: its 8-bit codes
cannot order near-duplicates (video libraries are full of them: the demo model's vectors have a
median nearest-neighbour cosine of 0.998) and cap recall@20 at 0.94 there whatever ``nprobe``;
fp16 codes reach 0.96 at ``nprobe`` 1, like exact IVF-Flat, at half its memory. Any FAISS factory
string can be given instead.

Recall is measured, not assumed (:meth:`VectorIndex.tune`): at build time a seeded sample of the
index's own vectors is searched exactly and through the index, and ``nprobe`` (IVF) or
``efSearch`` (HNSW) is raised until recall@k reaches the target (setting ``index_recall``, 0.95).
The achieved recall and the parameter go into the sidecar (``recall``); ``vtr status`` shows them.

Ids are the catalog's clip (or text) ids. Indexes that cannot add with ids are wrapped in
``IDMap2``; indexes that cannot remove (HNSW, refine) keep *tombstones* that are filtered out at
search time and dropped by a rebuild once they pass 10% (``compact``). Vectors are L2-normalised and
compared by inner product (cosine), as the model is trained.

Saves are atomic: write to a temp file, fsync, rename, fsync the folder; the sidecar follows the
same way. A reader therefore always sees a complete index; a crash between the two renames leaves a
sidecar whose ``count`` disagrees with the index, which :meth:`load` notices and logs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from retrieval.atomic import atomic_write_bytes
from retrieval.errors import IndexMismatch, InvalidInput, StoreError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_TOMBSTONE_COMPACT_FRACTION = 0.1
FLAT_MAX_CELLS = 1 << 20  # auto: Flat while n * dim <= this (8,192 clips at 128-d, 2,048 at 512-d)
TUNE_K = 20  # recall@k measured at build time (the engine's default page size)
TUNE_QUERIES = 1000  # sample of the index's own vectors used as queries
_TRAIN_PER_LIST = 32  # k-means training points per IVF list (faiss warns below 39; recall is measured anyway)
_ADD_CHUNK = 262_144  # vectors per add() call while building (bounds temporary memory)
# A search of fewer queries runs on one thread: OpenMP teams for one query gain little and, on a
# busy 2-core machine, cost 8-12 ms of spinning where the IVF search itself takes 0.1 ms (measured).
_PARALLEL_MIN_QUERIES = 16
# IVF never probes fewer lists than this: the tuning queries are the index's own vectors (moved),
# and queries from elsewhere, texts above all, sit farther from the cells: on the demo model's
# vectors own-vector tuning was met at nprobe 1 where text queries needed 4 (recall@20 0.80 at 1,
# 0.92 at 2, 0.99 at 4, 0.998 at 8). 8 lists cost ~0.1-0.5 ms at 1M clips.
MIN_NPROBE = 8


def _faiss():
    import faiss

    return faiss


def gpu_available() -> bool:
    """True when faiss was built with CUDA and sees a GPU."""
    faiss = _faiss()
    try:
        return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    except Exception:  # a broken CUDA install must not take CPU search down
        return False


def choose_factory(n: int, dim: int, *, flat_max: int | None = None) -> str:
    """The automatic index type for ``n`` vectors of ``dim`` numbers (see the module docstring).

    ``flat_max`` (setting ``index_flat_max``) overrides the measured rule with a clip count.
    """
    from retrieval.settings import resolve

    flat_max = resolve("index_flat_max", flat_max)
    if (n <= int(flat_max)) if flat_max is not None else (n * max(int(dim), 1) <= FLAT_MAX_CELLS):
        return "Flat"
    return f"IVF{ivf_nlist(n)},SQfp16"


def ivf_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: the power of two nearest 2*sqrt(n), at most n/64 (lists of ~64+
    vectors: at 10k clips, 256 lists of 39 left new queries at recall 0.947 with 8 probes; 128 lists
    reach 0.99 for the same 0.1 ms), between 16 and 65536."""
    want = min(2 * math.sqrt(max(n, 1)), max(n, 1) / 64)
    return int(min(65536, max(16, 2 ** round(math.log2(max(want, 1))))))


def sidecar_path(index_path: str | os.PathLike) -> Path:
    return Path(index_path).with_suffix(".json")


def read_sidecar(index_path: str | os.PathLike) -> dict | None:
    p = sidecar_path(index_path)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"index sidecar {p} is unreadable: {exc}") from exc


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
        self.refine_k_factor = 8  # refine stages re-score this many times k candidates
        self.recall: dict | None = None  # what tune() measured (None: never measured, e.g. an old index)
        self._gpu_index = None
        self._gpu_dirty = True
        self.use_gpu = "auto"

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, dim: int, model: str, factory: str | None = None, metric: str = "ip") -> VectorIndex:
        """An empty index; ``factory=None`` or ``"auto"`` starts exact (``Flat``)."""
        faiss = _faiss()
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
        if not _supports_add_with_ids(index):
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
        vectors = _as_matrix(vectors)
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        factory = choose_factory(len(vectors), vectors.shape[1]) if factory in (None, "", "auto") else factory
        vi = cls.create(vectors.shape[1], model, factory, metric)
        with _all_cores():
            if not (gpu_available() and vi._build_on_gpu(vectors, ids, seed)):
                if not vi.index.is_trained:
                    vi.train(vectors, seed=seed)
                for s in range(0, len(vectors), _ADD_CHUNK):
                    vi.add(vectors[s : s + _ADD_CHUNK], ids[s : s + _ADD_CHUNK])
            if tune:
                vi.tune(vectors, ids, target=recall_target, seed=seed)
        return vi

    def _build_on_gpu(self, vectors: np.ndarray, ids: np.ndarray, seed: int) -> bool:
        """Train and fill an IVF index on the GPU and bring it back; False (nothing done) when it cannot."""
        if not _is_ivf(self.index) or self.index.ntotal:
            return False
        faiss = _faiss()
        try:
            res = faiss.StandardGpuResources()
            gpu = faiss.index_cpu_to_gpu(res, 0, self.index)
            if not gpu.is_trained:
                gpu.train(_train_sample(vectors, faiss.extract_index_ivf(self.index).nlist, seed))
            for s in range(0, len(vectors), _ADD_CHUNK):
                gpu.add_with_ids(vectors[s : s + _ADD_CHUNK], ids[s : s + _ADD_CHUNK])
            self.index = faiss.index_gpu_to_cpu(gpu)
        except (RuntimeError, AttributeError) as exc:  # a type without a GPU implementation: build on the CPU
            log.info("building %s on the CPU: %s", self.factory, exc)
            return False
        self._gpu_dirty = True
        return True

    def train(self, vectors: np.ndarray, seed: int = 0) -> None:
        faiss = _faiss()
        vectors = self._check(vectors)
        if len(vectors) == 0:
            raise InvalidInput("cannot train an index on zero vectors")
        inner = _inner(self.index)
        nlist = getattr(faiss.extract_index_ivf(inner), "nlist", 0) if _is_ivf(inner) else 0
        if nlist and len(vectors) < nlist:
            raise InvalidInput(f"{self.factory} needs at least {nlist} training vectors, got {len(vectors)}")
        _quiet_train(self.index, _train_sample(vectors, nlist, seed) if nlist else vectors, seed)

    # ------------------------------------------------------------------ recall, measured
    def tune(
        self,
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

        faiss = _faiss()
        t0 = time.perf_counter()
        target = float(resolve("index_recall", target))
        vectors = self._check(vectors)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = len(vectors)
        if n == 0:
            self.recall = None
            return {}
        k = max(1, min(int(k), n - 1))
        with _all_cores():
            q, truth, origin = self.probe_queries(vectors, ids, k=k, queries=queries, seed=seed)

            def recall_at(value=None, name=None) -> float:
                if name is not None:
                    setattr(self, name, int(value))
                _, got = self.search(q, k + 1)
                return _recall(_without(got, origin, k), truth)

            inner = _inner(self.index)
            name, ladder, reached = None, [], None
            if _is_ivf(inner):
                name, ladder = "nprobe", _powers(1, faiss.extract_index_ivf(inner).nlist)
            elif isinstance(inner, faiss.IndexHNSW):
                name, ladder = "ef_search", _powers(max(16, k), 4096)
            if name is None:  # nothing to tune (Flat, plain PQ, ...): measure what it is
                best, value = recall_at(), None
            else:
                best, value = _tune_ladder(lambda v: recall_at(v, name), ladder, target)
                reached = value
                if name == "nprobe" and value < min(MIN_NPROBE, ladder[-1]):
                    value = min(MIN_NPROBE, ladder[-1])
                    best = recall_at(value, name)
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
            "seconds": round(time.perf_counter() - t0, 3),
        }
        if best < target:
            log.warning(
                "index %s reaches recall@%d %.3f < target %.3f at best (%s %s)",
                self.factory, k, best, target, self.recall["param"], value,
            )  # fmt: skip
        return self.recall

    def probe_queries(
        self, vectors: np.ndarray, ids: np.ndarray, *, k: int = TUNE_K, queries: int = TUNE_QUERIES, seed: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The queries :meth:`tune` measures with, their exact top-``k`` ids and the ids they came from.

        A seeded sample of the index's own vectors, each moved by a random step as long as its
        distance to its k-th nearest neighbour or to its IVF centroid, whichever is larger (then
        re-normalised for inner product); the vector it came from is left out of both the exact and
        the searched lists. Unmoved, or with its origin counted, a stored vector finds its
        neighbours too easily (it sits inside its own cell, and its origin is a free hit): on
        clustered 512-d vectors that said 0.96 where new queries got 0.947.
        """
        faiss = _faiss()
        n = len(vectors)
        k = max(1, min(int(k), n - 1))
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, min(int(queries), n), replace=False))
        q = np.ascontiguousarray(vectors[sample], dtype=np.float32)
        ftype = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        d, _ = faiss.knn(q, vectors, min(k + 1, n), ftype)
        reach = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * d[:, -1]) if self.metric == "ip" else np.maximum(0.0, d[:, -1]))
        reach = np.maximum(reach, self._cell_radius(q))
        step = rng.standard_normal(q.shape).astype(np.float32)
        step *= (reach / np.maximum(np.linalg.norm(step, axis=1), 1e-12))[:, None]
        q = q + step
        if self.metric == "ip":
            q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        q = np.ascontiguousarray(q, dtype=np.float32)
        _, exact = faiss.knn(q, vectors, k + 1, ftype)
        ids = np.asarray(ids, dtype=np.int64)
        return q, _without(ids[exact], ids[sample], k), ids[sample]

    def _cell_radius(self, x: np.ndarray) -> float:
        """Median distance from ``x`` to its nearest IVF centroid (0 for other types): the scale of the partition."""
        faiss = _faiss()
        inner = _inner(self.index)
        if not _is_ivf(inner):
            return 0.0
        ivf = faiss.extract_index_ivf(inner)
        _, assign = ivf.quantizer.search(x, 1)
        centroids = ivf.quantizer.reconstruct_batch(assign[:, 0])
        return float(np.median(np.linalg.norm(x - centroids, axis=1)))

    def search_params(self) -> dict:
        """The search parameters that apply to this index type (for ``vtr status``)."""
        faiss = _faiss()
        inner = _inner(self.index)
        out: dict = {}
        if _is_ivf(inner):
            ivf = faiss.extract_index_ivf(inner)
            out.update(nlist=int(ivf.nlist), nprobe=int(min(self.nprobe, ivf.nlist)))
        if isinstance(inner, faiss.IndexHNSW):
            out["efSearch"] = int(max(self.ef_search, 16))
        if _has_refine(self.index):
            out["refine_k_factor"] = self.refine_k_factor
        return out

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(
        cls, path: str | os.PathLike, *, model: str | None = None, dim: int | None = None, mmap: bool = False
    ) -> VectorIndex:
        """Load ``path`` and its sidecar; refuse another model or dimension with :class:`IndexMismatch`."""
        faiss = _faiss()
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
            "search": self.search_params(),
            "recall": self.recall,
            "tombstones": sorted(self.tombstones),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Atomically write the index and then its sidecar."""
        faiss = _faiss()
        path = Path(path)
        buf = faiss.serialize_index(self.index)
        atomic_write_bytes(path, buf.tobytes())
        atomic_write_bytes(sidecar_path(path), json.dumps(self.sidecar(), indent=1).encode())

    def memory_bytes(self) -> int:
        """Size of the serialised index (≈ its RAM footprint)."""
        return int(_faiss().serialize_index(self.index).size)

    # ------------------------------------------------------------------ content
    @property
    def ntotal(self) -> int:
        """Live vectors (tombstoned ones excluded)."""
        return int(self.index.ntotal) - len(self.tombstones)

    def __len__(self) -> int:
        return self.ntotal

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = _as_matrix(vectors)
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
        faiss = _faiss()
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
        faiss = _faiss()
        index = self.index
        if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            all_ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        elif _is_ivf(index):
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
        if self.tombstones:
            all_ids = all_ids[~np.isin(all_ids, np.fromiter(self.tombstones, np.int64))]
        all_ids.sort()
        return all_ids

    def reconstruct(self, ids) -> np.ndarray:
        """Stored vectors for ``ids`` (exact for Flat/HNSW, approximate for quantised types)."""
        faiss = _faiss()
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        index = self.index
        if isinstance(index, faiss.IndexIDMap2):
            return (
                np.stack([index.reconstruct(int(i)) for i in ids]) if len(ids) else np.empty((0, self.dim), np.float32)
            )
        if _is_ivf(index):
            ivf = faiss.extract_index_ivf(index)
            ivf.make_direct_map(True)
            try:
                return (
                    np.stack([index.reconstruct(int(i)) for i in ids])
                    if len(ids)
                    else np.empty((0, self.dim), np.float32)
                )
            finally:
                ivf.make_direct_map(False)
        raise StoreError(f"cannot reconstruct vectors from a {type(index).__name__} index")

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
        fresh.index.add_with_ids(_as_matrix(vectors), live)
        self.index = fresh.index
        self.tombstones = set()
        self._gpu_dirty = True

    # ------------------------------------------------------------------ search
    def _search_index(self):
        if self.use_gpu == "never" or not gpu_available() or isinstance(_inner(self.index), _faiss().IndexHNSW):
            return self.index
        if self._gpu_dirty or self._gpu_index is None:
            faiss = _faiss()
            try:
                res = faiss.StandardGpuResources()
                self._gpu_index = faiss.index_cpu_to_gpu(res, 0, self.index)
                self._gpu_index._res = res  # keep the resources alive with the index
            except RuntimeError as exc:  # type without a GPU implementation: stay on the CPU
                log.info("index %s stays on the CPU: %s", self.factory, exc)
                self.use_gpu = "never"
                return self.index
            self._gpu_dirty = False
        if _is_ivf(_inner(self.index)):
            try:  # the GPU copy keeps the nprobe it was cloned with: give it the current one
                _faiss().GpuParameterSpace().set_index_parameter(self._gpu_index, "nprobe", self.nprobe)
            except (RuntimeError, AttributeError) as exc:
                log.debug("cannot set nprobe on the GPU index: %s", exc)
        return self._gpu_index

    def _configure(self) -> None:
        faiss = _faiss()
        outer = faiss.downcast_index(self.index)
        if isinstance(outer, (faiss.IndexIDMap, faiss.IndexIDMap2)):
            outer = faiss.downcast_index(outer.index)
        if isinstance(outer, faiss.IndexRefine):
            outer.k_factor = max(float(outer.k_factor), float(self.refine_k_factor))
        inner = _inner(self.index)
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = max(self.ef_search, 16)
        if _is_ivf(inner):
            ivf = faiss.extract_index_ivf(inner)
            ivf.nprobe = min(self.nprobe, ivf.nlist)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores float32 [n,k], ids int64 [n,k])``, best first; missing slots are -1 / -inf."""
        faiss = _faiss()
        queries = self._check(queries)
        k = int(k)
        if k <= 0:
            raise InvalidInput("k must be positive")
        n = len(queries)
        if self.ntotal == 0 or n == 0:
            return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
        self._configure()
        faiss.cvar.distance_compute_blas_threshold = 16  # batched exact search through BLAS
        fetch = min(k + len(self.tombstones), int(self.index.ntotal))
        with _threads(1 if n < _PARALLEL_MIN_QUERIES else None):
            scores, ids = self._search_index().search(queries, fetch)
        if self.tombstones:
            scores, ids = _drop(scores, ids, self.tombstones, k)
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


# ---------------------------------------------------------------------------------------------


def check_compatible(meta: dict, path: Path, *, model: str | None, dim: int | None) -> None:
    if model is not None and meta.get("model") != model:
        raise IndexMismatch(
            f"the index at {path} was built with model {meta.get('model')!r}, not {model!r}: search with "
            f"--model {meta.get('model')}, or index into another --home (vectors of two models cannot be mixed)"
        )
    if dim is not None and int(meta.get("dim", -1)) != int(dim):
        raise IndexMismatch(f"the index at {path} has dimension {meta.get('dim')}, the model {dim}")


def _as_matrix(vectors) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidInput(f"vectors must be a 2-D array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidInput("vectors contain NaN or infinity")
    return x


def _inner(index):
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        index = faiss.downcast_index(index.index)
    if isinstance(index, faiss.IndexRefine):
        index = faiss.downcast_index(index.base_index)
    return index


def _is_ivf(index) -> bool:
    faiss = _faiss()
    try:
        return faiss.extract_index_ivf(index) is not None
    except RuntimeError:
        return False


def _supports_add_with_ids(index) -> bool:
    faiss = _faiss()
    index = faiss.downcast_index(index)
    return isinstance(index, faiss.IndexIVF)


def _quiet_train(index, vectors: np.ndarray, seed: int = 0) -> None:
    faiss = _faiss()
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


def _drop(scores: np.ndarray, ids: np.ndarray, dead: set[int], k: int) -> tuple[np.ndarray, np.ndarray]:
    keep = ~np.isin(ids, np.fromiter(dead, np.int64))
    out_s = np.full((len(ids), k), -np.inf, np.float32)
    out_i = np.full((len(ids), k), -1, np.int64)
    for r in range(len(ids)):
        s, i = scores[r][keep[r]][:k], ids[r][keep[r]][:k]
        out_s[r, : len(s)], out_i[r, : len(i)] = s, i
    return out_s, out_i


def _train_sample(vectors: np.ndarray, nlist: int, seed: int) -> np.ndarray:
    """A seeded sample of ``_TRAIN_PER_LIST`` vectors per IVF list (at least 16,384), in original order."""
    cap = max(nlist * _TRAIN_PER_LIST, 16_384)
    if len(vectors) <= cap:
        return vectors
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(vectors[np.sort(rng.choice(len(vectors), cap, replace=False))])


@contextmanager
def _threads(n: int | None):
    """FAISS (OpenMP) threads of the calling thread set to ``n`` for the block (None: unchanged)."""
    faiss = _faiss()
    if n is None:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def _all_cores():
    """FAISS threads = the CPU cores this process may use, for builds and batched searches."""
    return _threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def _without(rows: np.ndarray, drop: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` ids of each row other than that row's ``drop`` id (-1 pads a short row)."""
    out = np.full((len(rows), k), -1, np.int64)
    for r, (row, d) in enumerate(zip(rows, drop, strict=True)):
        rest = row[row != d][:k]
        out[r, : len(rest)] = rest
    return out


def _recall(got: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` found in the same row of ``got``."""
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(g, t)) / k for g, t in zip(got, truth, strict=True)]))


def _powers(lo: int, hi: int) -> list[int]:
    out, v = [], 1
    while v < hi:
        if v >= lo:
            out.append(v)
        v *= 2
    return [*out, int(hi)]


def _tune_ladder(recall_at, ladder: list[int], target: float) -> tuple[float, int]:
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


def _has_refine(index) -> bool:
    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, (faiss.IndexIDMap, faiss.IndexIDMap2)):
        index = faiss.downcast_index(index.index)
    return isinstance(index, faiss.IndexRefine)
