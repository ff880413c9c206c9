"""Building and searching on the GPU when faiss-gpu sees one (the CPU index stays the source of truth)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from retrieval.index.faiss_ops import faiss_lib, gpu_available, inner_index, is_ivf, train_sample

if TYPE_CHECKING:
    from retrieval.index.vector_index import VectorIndex

log = logging.getLogger(__name__)
ADD_CHUNK = 262_144  # vectors per add() call while building (bounds temporary memory)


def build_on_gpu(self: VectorIndex, vectors: np.ndarray, ids: np.ndarray, seed: int) -> bool:
    """Train and fill an IVF index on the GPU and bring it back; False (nothing done) when it cannot."""
    if not is_ivf(self.index) or self.index.ntotal:
        return False
    faiss = faiss_lib()
    try:
        res = faiss.StandardGpuResources()
        gpu = faiss.index_cpu_to_gpu(res, 0, self.index)
        if hasattr(gpu, "cp"):  # the same clustering settings as on the CPU (quiet_train)
            gpu.cp.niter, gpu.cp.seed, gpu.cp.min_points_per_centroid = 10, 1234 + int(seed), 1
        if not gpu.is_trained:
            gpu.train(train_sample(vectors, faiss.extract_index_ivf(self.index).nlist, seed))
        for s in range(0, len(vectors), ADD_CHUNK):
            gpu.add_with_ids(vectors[s : s + ADD_CHUNK], ids[s : s + ADD_CHUNK])
        self.index = faiss.index_gpu_to_cpu(gpu)
    except (RuntimeError, AttributeError) as exc:  # a type without a GPU implementation: build on the CPU
        log.info("building %s on the CPU: %s", self.factory, exc)
        return False
    self._gpu_dirty = True
    return True


def search_index(self: VectorIndex):
    """The index to search: a GPU copy (kept in step with the CPU index) when one can be made, else the index."""
    if self.use_gpu == "never" or not gpu_available() or isinstance(inner_index(self.index), faiss_lib().IndexHNSW):
        return self.index
    if self._gpu_dirty or self._gpu_index is None:
        faiss = faiss_lib()
        try:
            res = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(res, 0, self.index)
            self._gpu_index._res = res  # keep the resources alive with the index
        except RuntimeError as exc:  # type without a GPU implementation: stay on the CPU
            log.info("index %s stays on the CPU: %s", self.factory, exc)
            self.use_gpu = "never"
            return self.index
        self._gpu_dirty = False
    if is_ivf(inner_index(self.index)):
        try:  # the GPU copy keeps the nprobe it was cloned with: give it the current one
            faiss_lib().GpuParameterSpace().set_index_parameter(self._gpu_index, "nprobe", self.nprobe)
        except (RuntimeError, AttributeError) as exc:
            log.debug("cannot set nprobe on the GPU index: %s", exc)
    return self._gpu_index
