"""Per-clip vectors and matching-head token sets on disk, addressable by clip id.

Why a store of its own: the re-ranker needs each candidate clip's compact token set
(``[1+T, width]``, fp16, ~14 kB for ViCLIP-B) at query time, and the indexer needs every clip's
embedding again whenever FAISS must be rebuilt or reconciled after a crash. Both are fixed-size
records, so they live in append-only, memory-mapped shard files:

    tokens/meta.json            model, token shape, dim, generation
    tokens/g0-000000.ids        int64 clip id per row
    tokens/g0-000000.vec        float32 [rows, dim]     clip embedding (what FAISS holds)
    tokens/g0-000000.tok        float16 [rows, N, W]    matching-head token set

Crash safety: :meth:`TokenStore.append` writes the data rows, fsyncs them, and only then writes and
fsyncs the ids; a row counts only once its id is on disk, and a torn tail is overwritten by the
next append. The catalog commits its clip rows *after* ``append`` returns, so every committed clip
has its record; records of clips that were never committed are garbage that :meth:`compact` drops.
When an id appears twice (a reused SQLite id after a rolled-back transaction) the later row wins.

Readers in other processes call :meth:`refresh` to see rows appended since they opened the store.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.atomic import atomic_write_json
from retrieval.errors import IndexMismatch, InvalidInput, NotFound, StoreError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
ROWS_PER_SHARD = 1 << 16
_FP16_MAX = 65504.0
_RECENT_MERGE = 1 << 16  # recent appends kept in a dict until merged into the sorted arrays


@dataclass(frozen=True)
class StoreLayout:
    model: str
    n_tokens: int  # tokens per clip (1 + T for ViCLIP: class token + one pooled token per frame)
    width: int  # token width
    dim: int  # clip embedding dimension

    @property
    def tok_bytes(self) -> int:
        return self.n_tokens * self.width * 2

    @property
    def vec_bytes(self) -> int:
        return self.dim * 4


def _fsync(fh) -> None:
    fh.flush()
    os.fsync(fh.fileno())


class TokenStore:
    """Open (or, with ``layout``, create) the store in ``root``.

    ``layout`` given and the store exists: it must match (:class:`IndexMismatch` otherwise).
    ``layout`` omitted: the store must exist (:class:`StoreError` otherwise).
    """

    def __init__(self, root: str | os.PathLike, layout: StoreLayout | None = None, *, readonly: bool = False):
        self.root = Path(root)
        self.readonly = readonly
        meta_path = self.root / "meta.json"
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            self.layout = StoreLayout(meta["model"], int(meta["n_tokens"]), int(meta["width"]), int(meta["dim"]))
            self.generation = int(meta.get("generation", 0))
            if layout is not None and layout != self.layout:
                raise IndexMismatch(
                    f"token store {self.root} holds {self.layout.model} tokens [{self.layout.n_tokens}x"
                    f"{self.layout.width}] and dim {self.layout.dim}; this run needs {layout.model} "
                    f"[{layout.n_tokens}x{layout.width}], dim {layout.dim}: use another --home"
                )
        elif layout is None:
            raise StoreError(f"no token store at {self.root} (index some videos first)")
        elif readonly:
            raise StoreError(f"no token store at {self.root}")
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self.layout = layout
            self.generation = 0
            self._write_meta()
        self._load_index()

    # ------------------------------------------------------------------ files
    def _write_meta(self) -> None:
        lay = self.layout
        atomic_write_json(
            self.root / "meta.json",
            {
                "format": FORMAT_VERSION,
                "model": lay.model,
                "n_tokens": lay.n_tokens,
                "width": lay.width,
                "dim": lay.dim,
                "generation": self.generation,
                "rows_per_shard": ROWS_PER_SHARD,
            },
        )

    def _shard_path(self, shard: int, ext: str, generation: int | None = None) -> Path:
        g = self.generation if generation is None else generation
        return self.root / f"g{g}-{shard:06d}.{ext}"

    def _shards(self) -> list[int]:
        prefix = f"g{self.generation}-"
        return sorted(int(p.name[len(prefix) : -4]) for p in self.root.glob(f"{prefix}*.ids"))

    def _valid_rows(self, shard: int) -> int:
        lay = self.layout
        sizes = []
        for ext, rec in (("ids", 8), ("vec", lay.vec_bytes), ("tok", lay.tok_bytes)):
            p = self._shard_path(shard, ext)
            sizes.append(p.stat().st_size // rec if p.exists() else 0)
        return min(sizes)

    def _load_index(self) -> None:
        self._rows: dict[int, int] = {}
        self._maps: dict[int, tuple[np.memmap, np.memmap] | None] = {}
        ids_parts, shard_parts, row_parts = [], [], []
        for shard in self._shards():
            n = self._valid_rows(shard)
            self._rows[shard] = n
            if n:
                ids = np.fromfile(self._shard_path(shard, "ids"), dtype=np.int64, count=n)
                ids_parts.append(ids)
                shard_parts.append(np.full(n, shard, np.int32))
                row_parts.append(np.arange(n, dtype=np.int64))
        self._recent: dict[int, tuple[int, int]] = {}
        if ids_parts:
            self._set_arrays(np.concatenate(ids_parts), np.concatenate(shard_parts), np.concatenate(row_parts))
        else:
            self._ids = np.empty(0, np.int64)
            self._shard = np.empty(0, np.int32)
            self._row = np.empty(0, np.int64)

    def _set_arrays(self, ids: np.ndarray, shard: np.ndarray, row: np.ndarray) -> None:
        # keep the LAST occurrence of each id (append order = shard, row order)
        rev = slice(None, None, -1)
        uniq, first_in_rev = np.unique(ids[rev], return_index=True)
        pick = len(ids) - 1 - first_in_rev
        self._ids, self._shard, self._row = uniq, shard[pick], row[pick]

    def _merge_recent(self) -> None:
        if not self._recent:
            return
        r_ids = np.fromiter(self._recent.keys(), np.int64, len(self._recent))
        locs = np.array(list(self._recent.values()), dtype=np.int64).reshape(-1, 2)
        keep = ~np.isin(self._ids, r_ids)
        self._set_arrays(
            np.concatenate([self._ids[keep], r_ids]),
            np.concatenate([self._shard[keep], locs[:, 0].astype(np.int32)]),
            np.concatenate([self._row[keep], locs[:, 1]]),
        )
        self._recent = {}

    def refresh(self) -> None:
        """Pick up rows appended (or a compaction done) by another process since this one looked."""
        meta = json.loads((self.root / "meta.json").read_text())
        if int(meta.get("generation", 0)) != self.generation:
            self.generation = int(meta["generation"])
            self._load_index()
            return
        for shard in self._shards():
            n = self._valid_rows(shard)
            old = self._rows.get(shard, 0)
            if n > old:
                with open(self._shard_path(shard, "ids"), "rb") as fh:
                    fh.seek(old * 8)
                    new_ids = np.frombuffer(fh.read((n - old) * 8), dtype=np.int64)
                for r, i in enumerate(new_ids.tolist()):
                    self._recent[int(i)] = (shard, old + r)
                self._rows[shard] = n
                self._maps[shard] = None
        if len(self._recent) > _RECENT_MERGE:
            self._merge_recent()

    # ------------------------------------------------------------------ writing
    def append(self, ids, vectors: np.ndarray, tokens: np.ndarray) -> None:
        """Durably store one record per id (vector float32 [dim], tokens [N,W] stored as fp16)."""
        if self.readonly:
            raise StoreError("token store opened read-only")
        lay = self.layout
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))
        vectors = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        tokens = np.asarray(tokens)
        if vectors.shape != (len(ids), lay.dim):
            raise InvalidInput(f"vectors must be [{len(ids)}, {lay.dim}], got {list(vectors.shape)}")
        if tokens.shape != (len(ids), lay.n_tokens, lay.width):
            raise InvalidInput(f"tokens must be [{len(ids)}, {lay.n_tokens}, {lay.width}], got {list(tokens.shape)}")
        if len(ids) == 0:
            return
        tokens = np.ascontiguousarray(np.clip(tokens, -_FP16_MAX, _FP16_MAX).astype(np.float16))
        start = 0
        while start < len(ids):
            shards = self._shards()
            shard = shards[-1] if shards else 0
            row = self._valid_rows(shard) if shards else 0
            if row >= ROWS_PER_SHARD:
                shard, row = shard + 1, 0
            take = min(len(ids) - start, ROWS_PER_SHARD - row)
            sl = slice(start, start + take)
            for ext, data, rec in (("vec", vectors[sl], lay.vec_bytes), ("tok", tokens[sl], lay.tok_bytes)):
                p = self._shard_path(shard, ext)
                with open(p, "r+b" if p.exists() else "wb") as fh:
                    fh.seek(row * rec)
                    fh.write(data.tobytes())
                    fh.truncate()
                    _fsync(fh)
            p = self._shard_path(shard, "ids")
            with open(p, "r+b" if p.exists() else "wb") as fh:
                fh.seek(row * 8)
                fh.write(ids[sl].tobytes())
                fh.truncate()
                _fsync(fh)
            for r, i in enumerate(ids[sl].tolist()):
                self._recent[int(i)] = (shard, row + r)
            self._rows[shard] = row + take
            self._maps[shard] = None
            start += take
        if len(self._recent) > _RECENT_MERGE:
            self._merge_recent()

    def compact(self, keep_ids) -> int:
        """Rewrite the store with only ``keep_ids`` (the catalog's clips); returns rows dropped.

        Written as a new generation and switched to by one atomic ``meta.json`` replace, so a crash
        mid-compaction leaves the old generation intact (:mod:`retrieval.token_compaction`).
        """
        from retrieval.token_compaction import compact  # imported here: that module imports this one

        return compact(self, keep_ids)

    def remove_stale_generations(self) -> int:
        """Delete shard files of other generations (left by a compaction that was interrupted); returns how many.

        Readers that have not refreshed since a compaction keep their memory maps of the old files, which
        stay valid after the unlink.
        """
        from retrieval.token_compaction import remove_stale_generations

        return remove_stale_generations(self)

    def dead_rows(self, live_ids) -> int:
        """Rows on disk that hold no live clip: replaced, removed, never committed, or duplicates."""
        self._merge_recent()
        live = np.intersect1d(np.asarray(live_ids, dtype=np.int64), self._ids)
        return self.rows() - len(live)

    # ------------------------------------------------------------------ reading
    def _locate(self, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        shard = np.full(len(ids), -1, np.int64)
        row = np.full(len(ids), -1, np.int64)
        if len(self._ids):
            pos = np.searchsorted(self._ids, ids)
            pos_c = np.minimum(pos, len(self._ids) - 1)
            hit = self._ids[pos_c] == ids
            shard[hit] = self._shard[pos_c[hit]]
            row[hit] = self._row[pos_c[hit]]
        if self._recent:
            for k, i in enumerate(ids.tolist()):
                loc = self._recent.get(i)
                if loc is not None:
                    shard[k], row[k] = loc
        return ids, shard, row

    def _map(self, shard: int) -> tuple[np.memmap, np.memmap]:
        m = self._maps.get(shard)
        if m is None:
            lay = self.layout
            n = self._rows[shard]
            vec = np.memmap(self._shard_path(shard, "vec"), np.float32, "r", shape=(n, lay.dim))
            tok = np.memmap(self._shard_path(shard, "tok"), np.float16, "r", shape=(n, lay.n_tokens, lay.width))
            m = (vec, tok)
            self._maps[shard] = m
        return m

    def contains(self, ids) -> np.ndarray:
        """Boolean mask: which ids have a record."""
        _, shard, _ = self._locate(ids)
        return shard >= 0

    def __contains__(self, clip_id: int) -> bool:
        return bool(self.contains([clip_id])[0])

    def _gather(self, ids, which: int) -> np.ndarray:
        ids, shard, row = self._locate(ids)
        missing = ids[shard < 0]
        if len(missing):
            raise NotFound(f"no stored tokens for clip id(s) {missing[:10].tolist()}")
        return self._take(shard, row, which)

    def _take(self, shard: np.ndarray, row: np.ndarray, which: int) -> np.ndarray:
        """Rows ``row`` of shards ``shard`` (all present), in order: one fancy-index gather per shard."""
        shards = np.unique(shard)
        if len(shards) == 1:  # the common case: one gather from the map, no second copy
            return np.asarray(self._map(int(shards[0]))[which][row])
        lay = self.layout
        shape = (lay.dim,) if which == 0 else (lay.n_tokens, lay.width)
        out = np.empty((len(row), *shape), np.float32 if which == 0 else np.float16)
        for s in shards:
            sel = shard == s
            out[sel] = self._map(int(s))[which][row[sel]]
        return out

    def find_tokens(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(fp16 token sets [m, N, W] of the ids that have one, in request order; mask of which do),
        with one lookup of the ids (the re-ranker's read)."""
        _, shard, row = self._locate(ids)
        mask = shard >= 0
        return self._take(shard[mask], row[mask], 1), mask

    def get_tokens(self, ids) -> np.ndarray:
        """fp16 token sets [len(ids), N, W] in request order; :class:`NotFound` for unknown ids."""
        return self._gather(ids, 1)

    def get_vectors(self, ids) -> np.ndarray:
        """float32 clip embeddings [len(ids), dim] in request order."""
        return self._gather(ids, 0)

    def ids(self) -> np.ndarray:
        """Sorted ids that have a record (including garbage not yet compacted)."""
        self._merge_recent()
        return self._ids.copy()

    def __len__(self) -> int:
        self._merge_recent()
        return len(self._ids)

    def rows(self) -> int:
        """Rows on disk, garbage included (``rows() - len(store)`` is what compaction would free)."""
        return sum(self._rows.values())

    def close(self) -> None:
        self._maps.clear()
