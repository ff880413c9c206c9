"""What the search engine says about its data home besides search results: stats, example queries, health.

Why a mixin of its own: these three describe the service (the ``/stats``, ``/suggestions`` and
``/health`` routes, ``vtr serve``'s start-up summary) by reading the catalog, the live indexes and
the model's ranking settings; they rank nothing. Keeping them here leaves :mod:`retrieval.engine` to
search and its orchestration, as :mod:`retrieval.admin` does for the engine's writes.
"""

from __future__ import annotations

import numpy as np

from retrieval import ranking, views


class EngineStatus:
    """Mixed into :class:`retrieval.engine.SearchEngine`, whose catalog, live indexes, model and batchers it reads."""

    def stats(self) -> dict:
        counts = self.catalog.stats()
        clip_index, text_index = self._clip_index(), self._text_index()
        empty = not counts.get("clips")
        return {
            **counts,
            "message": "nothing indexed yet: add videos with `vtr index FOLDER` (or POST /api/v1/index)"
            if empty
            else None,
            "model": self.model_name,
            "rerank_k": self.rerank_k,
            "rerank_available": self.can_rerank,  # the model has a matching head and rerank_k > 0
            "rerank_default": self._use_rerank(None),  # ... and its head is trained
            "ranking": ranking.for_model(self.bundle[0]).describe(),
            "text_encoder": {"queries": self.text_batcher.items, "batches": self.text_batcher.batches},
            "reranker": {"queries": self.encoder.rerank_batcher.items, "batches": self.encoder.rerank_batcher.batches},
            "clip_index": views.index_facts(clip_index),
            "text_index": views.index_facts(text_index),
            "libraries": self.catalog.libraries(),
        }

    def suggestions(self, n: int = 6) -> dict:
        """Example queries from the caption corpus (so each describes something indexed) and the model's card.

        Evenly spread over the corpus (not the first n, which would all come from one file), distinct.
        """
        from retrieval.model_card import model_card

        verified = self.home.read_examples()
        if verified:
            return {"examples": verified[:n], "verified": True, "model_card": model_card(self.model_name)}
        examples: list[str] = []
        ids = self.catalog.all_text_ids()
        if len(ids):
            picks = ids[np.unique(np.linspace(0, len(ids) - 1, num=min(len(ids), 4 * n)).astype(int))]
            for rec in self.catalog.texts_by_ids(picks.tolist()):
                text = " ".join(rec.text.split())
                if text and text not in examples and len(text) <= 120:
                    examples.append(text)
        step = max(1, len(examples) // n)
        return {"examples": examples[::step][:n], "verified": False, "model_card": model_card(self.model_name)}

    def health(self) -> dict:
        """Cheap readiness check: catalog reachable and indexes readable (no model load)."""
        counts = self.catalog.stats()
        clip_index = self._clip_index()
        return {
            "status": "ok",
            "clips": counts["clips"],
            "indexed_vectors": clip_index.ntotal if clip_index is not None else 0,
            "model_loaded": self._bundle is not None,
        }
