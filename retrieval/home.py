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

DEMO_HOME = Path("demo-data") / "home"  # where `make demo` / `vtr demo` (default --dir) builds its home


def find_home(root: str | os.PathLike | None = None) -> str | os.PathLike | None:
    """The home a *reading* command (search, status, serve) should open when none was given.

    ``--home`` or ``VTR_HOME`` (or ``VTR_DB``) win; else the default home if it was indexed; else the
    demo's home under the current folder, when `make demo` built one there (so `vtr search` right
    after the demo searches the demo). Commands that write (`vtr index`) never guess.
    """
    if root is not None or os.environ.get("VTR_HOME") or os.environ.get("VTR_DB"):
        return root
    if (Path(resolve("home")).expanduser() / "catalog.db").exists():
        return root
    demo = Path.cwd() / DEMO_HOME
    return demo if (demo / "catalog.db").exists() else root


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

    # -- filmstrips: each clip's sampled frames side by side, for scrubbing in the UI
    @property
    def filmstrips_dir(self) -> Path:
        return self.root / "filmstrips"

    def filmstrip_path(self, clip_id: int) -> Path:
        return self.filmstrips_dir / f"{int(clip_id)}.jpg"

    # -- example queries checked against this home (written by `vtr demo`)
    @property
    def examples_path(self) -> Path:
        return self.root / "examples.json"

    def read_examples(self) -> list[str]:
        """Queries known to find a right clip first in this home ([] when none were recorded)."""
        import json

        try:
            data = json.loads(self.examples_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [str(x) for x in data.get("examples", [])] if isinstance(data, dict) else []

    def ensure(self) -> DataHome:
        """Create the folders (not the files): safe to call every time."""
        for d in (self.root, self.index_dir, self.tokens_dir, self.thumbs_dir, self.filmstrips_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        return self.root.is_dir()
