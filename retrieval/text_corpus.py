"""The one write path for captions: the corpus that video->text search ranks.

Writes follow the clip index's rule: reconcile the text index with the catalog first (vectors of
deleted texts removed, texts without vectors embedded again), commit the new captions to the
catalog, then add their vectors to FAISS and save it atomically. So an interrupted write leaves
nothing half-done, whether it came from ``vtr texts add`` or the server's ``POST /api/v1/texts``.
The caller holds the data home's :class:`~retrieval.lock.HomeLock`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from retrieval.catalog import Catalog
from retrieval.home import DataHome
from retrieval.index import VectorIndex
from retrieval.reconcile import reconcile_texts


@dataclass
class TextsReport:
    read: int = 0
    added: int = 0
    duplicates: int = 0
    reembedded: int = 0
    total: int = 0
    vectors: int = 0
    ids: list[int] = field(default_factory=list)  # ids of the given texts in order (existing ones reused)

    def to_dict(self) -> dict:
        """The summary ``vtr texts add --json`` prints (counts only)."""
        return {k: v for k, v in self.__dict__.items() if k != "ids"}


class TextEmbedder:
    """Caption vectors in batches (normalised, float32), as the text index stores them."""

    def __init__(self, model, tokenizer, batch_size: int = 256):
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            ids = self.tokenizer(texts[i : i + self.batch_size]).to(self.device)
            with self.torch.inference_mode():
                emb = self.model.encode_text(ids, normalize=True)
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, self.model.embed_dim), np.float32)


def open_text_index(home: DataHome, model_name: str, dim: int) -> VectorIndex:
    """The home's text index (refusing another model), or a new exact one."""
    if home.text_index_path.exists():
        return VectorIndex.load(home.text_index_path, model=model_name, dim=dim)
    return VectorIndex.create(dim, model_name, "Flat")


def add_texts(
    items: list[str],
    *,
    source: str | None,
    home: DataHome,
    catalog: Catalog,
    model,
    tokenizer,
    batch_size: int = 256,
    on_save: Callable[[VectorIndex], None] | None = None,
) -> TextsReport:
    """Add captions to the corpus and the text index (the caller holds the data home lock).

    ``on_save(index)`` runs after the index is saved (the server installs it for its next query).
    """
    embed = TextEmbedder(model, tokenizer, batch_size)
    home.ensure()
    index = open_text_index(home, model.name, model.embed_dim)
    rep = TextsReport(read=len(items))
    rep.reembedded = reconcile_texts(catalog, index, embed)
    new_ids, rep.ids = catalog.add_texts(items, source)  # committed first: the catalog is the truth
    rep.added = len(new_ids)
    rep.duplicates = len(items) - rep.added
    if new_ids:
        recs = catalog.texts_by_ids(new_ids)
        index.add(embed([r.text for r in recs]), np.array([r.id for r in recs], dtype=np.int64))
    if new_ids or rep.reembedded or not home.text_index_path.exists():
        index.save(home.text_index_path)
        if on_save is not None:
            on_save(index)
    rep.total = catalog.stats()["texts"]
    rep.vectors = index.ntotal
    return rep
