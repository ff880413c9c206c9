"""What is in a data home: the numbers behind `vtr status`."""

from __future__ import annotations

from retrieval.catalog import Catalog, sqlite_file_missing
from retrieval.home import DataHome
from retrieval.index import read_sidecar


def collect_status(home: DataHome, db: str | None = None) -> dict:
    """Counts of videos, clips, vectors (FAISS, as saved), texts and failed files with reasons."""
    url = home.db_url(db)
    clip_meta = read_sidecar(home.clip_index_path) if home.clip_index_path.exists() else None
    text_meta = read_sidecar(home.text_index_path) if home.text_index_path.exists() else None
    out = {
        "home": str(home.root),
        "videos": 0,
        "clips": 0,
        "vectors": int(clip_meta["count"]) if clip_meta else 0,
        "texts": 0,
        "text_vectors": int(text_meta["count"]) if text_meta else 0,
        "failed": [],
        "warnings": [],
        "libraries": [],
        "duration": 0.0,
        "model": (clip_meta or text_meta or {}).get("model"),
        "index_factory": clip_meta.get("factory") if clip_meta else None,
        "index_search": _search_params(clip_meta),
        "index_recall": (clip_meta or {}).get("recall"),  # None for an index built before recall was measured
    }
    if sqlite_file_missing(url):
        return out
    catalog = Catalog(url, create=False)
    try:
        stats = catalog.stats()
        out.update(
            videos=stats["videos"],
            clips=stats["clips"],
            texts=stats["texts"],
            duration=round(stats["duration"], 3),
            failed=catalog.failed_videos(),
            warnings=catalog.warnings(),
            libraries=catalog.libraries(),
        )
        out.update(_token_rows(home, catalog))
    finally:
        catalog.close()
    return out


def _token_rows(home: DataHome, catalog: Catalog) -> dict:
    """Token store rows on disk: ``token_rows_live`` (clips in the catalog) and ``token_rows_dead`` (the rest)."""
    from retrieval.token_store import TokenStore

    if not (home.tokens_dir / "meta.json").exists():
        return {"token_rows_live": 0, "token_rows_dead": 0}
    store = TokenStore(home.tokens_dir, readonly=True)
    try:
        dead = store.dead_rows(catalog.all_clip_ids())
        return {"token_rows_live": store.rows() - dead, "token_rows_dead": dead}
    finally:
        store.close()


def _search_params(meta: dict | None) -> dict | None:
    """The clip index's search parameters (older sidecars lack ``search``: derived from the factory)."""
    if not meta:
        return None
    if "search" in meta:
        return meta["search"]
    factory = str(meta.get("factory", ""))
    if "IVF" in factory:
        return {"nprobe": meta.get("nprobe")}
    if "HNSW" in factory:
        return {"efSearch": meta.get("ef_search")}
    return {}
