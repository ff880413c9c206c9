"""The search engine: queries in, ranked moments (clips) or captions out. Usable without Flask.

How a text query is answered (InternVideo2-s2's procedure, applied to an index):

1. the text is encoded (concurrent queries from server threads are batched into one forward pass);
2. FAISS returns the top candidates by embedding similarity (ITC, cosine), filtered by library,
   path prefix and video duration when asked;
3. the top ``rerank_k`` candidates are re-scored by the matching head (text tokens cross-attending to
   each clip's stored token set) and sorted by the model's head score (the fitted fusion of cosine
   and head margin its checkpoint ships, else the "match" logit; :mod:`retrieval.ranking`); when
   that fusion has a query-bank mix, each candidate's cosine is first lowered by its similarity to
   the home's caption corpus (QB-Norm, :mod:`retrieval.query_bank`), which demotes "hub" clips that
   resemble every query; candidates past ``rerank_k`` follow in ITC order;
4. the requested page (``offset``, ``k``) is cut from that ranking, optionally one entry per video
   (``group_by_video``: the best moment, with the video's other matching moments).

Video queries (an uploaded file or an indexed clip id) rank captions (video->text, re-ranked by
the same head with the roles swapped) or clips (video->video by embedding similarity; the head
scores text-video pairs only, so on request the top candidates are re-ranked by a frame-aligned
comparison of the two clips' token sets instead).

The engine is thread-safe: FAISS and the token store are read under short locks, and the index
files are re-opened when a running ``vtr index`` saves new ones (checked at most once per
``reload_interval`` seconds), so new videos become searchable without a restart.

This module keeps search and its orchestration only; the pieces live in rooms of their own:
query encoding and micro-batching (:mod:`retrieval.encoder`, :mod:`retrieval.batching`), stores
that re-open when their files change (:mod:`retrieval.live`), candidate retrieval
(:mod:`retrieval.candidates`), the ranking rule and score fields (:mod:`retrieval.ranking`),
result shapes (:mod:`retrieval.views`), request limits (:mod:`retrieval.query`), and the one write
path shared with the indexer (:mod:`retrieval.clip_writer`, :mod:`retrieval.text_corpus`). Its
``stats``, ``suggestions`` and ``health`` come from :mod:`retrieval.engine_status`, its admin writes
from :mod:`retrieval.admin`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval import candidates, ranking, views
from retrieval import rerank as rescore
from retrieval.admin import AdminWrites
from retrieval.encoder import QUERY_DECODE_SECONDS, EncodedText, EncodedVideo, QueryEncoder
from retrieval.engine_status import EngineStatus
from retrieval.errors import DecodeError, IndexMismatch, InvalidInput
from retrieval.home import DataHome
from retrieval.live import LiveIndex, LiveTokens
from retrieval.query import SearchFilters, check_page, check_target, clean_query
from retrieval.query_bank import BankCache
from retrieval.settings import resolve

__all__ = ["SearchEngine", "SearchFilters"]

log = logging.getLogger(__name__)


class SearchEngine(AdminWrites, EngineStatus):
    """Text->clips, video->texts and video->clips search over one data home.

    Arguments default to the settings (``--home``/``VTR_HOME`` ...). ``model=None`` uses
    ``VTR_MODEL`` when set, else the model recorded in the index sidecar, else the default model;
    the index refuses to open with another model (:class:`IndexMismatch`). ``bundle`` hands in an
    already loaded ``(model, preprocess, tokenizer)`` (a notebook, a test, the demo).
    """

    def __init__(
        self,
        home: str | os.PathLike | DataHome | None = None,
        *,
        db: str | None = None,
        model: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        device: str = "cpu",
        rerank_k: int | None = None,
        reload_interval: float = 1.0,
        max_text_batch: int = 64,
        bundle: tuple | None = None,
        query_timeout: float = QUERY_DECODE_SECONDS,
        min_match_probability: float | None = None,
    ):
        self.home = home if isinstance(home, DataHome) else DataHome(home)
        self.db_url = self.home.db_url(db)
        self.device = device
        self.rerank_k = max(0, int(resolve("rerank_k", rerank_k)))
        self.min_match_probability = float(resolve("min_match_probability", min_match_probability))
        self.checkpoint = resolve("checkpoint", checkpoint)
        self._model_arg = model
        self.reload_interval = float(reload_interval)
        self._clips = LiveIndex(self.home.clip_index_path, self.reload_interval)
        self._texts = LiveIndex(self.home.text_index_path, self.reload_interval)
        self._tokens = LiveTokens(self.home.tokens_dir, self.reload_interval)
        self._banks = BankCache()  # query banks (QB-Norm) of the caption and clip indexes
        self._catalog = None
        self._bundle = bundle  # (model, preprocess, tokenizer) when the caller already has them
        self._init_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self.encoder = QueryEncoder(
            lambda: self.bundle, device, max_text_batch=max_text_batch, query_timeout=query_timeout
        )

    def __repr__(self) -> str:
        return f"SearchEngine({self.home.root}, model={self.model_name!r})"

    # ------------------------------------------------------------------ resources
    @property
    def catalog(self):
        if self._catalog is None:
            with self._init_lock:
                if self._catalog is None:
                    from retrieval.catalog import open_existing

                    self._catalog = open_existing(self.db_url, self.home)
        return self._catalog

    @property
    def model_name(self) -> str | None:
        """The model queries are encoded with (see the class docstring for how it is chosen)."""
        from retrieval.factory import default_model_name

        if self._bundle is not None:
            return self._bundle[0].name
        return default_model_name(
            self._model_arg or os.environ.get("VTR_MODEL"),
            self.checkpoint,
            indexed=lambda: self._clips.peek_model() or self._texts.peek_model(),
        )

    @property
    def bundle(self):
        """(model, preprocess, tokenizer), loaded on first use."""
        if self._bundle is None:
            with self._init_lock:
                if self._bundle is None:
                    self._bundle = self._load_model()
        return self._bundle

    def _load_model(self):
        import torch

        from retrieval.factory import load_model

        t0 = time.perf_counter()
        model, preprocess, tokenizer = load_model(self.model_name, self.checkpoint, self.device)
        indexed = self._clips.peek_model()
        if indexed is not None and indexed != model.name:
            raise IndexMismatch(
                f"the index in {self.home.root} was built with model {indexed!r}, not {model.name!r}: "
                f"search with --model {indexed}, or re-index"
            )
        log.info(
            "loaded model %s in %.1fs (torch threads %d)", model.name, time.perf_counter() - t0, torch.get_num_threads()
        )
        return model, preprocess, tokenizer

    def load(self) -> SearchEngine:
        """Load everything now (the server does this before it accepts requests)."""
        _ = self.bundle
        _ = self.catalog
        self._clip_index()
        self._text_index()
        return self

    def _clip_index(self):
        return self._clips.get(model=self.model_name if self._bundle is not None else None)

    def _text_index(self):
        return self._texts.get(model=self.model_name if self._bundle is not None else None)

    @property
    def text_batcher(self):
        """The text encoder's micro-batcher (its counters show in ``stats``)."""
        return self.encoder.batcher

    @property
    def can_rerank(self) -> bool:
        model = self.bundle[0]
        return model.match_head is not None and self.rerank_k > 0

    def _use_rerank(self, rerank: bool | None) -> bool:
        model = self.bundle[0]
        if rerank is None:  # default: only a trained head helps; a random one would shuffle the top
            return self.can_rerank and bool(getattr(model, "match_head_trained", False))
        if rerank and model.match_head is None:
            raise InvalidInput(f"model {model.name!r} has no matching head; search with rerank off")
        return bool(rerank) and self.rerank_k > 0

    # ------------------------------------------------------------------ encoding
    def encode_text(self, text: str) -> EncodedText:
        """Encode one query; concurrent callers share forward passes; recent queries are cached."""
        return self.encoder.text(text)

    def embed_text(self, text: str) -> list[float]:
        """The query's embedding (normalised), e.g. for clients that search with vectors."""
        return self.encoder.text(clean_query(text)).vector.tolist()

    def _clip_candidates(self, query: np.ndarray, need: int, filters: SearchFilters | None, group: bool) -> list:
        catalog = self.catalog  # a home without a catalog is an error, not an empty result
        allowed = candidates.allowed_ids(catalog, filters)
        return candidates.clip_candidates(
            catalog, self._clip_index(), query, need, allowed, group, self._tokens.vectors
        )

    # ------------------------------------------------------------------ public search API
    def search_text(
        self,
        query: str,
        *,
        k: int = 20,
        offset: int = 0,
        rerank: bool | None = None,
        filters: SearchFilters | None = None,
        group_by_video: bool = False,
    ) -> dict:
        """Clips for a text query; see the module docstring for the ranking."""
        t0 = time.perf_counter()
        query = clean_query(query)
        k, offset = check_page(k, offset)
        use_rerank = self._use_rerank(rerank)
        enc = self.encode_text(query)
        r = self.rerank_k if use_rerank else 0
        # ungrouped: ids and scores are enough to rank, and only the page's records are read
        by_id = not group_by_video and r > offset + k
        need = max(offset + k, r)
        if by_id:
            allowed = candidates.allowed_ids(self.catalog, filters)
            cands = candidates.clip_candidate_ids(self._clip_index(), enc.vector, need, allowed, self._tokens.vectors)
        else:
            cands = self._clip_candidates(enc.vector, need, filters, group_by_video)
        ranker = ranking.for_model(self.bundle[0])
        head = [c.id for c, _ in cands[:r]]
        sims = {}
        if head and ranker.uses_bank:  # the caption corpus is the bank of text queries
            bank = self._banks.get("texts", self._text_index())
            sims = rescore.bank_similarities(bank, head, self._tokens.vectors, ranker.params.bank.beta)
        if head and ranker.head_unused and all(i in sims for i in head):
            logits = ranking.bank_only(sims)  # the fitted mix gives the head no weight: skip its pass
        else:
            logits = rescore.clips_for_text(self.encoder, self._tokens, enc, cands[:r]) if r else {}
            logits = ranking.with_bank(logits, sims)
        ordered = ranker.order(cands, lambda c: c.id, logits, r)
        if by_id:
            page = candidates.with_records(self.catalog, ordered, offset + k)
            if page is None:  # clips deleted since the index was loaded: rank with records, as grouping does
                cands = self._clip_candidates(enc.vector, need, filters, False)
                present = {c.id for c, _ in cands}
                logits = {i: lg for i, lg in logits.items() if i in present}
                page = ranker.order(cands, lambda c: c.id, logits, r)
            ordered = page
        results = views.page_clips(ordered, offset, k, group_by_video, ranker)
        relevance = (views.best_probability(ordered, ranker), self.min_match_probability)
        return views.envelope(query, "clips", t0, offset, k, len(logits), results, relevance)

    def search(self, query: str, **options) -> dict:
        """Alias of :meth:`search_text`: the common case has the short name."""
        return self.search_text(query, **options)

    def search_video(
        self,
        *,
        path: str | os.PathLike | None = None,
        clip_id: int | None = None,
        target: str = "clips",
        k: int = 20,
        offset: int = 0,
        rerank: bool | None = None,
        filters: SearchFilters | None = None,
        group_by_video: bool = False,
        display_name: str | None = None,
    ) -> dict:
        """Captions (``target="texts"``) or clips (``"clips"``) for a video file or an indexed clip."""
        t0 = time.perf_counter()
        if (path is None) == (clip_id is None):
            raise InvalidInput("give exactly one of a video file or a clip id")
        check_target(target)
        k, offset = check_page(k, offset)
        # video->clips has no head score (the head scores text-video pairs): its re-rank compares
        # token sets instead, and runs only when asked for
        use_rerank = self._use_rerank(rerank) if target == "texts" else bool(rerank) and self.rerank_k > 0
        if path is not None:
            try:
                enc = self.encoder.file(path)
            except DecodeError as exc:  # name the file the user sent, not the server's temporary copy
                if display_name:
                    exc.message = exc.message.replace(Path(path).name, display_name)
                    exc.args = (exc.message,)
                raise
            query: dict = {"file": display_name or Path(path).name}
        else:
            self.catalog.get_clip(int(clip_id))  # NotFound for an unknown id
            enc = self.encoder.stored_clip(int(clip_id), self._tokens)
            query = {"clip_id": int(clip_id)}
        best = None  # video->clips has no probability: its scores are token-set similarities
        if target == "texts":
            results, reranked, best = self._texts_for_video(enc, k, offset, use_rerank)
        else:
            r = self.rerank_k if use_rerank and enc.tokens is not None else 0
            cands = self._clip_candidates(enc.vector, max(offset + k, r), filters, group_by_video)
            scores = rescore.clips_for_video(self._tokens, enc, cands[:r]) if r else {}
            ordered = ranking.PLAIN.order(cands, lambda c: c.id, scores, r)
            results, reranked = views.page_clips(ordered, offset, k, group_by_video, ranking.PLAIN), len(scores)
        return views.envelope(query, target, t0, offset, k, reranked, results, (best, self.min_match_probability))

    def _texts_for_video(
        self, enc: EncodedVideo, k: int, offset: int, use_rerank: bool
    ) -> tuple[list[dict], int, float | None]:
        catalog = self.catalog
        index = self._text_index()
        if index is None or index.ntotal == 0:
            return [], 0, None
        r = self.rerank_k if use_rerank and enc.tokens is not None else 0
        cands = candidates.text_candidates(catalog, index, enc.vector, max(offset + k, r))
        ranker = ranking.for_model(self.bundle[0])
        bank = None
        if r and ranker.uses_bank:  # the indexed clips are the bank of video queries
            bank = self._banks.get("clips", self._clip_index(), lambda ids: self._tokens.vectors(ids)[0])
        skip_head = bank is not None and ranker.head_unused  # the fitted mix gives the head no weight
        logits, caption_vectors = (
            rescore.texts_for_video(self.encoder, enc, cands[:r], head=not skip_head) if r else ({}, {})
        )
        if bank is not None and logits:
            captions = lambda ids: (np.stack([caption_vectors[i] for i in ids]), ids)  # noqa: E731
            logits = ranking.with_bank(
                logits, rescore.bank_similarities(bank, list(logits), captions, ranker.params.bank.beta)
            )
        ordered = ranker.order(cands, lambda t: t.id, logits, r)
        return views.page_texts(ordered, offset, k, ranker), len(logits), views.best_probability(ordered, ranker)

    def search_embedding(self, vector: Sequence[float], *, target: str = "clips", k: int = 20) -> dict:
        """Nearest clips or captions to a vector in the model's space (no re-ranking: there are no tokens)."""
        t0 = time.perf_counter()
        check_target(target)
        k, _ = check_page(k, 0)
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        index = self._clip_index() if target == "clips" else self._text_index()
        dim = index.dim if index is not None else None
        if dim is not None and len(v) != dim:
            raise InvalidInput(f"the vector has {len(v)} numbers; this index needs {dim}")
        if not np.isfinite(v).all() or not np.linalg.norm(v) > 0:
            raise InvalidInput("the vector must be finite and non-zero")
        v = v / np.linalg.norm(v)
        if target == "clips":
            cands = self._clip_candidates(v, k, None, False)
            ranker = ranking.for_model(self.bundle[0])
            results = views.page_clips([(c, s, None) for c, s in cands], 0, k, False, ranker)
        else:
            results, _, _ = self._texts_for_video(EncodedVideo(v, None), k, 0, False)
        return views.envelope({"vector": len(v)}, target, t0, 0, k, 0, results)

    # ------------------------------------------------------------------ catalog views
    def get_clip(self, clip_id: int) -> dict:
        return views.clip_view(self.catalog.get_clip(clip_id))

    def get_clips(self, clip_ids: Sequence[int]) -> dict[int, dict]:
        return {rec.id: views.clip_view(rec) for rec in self.catalog.clips_by_ids(clip_ids)}

    def get_video(self, video_id: int) -> dict:
        return views.video_view(self.catalog.get_video(video_id), self.catalog.clips_of_video(video_id))

    # ------------------------------------------------------------------ media
    def video_file(self, video_id: int) -> Path:
        """The file of an indexed video (from the catalog only), or NotFound."""
        return self.catalog.indexed_video_file(video_id)

    def thumbnail_file(self, clip_id: int) -> Path:
        """The clip's JPEG thumbnail; made from the video on first request when the indexer did not."""
        from retrieval.thumbnails import thumbnail_file

        return thumbnail_file(self.home, self.catalog.get_clip(clip_id))

    def filmstrip_file(self, clip_id: int) -> Path:
        """The clip's filmstrip (its sampled frames side by side); made on first request when missing."""
        from retrieval.thumbnails import filmstrip_file

        frames = self.bundle[0].config.vision.num_frames if self._bundle is not None else 8
        return filmstrip_file(self.home, self.catalog.get_clip(clip_id), frames)

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()
