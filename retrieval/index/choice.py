"""Which index type ``auto`` builds, from costs measured on the 2-core target machine (see the package docstring)."""

from __future__ import annotations

import math

FLAT_MAX_CELLS = 1 << 20  # auto: Flat while n * dim <= this (8,192 clips at 128-d, 2,048 at 512-d)
# auto: fast-scan PQ + fp16 refine once n * dim passes this (500k clips at 512-d, 2M at 128-d). Measured
# at 1M x 512-d clustered vectors, one thread, recall@20 >= 0.95: IVF2048,SQfp16 needed nprobe 16 and
# 13.2 ms a query; IVF2048,PQ128x4fs,Refine(SQfp16) 1.2 ms (nprobe 16, k_factor 32); HNSW32_SQfp16
# topped out at recall 0.946 (efSearch 512, 6.7 ms) after a 730 s build.
FASTSCAN_MIN_CELLS = 1 << 28


def choose_factory(n: int, dim: int, *, flat_max: int | None = None) -> str:
    """The automatic index type for ``n`` vectors of ``dim`` numbers (see the module docstring).

    ``flat_max`` (setting ``index_flat_max``) overrides the measured rule with a clip count.
    """
    from retrieval.settings import resolve

    flat_max = resolve("index_flat_max", flat_max)
    if (n <= int(flat_max)) if flat_max is not None else (n * max(int(dim), 1) <= FLAT_MAX_CELLS):
        return "Flat"
    if n * dim > FASTSCAN_MIN_CELLS and dim % 8 == 0:
        # 4-bit PQ codes of 4 dimensions each are scanned with SIMD lookups (~10x the fp16 scan rate);
        # they only shortlist: the top k x k_factor are re-scored from fp16 codes, so order is kept
        return f"IVF{ivf_nlist(n)},PQ{dim // 4}x4fs,Refine(SQfp16)"
    return f"IVF{ivf_nlist(n)},SQfp16"


def ivf_nlist(n: int) -> int:
    """IVF lists for ``n`` vectors: the power of two nearest 2*sqrt(n), at most n/64 (lists of ~64+
    vectors: at 10k clips, 256 lists of 39 left new queries at recall 0.947 with 8 probes; 128 lists
    reach 0.99 for the same 0.1 ms), between 16 and 65536."""
    want = min(2 * math.sqrt(max(n, 1)), max(n, 1) / 64)
    return int(min(65536, max(16, 2 ** round(math.log2(max(want, 1))))))
