"""Query-bank normalisation (QB-Norm, Bogolin et al. 2022): the service's stand-in for DSL.

Why: cross-modal embeddings have *hubs*, items close to many queries, which then top many result
lists they do not belong in. Dual softmax (DSL) corrects this by normalising each item's score over
the whole query set, and adds several R@1 points in ``vtr eval``; a search service sees one query
at a time, so it cannot. QB-Norm replaces the query set with a *bank* of plausible queries: each
candidate's cosine is lowered by its soft maximum similarity to the bank,

    bank_sim(item) = (1/beta) * log mean_b exp(beta * cos(b, item))

so an item close to many bank queries (a hub) loses, and one close to few keeps its score. The
home's own data is the bank: its caption corpus for text->video searches (the texts users ask
with), its indexed clips for video->text. ``beta`` and the weight of the correction are fitted
with the fused ranking on held-out data (:mod:`retrieval.calibration`).

The mean (not the sum) keeps ``bank_sim`` on the cosine scale whatever the bank's size; banks past
:data:`BANK_SIZE` items use a seeded sample, which estimates the same mean. Pure numpy.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

BANK_SIZE = 4096  # bank items kept in memory; past this a seeded sample (cost: 64 candidates x 4096 dots)
BANK_MIN = 16  # fewer bank items than this estimate nothing: no normalisation
MEMO_MAX = 200_000  # memoised item similarities per bank (about 20 MB) before the memo starts over


def soft_max_similarity(items: np.ndarray, bank: np.ndarray, beta: float) -> np.ndarray:
    """``[n]`` log-mean-exp over the bank of ``beta * cos``, divided by ``beta`` (rows: unit vectors)."""
    s = beta * (np.asarray(items, np.float32) @ np.asarray(bank, np.float32).T).astype(np.float64)
    top = s.max(axis=1, keepdims=True)
    return ((top + np.log(np.exp(s - top).mean(axis=1, keepdims=True))) / beta).ravel()


def bank_similarities(gallery: np.ndarray, bank: np.ndarray, beta: float, chunk: int = 4096) -> np.ndarray:
    """:func:`soft_max_similarity` of every gallery row, in chunks (fitting scores whole splits)."""
    out = [soft_max_similarity(gallery[i : i + chunk], bank, beta) for i in range(0, len(gallery), chunk)]
    return np.concatenate(out) if out else np.empty(0)


class QueryBank:
    """The bank vectors of one index generation (rebuilt when the engine reloads that index)."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, np.float32)
        self._memo: dict[tuple[int, float], float] = {}  # (item id, beta) -> similarity, for this bank only
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.vectors)

    @classmethod
    def sample(
        cls, ids: np.ndarray, fetch: Callable[[np.ndarray], np.ndarray], size: int = BANK_SIZE, seed: int = 0
    ) -> QueryBank:
        """The vectors of up to ``size`` of ``ids`` (all of them, or a seeded sample), read with ``fetch``."""
        ids = np.asarray(ids, np.int64)
        if len(ids) > size:
            ids = np.sort(np.random.default_rng(seed).choice(ids, size, replace=False))
        vectors = fetch(ids) if len(ids) else np.empty((0, 0), np.float32)
        return cls(vectors)

    @property
    def usable(self) -> bool:
        return len(self.vectors) >= BANK_MIN

    def similarity(self, items: np.ndarray, beta: float) -> np.ndarray:
        return soft_max_similarity(items, self.vectors, beta)

    def similarity_of(self, ids: np.ndarray, vectors: Callable, beta: float) -> dict[int, float]:
        """id -> similarity for the ids whose embedding ``vectors(ids) -> (embeddings, ids found)`` reads.

        Memoised per bank: the same clips come back as candidates of many queries (hubs most of
        all), and a bank's items only change with a new bank.
        """
        ids = np.asarray(ids, np.int64)
        with self._lock:
            out = {int(i): self._memo[(int(i), beta)] for i in ids if (int(i), beta) in self._memo}
        todo = np.array([i for i in ids.tolist() if i not in out], np.int64)
        if len(todo):
            vecs, have = vectors(todo)
            if len(have):
                fresh = dict(zip(np.asarray(have).tolist(), self.similarity(vecs, beta).tolist(), strict=True))
                out.update(fresh)
                with self._lock:
                    if len(self._memo) > MEMO_MAX:
                        self._memo.clear()
                    self._memo.update({(i, beta): v for i, v in fresh.items()})
        return out


class BankCache:
    """One :class:`QueryBank` per index generation, per bank name ("texts", "clips").

    An index object is replaced when the engine reloads it and grows when captions are added in
    place, so the key is (object, size): a stale bank is rebuilt on first use, never served.
    """

    def __init__(self):
        self._banks: dict[str, tuple[object, int, QueryBank]] = {}
        self._lock = threading.Lock()

    def get(self, name: str, index, fetch: Callable[[np.ndarray], np.ndarray] | None = None) -> QueryBank | None:
        """The usable bank of ``index`` (a VectorIndex), or None when it is missing or too small.

        ``fetch(ids) -> vectors`` reads the sampled items' embeddings (default: ``index.reconstruct``;
        exact stored vectors are better where the index quantises).
        """
        if index is None or index.ntotal < BANK_MIN:
            return None
        with self._lock:
            cached = self._banks.get(name)
            if cached is None or cached[0] is not index or cached[1] != index.ntotal:
                cached = (index, index.ntotal, QueryBank.sample(index.ids(), fetch or index.reconstruct))
                self._banks[name] = cached
        bank = cached[2]
        return bank if bank.usable else None
