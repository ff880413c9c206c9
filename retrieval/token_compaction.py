"""Compaction of a :class:`~retrieval.token_store.TokenStore`: rewrite only the live rows as a new generation.

Why a module of its own: appending and reading are what the store does on every run and every
query; compaction is the rare maintenance pass (after a re-index replaced clips, or the server
deleted videos) with its own crash-safety protocol. The new generation's shards are written and
fsynced, then ``meta.json`` is switched to them in one atomic replace (crash points
``token_compact:written`` and ``token_compact:switched`` sit on either side), and only then are the
old generation's files removed, so a kill at any point leaves a store that serves every committed
clip. The store's ``compact`` and ``remove_stale_generations`` methods call these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from retrieval import token_store
from retrieval.atomic import fsync_dir
from retrieval.crashpoints import crash_point
from retrieval.errors import StoreError

if TYPE_CHECKING:
    from retrieval.token_store import TokenStore

# token_store.ROWS_PER_SHARD is read at call time, as the store's own methods do (tests shrink it)


def compact(store: TokenStore, keep_ids) -> int:
    """Rewrite the store with only ``keep_ids`` (the catalog's clips); returns rows dropped.

    Written as a new generation and switched to by one atomic ``meta.json`` replace, so a crash
    mid-compaction leaves the old generation intact.
    """
    if store.readonly:
        raise StoreError("token store opened read-only")
    store._merge_recent()
    keep = np.intersect1d(np.asarray(keep_ids, dtype=np.int64), store._ids)
    total_rows = sum(store._rows.values())
    old_gen = store.generation
    new_gen = old_gen + 1
    for p in store.root.glob(f"g{new_gen}-*"):
        p.unlink()  # leftovers of an interrupted compaction
    chunk = 4096
    for s0 in range(0, len(keep), token_store.ROWS_PER_SHARD):
        shard_ids = keep[s0 : s0 + token_store.ROWS_PER_SHARD]
        shard = s0 // token_store.ROWS_PER_SHARD
        with (
            open(store._shard_path(shard, "vec", new_gen), "wb") as fv,
            open(store._shard_path(shard, "tok", new_gen), "wb") as ft,
        ):
            for c0 in range(0, len(shard_ids), chunk):
                part = shard_ids[c0 : c0 + chunk]
                fv.write(store.get_vectors(part).tobytes())
                ft.write(store.get_tokens(part).tobytes())
            token_store._fsync(fv)
            token_store._fsync(ft)
        with open(store._shard_path(shard, "ids", new_gen), "wb") as fi:
            fi.write(shard_ids.tobytes())
            token_store._fsync(fi)
    fsync_dir(store.root)  # the new shards' names are durable before meta.json points at them
    crash_point("token_compact:written")
    store.generation = new_gen
    store._write_meta()  # the switch: one atomic rename
    crash_point("token_compact:switched")
    store.remove_stale_generations()
    store._load_index()
    return total_rows - len(keep)


def remove_stale_generations(store: TokenStore) -> int:
    """Delete shard files of other generations (left by a compaction that was interrupted); returns how many.

    Readers that have not refreshed since a compaction keep their memory maps of the old files, which
    stay valid after the unlink.
    """
    if store.readonly:
        raise StoreError("token store opened read-only")
    removed = 0
    for p in store.root.glob("g*-*.*"):
        if p.name.startswith(f"g{store.generation}-") or p.suffix not in (".ids", ".vec", ".tok"):
            continue
        try:
            p.unlink()
            removed += 1
        except OSError:
            pass
    return removed
