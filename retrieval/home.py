"""The data home: one folder that holds everything an index is made of.

Layout (all paths relative to the home)::

    catalog.db                 SQLite catalog (WAL); not used when --db points at PostgreSQL
    index/clips.faiss          FAISS index of clip vectors (ids = catalog clip ids)
    index/clips.json           its sidecar: model, dim, metric, count, factory
    index/texts.faiss          FAISS index of caption vectors (ids = catalog text ids)
    index/texts.json
    tokens/                    token store: per-clip vectors and matching-head token sets (fp16)
    thumbs/<clip_id>.jpg       one thumbnail per clip
    indexer.lock               held by the one `vtr index` run allowed at a time

Everything that reads or writes these paths asks this class for them, so the layout lives in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

from retrieval.settings import resolve


class DataHome:
    """Paths of one data home; ``root=None`` means the ``home`` setting (``--home`` / ``VTR_HOME``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(resolve("home", root)).expanduser().absolute()

    def __repr__(self) -> str:
        return f"DataHome({str(self.root)!r})"

    # -- catalog
    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.db"

    def db_url(self, override: str | None = None) -> str:
        """The catalog URL: an explicit ``--db``/``VTR_DB`` wins, else SQLite inside the home."""
        url = resolve("db", override)
        return url or f"sqlite:///{self.catalog_path}"

    # -- vector indexes
    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def clip_index_path(self) -> Path:
        return self.index_dir / "clips.faiss"

    @property
    def clip_sidecar_path(self) -> Path:
        return self.index_dir / "clips.json"

    @property
    def text_index_path(self) -> Path:
        return self.index_dir / "texts.faiss"

    # -- token store and thumbnails
    @property
    def tokens_dir(self) -> Path:
        return self.root / "tokens"

    @property
    def thumbs_dir(self) -> Path:
        return self.root / "thumbs"

    def thumbnail_path(self, clip_id: int) -> Path:
        return self.thumbs_dir / f"{int(clip_id)}.jpg"

    @property
    def lock_path(self) -> Path:
        return self.root / "indexer.lock"

    def ensure(self) -> DataHome:
        """Create the folders (not the files): safe to call every time."""
        for d in (self.root, self.index_dir, self.tokens_dir, self.thumbs_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        return self.root.is_dir()
