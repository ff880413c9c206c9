"""Stores that re-open themselves when a running ``vtr index`` rewrites their files.

Why: the server must see new videos without a restart, but statting files on every query is a
waste. One rule serves both stores the engine reads (the FAISS index with its sidecar, and the
token store): check the files' signature (mtime, size, inode) at most once per ``interval`` seconds,
and re-open (or refresh) the store only when the signature changed.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import StoreError

log = logging.getLogger(__name__)


def file_signature(*paths: Path) -> tuple:
    """(mtime_ns, size, inode) per path, ``None`` for a missing one: equal signatures, same files."""
    sig = []
    for p in paths:
        try:
            st = p.stat()
            sig.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            sig.append(None)
    return tuple(sig)


class LiveStore:
    """A store re-opened when the signature of its files changes, checked at most once per ``interval``.

    Subclasses say which files make up the store (:meth:`paths`) and how to open it (:meth:`open`,
    given the previous object so it may refresh in place); ``None`` means there is no store yet.
    ``retry_missing``: while there is no store, look again on every call instead of once per interval.
    """

    retry_missing = False

    def __init__(self, interval: float):
        self.interval = float(interval)
        self.lock = threading.RLock()
        self._store: Any = None
        self._sig: tuple | None = None
        self._checked = 0.0

    def paths(self) -> list[Path]:
        raise NotImplementedError

    def open(self, sig: tuple, previous: Any, **kw) -> Any:
        raise NotImplementedError

    def _fresh(self) -> bool:
        if self._sig is None or (self._store is None and self.retry_missing):
            return False
        return time.monotonic() - self._checked < self.interval

    def get(self, **kw) -> Any:
        """The current store, or None when there is none yet."""
        if self._fresh():
            return self._store
        with self.lock:
            if self._fresh():
                return self._store
            sig = file_signature(*self.paths())
            if sig != self._sig or (self._store is None and self.retry_missing):
                self._store = self.open(sig, self._store, **kw)
                self._sig = sig
            self._checked = time.monotonic()
            return self._store

    def replace(self, store: Any) -> None:
        """Install a store this process just saved (so it does not wait for the next check)."""
        with self.lock:
            self._store = store
            self._sig = file_signature(*self.paths())
            self._checked = time.monotonic()


class LiveIndex(LiveStore):
    """A :class:`~retrieval.index.VectorIndex` re-opened whenever its file or sidecar changes (atomic saves)."""

    def __init__(self, path: Path, interval: float):
        super().__init__(interval)
        self.path = path

    def paths(self) -> list[Path]:
        from retrieval.index import sidecar_path

        return [self.path, sidecar_path(self.path)]

    def open(self, sig: tuple, previous: Any, model: str | None = None) -> Any:
        if sig[0] is None or sig[1] is None:
            return None
        from retrieval.index import VectorIndex

        for attempt in range(3):  # a save may land between our stat and our read: try again
            try:
                index = VectorIndex.load(self.path, model=model)
                log.info("loaded %s: %d vectors (%s)", self.path.name, index.ntotal, index.factory)
                return index
            except StoreError:
                if attempt == 2:
                    raise
                time.sleep(0.05)
        return None

    def peek_model(self) -> str | None:
        """The model named in the sidecar, without loading the index."""
        from retrieval.index import read_sidecar

        try:
            meta = read_sidecar(self.path)
        except StoreError:
            return None
        return meta.get("model") if meta else None


class LiveTokens(LiveStore):
    """The home's token store, refreshed when the indexer appended to it (None if there is none)."""

    retry_missing = True

    def __init__(self, root: Path, interval: float):
        super().__init__(interval)
        self.root = root

    def paths(self) -> list[Path]:
        shards = sorted(self.root.glob("*.ids")) if self.root.is_dir() else []
        return [self.root / "meta.json", *shards]

    def open(self, sig: tuple, previous: Any, **kw) -> Any:
        from retrieval.token_store import TokenStore

        if sig[0] is None:
            return None
        try:
            if previous is None:
                return TokenStore(self.root, readonly=True)
            previous.refresh()
            return previous
        except (OSError, ValueError, KeyError) as exc:
            log.warning("token store unreadable (re-ranking off until it is): %s", exc)
            return None

    def tokens(self, ids) -> tuple[np.ndarray | None, np.ndarray]:
        """(fp16 token sets of the ids that have one, mask of which do)."""
        ids = np.asarray(ids, dtype=np.int64)
        with self.lock:
            store = self.get()
            if store is None or len(ids) == 0:
                return None, np.zeros(len(ids), bool)
            toks, mask = store.find_tokens(ids)
            return (toks if mask.any() else None), mask

    def vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(exact stored embeddings of the ids that have one, those ids)."""
        with self.lock:
            store = self.get()
            if store is None or len(ids) == 0:
                return np.empty((0, 0), np.float32), np.empty(0, np.int64)
            have = ids[store.contains(ids)]
            return np.asarray(store.get_vectors(have), dtype=np.float32), have
