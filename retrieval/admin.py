"""The server's writes to a data home: add captions, delete a video (the admin routes).

Why a mixin of its own: the search engine reads; these two methods write, through the same write
path as the indexer (:mod:`retrieval.text_corpus`, :mod:`retrieval.clip_writer`), under the home's
lock, and then install the saved index in the engine's live stores so the next query sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from retrieval.lock import HomeLock
from retrieval.query import clean_query

_ADMIN_LOCK_WAIT = 30.0  # seconds an admin write waits for a running `vtr index` to release the home
_BUSY = "the index is busy (`vtr index` is running); try again when it finishes"


class AdminWrites:
    """Mixed into :class:`retrieval.engine.SearchEngine`, whose home, catalog, model and live stores it uses."""

    _write_lock: threading.Lock  # one admin write at a time per engine (the home lock covers other processes)

    def _locked_home(self) -> HomeLock:
        """Hold the indexer's lock while this process rewrites index files (one writer at a time)."""
        return HomeLock(self.home.lock_path, holder="vtr serve", timeout=_ADMIN_LOCK_WAIT, busy=_BUSY)

    def add_texts(self, texts: Sequence[str], source: str | None = None) -> list[int]:
        """Add captions to the corpus video->text search ranks; returns their ids (existing ones reused)."""
        from retrieval.text_corpus import add_texts

        clean = [clean_query(t) for t in texts]
        if not clean:
            return []
        model, _, tokenizer = self.bundle
        with self._write_lock, self._locked_home():
            rep = add_texts(
                clean, source=source, home=self.home, catalog=self.catalog, model=model, tokenizer=tokenizer,
                on_save=self._texts.replace,
            )  # fmt: skip
        return list(rep.ids)

    def delete_video(self, video_id: int) -> dict:
        """Remove a video from the catalog, the clip index and its thumbnails (the file stays)."""
        from retrieval.clip_writer import delete_video

        with self._write_lock, self._locked_home():
            return delete_video(self.home, self.catalog, video_id, on_save=self._clips.replace)
