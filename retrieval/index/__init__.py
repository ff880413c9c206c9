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
fp16 codes reach 0.96 at ``nprobe`` 1, like exact IVF-Flat, at half its memory. Past
``FASTSCAN_MIN_CELLS`` (``n * dim`` = 2**28: 500k clips at 512-d) scanning fp16 codes is the cost
(13 ms a query at 1M x 512-d for recall 0.95), so ``auto`` switches to
``IVF<nlist>,PQ<dim/4>x4fs,Refine(SQfp16)``: 4-bit PQ codes scanned with SIMD table lookups
shortlist ``k * refine_k_factor`` (32) candidates, which are re-scored from fp16 codes (1.2 ms at
the same recall; ``dim/8 + 2*dim`` bytes per vector, 10M x 512-d = 11 GB). Any FAISS factory
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

from retrieval.index.choice import FASTSCAN_MIN_CELLS, FLAT_MAX_CELLS, choose_factory, ivf_nlist
from retrieval.index.faiss_ops import gpu_available
from retrieval.index.recall import MIN_NPROBE, TUNE_K, TUNE_QUERIES
from retrieval.index.sidecar import check_compatible, read_sidecar, sidecar_path
from retrieval.index.vector_index import VectorIndex

__all__ = [
    "FASTSCAN_MIN_CELLS", "FLAT_MAX_CELLS", "MIN_NPROBE", "TUNE_K", "TUNE_QUERIES", "VectorIndex", "check_compatible", "choose_factory",
    "gpu_available", "ivf_nlist", "read_sidecar", "sidecar_path",
]  # fmt: skip
