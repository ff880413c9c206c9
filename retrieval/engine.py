"""The search engine: queries in, ranked moments (clips) or captions out. Usable without Flask.

How a text query is answered (InternVideo2-s2's procedure, applied to an index):

1. the text is encoded (concurrent queries from server threads are batched into one forward pass);
2. FAISS returns the top candidates by embedding similarity (ITC, cosine), filtered by library,
   path prefix and video duration when asked;
3. the top ``rerank_k`` candidates are re-scored by the matching head (text tokens cross-attending to
   each clip's stored token set) and sorted by its "match" logit; candidates past ``rerank_k``
   follow in ITC order;
4. the requested page (``offset``, ``k``) is cut from that ranking, optionally one entry per video
   (``group_by_video``: the best moment, with the video's other matching moments).

Video queries (an uploaded file or an indexed clip id) rank captions (video->text, re-ranked by
the same head with the roles swapped) or clips (video->video by embedding similarity; the head
scores text-video pairs only, so on request the top candidates are re-ranked by a frame-aligned
comparison of the two clips' token sets instead).

The engine is thread-safe: FAISS and the token store are read under short locks, and the index
files are re-opened when a running ``vtr index`` saves new ones (checked at most once per
``reload_interval`` seconds), so new videos become searchable without a restart.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import DecodeError, IndexMismatch, InvalidInput, NotFound, StoreError
from retrieval.home import DataHome
from retrieval.settings import resolve

log = logging.getLogger(__name__)

TARGETS = ("clips", "texts")
MAX_K = 1000
MAX_MOMENTS = 20  # other moments listed per video with group_by_video
MAX_CANDIDATES = 20_000  # most clips one query ranks (deep pages of grouped results stop there)
MAX_QUERY_PIXELS = 8192 * 4320  # refuse frames larger than 8K (a decompression bomb in 64 MiB is easy)
# seconds a query video may take to decode: 64 MiB of near-empty frames decodes for many minutes
QUERY_DECODE_SECONDS = 30.0
_EXACT_FILTER_MAX = 50_000  # filtered search scores up to this many allowed clips exactly


@dataclass(frozen=True)
class SearchFilters:
    """Restrict clip results to some videos. ``library`` is a library id or its root path."""

    library: str | None = None
    path_prefix: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.library, self.path_prefix, self.min_duration, self.max_duration))


@dataclass
class _EncodedText:
    vector: np.ndarray  # float32 [D], L2-normalised
    tokens: Any  # torch float [L, Wt]: the text tower's final states (matching-head input)
    ids: Any  # torch long [L]


@dataclass
class _EncodedVideo:
    vector: np.ndarray  # float32 [D], L2-normalised
    tokens: Any | None  # torch float [N, Wv] or None when the clip has no stored token set


# ---------------------------------------------------------------------------------------------
# batching concurrent work


class _Slot:
    __slots__ = ("item", "event", "result", "error", "lead", "done")

    def __init__(self, item):
        self.item = item
        self.event = threading.Event()
        self.result = None
        self.error: BaseException | None = None
        self.lead = False
        self.done = False


class MicroBatcher:
    """Turns concurrent single calls into batched calls of ``fn(list) -> list``.

    Why: one text forward pass over 8 queries costs little more than over one, and a server with
    N threads otherwise runs N small passes that fight over the same cores. No background thread:
    the first caller leads and runs a batch containing everything queued; callers arriving while it
    runs queue up, and when the batch ends the oldest waiting caller leads the next one.
    """

    def __init__(self, fn: Callable[[list], list], max_batch: int = 64):
        self.fn = fn
        self.max_batch = max(1, int(max_batch))
        self._lock = threading.Lock()
        self._pending: list[_Slot] = []
        self._running = False
        self.batches = 0  # how many batches ran (for tests and benchmarks)
        self.items = 0

    def __call__(self, item):
        slot = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            if not self._running:
                self._running = True
                slot.lead = True
        if not slot.lead:
            slot.event.wait()
        if not slot.done:  # asked to lead
            self._run_batch()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _run_batch(self) -> None:
        with self._lock:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        try:
            results = self.fn([s.item for s in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} items")
            for s, r in zip(batch, results, strict=True):
                s.result = r
        except BaseException as exc:  # every waiter gets the error instead of hanging
            for s in batch:
                s.error = exc
        with self._lock:
            self.batches += 1
            self.items += len(batch)
            for s in batch:
                s.done = True
                s.event.set()
            if self._pending:
                nxt = self._pending[0]
                nxt.lead = True
                nxt.event.set()
            else:
                self._running = False


# ---------------------------------------------------------------------------------------------
# index files that change under us


def _file_signature(*paths: Path) -> tuple:
    sig = []
    for p in paths:
        try:
            st = p.stat()
            sig.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            sig.append(None)
    return tuple(sig)


class _LiveIndex:
    """A VectorIndex re-opened whenever its file or sidecar changes on disk (atomic saves)."""

    def __init__(self, path: Path, interval: float):
        self.path = path
        self.interval = interval
        self._lock = threading.Lock()
        self._index = None
        self._sig: tuple | None = None
        self._checked = 0.0

    def _paths(self) -> tuple[Path, Path]:
        from retrieval.index import sidecar_path

        return self.path, sidecar_path(self.path)

    def get(self, model: str | None = None):
        """The current index, or None when there is none yet."""
        now = time.monotonic()
        if self._sig is not None and now - self._checked < self.interval:
            return self._index
        with self._lock:
            if self._sig is not None and time.monotonic() - self._checked < self.interval:
                return self._index
            sig = _file_signature(*self._paths())
            if sig != self._sig:
                self._index = self._load(model) if sig[0] is not None and sig[1] is not None else None
                self._sig = sig
            self._checked = time.monotonic()
            return self._index

    def _load(self, model: str | None):
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

    def replace(self, index) -> None:
        """Install an index this process just saved (so it does not wait for the next check)."""
        with self._lock:
            self._index = index
            self._sig = _file_signature(*self._paths())
            self._checked = time.monotonic()

    def invalidate(self) -> None:
        with self._lock:
            self._sig = None
            self._checked = 0.0

    def peek_model(self) -> str | None:
        from retrieval.index import read_sidecar

        try:
            meta = read_sidecar(self.path)
        except StoreError:
            return None
        return meta.get("model") if meta else None


# ---------------------------------------------------------------------------------------------


class SearchEngine:
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
    ):
        self.home = home if isinstance(home, DataHome) else DataHome(home)
        self.db_url = self.home.db_url(db)
        self.device = device
        self.rerank_k = max(0, int(resolve("rerank_k", rerank_k)))
        self.checkpoint = resolve("checkpoint", checkpoint)
        self._model_arg = model
        self.reload_interval = float(reload_interval)
        self.query_timeout = float(query_timeout)
        self._clips = _LiveIndex(self.home.clip_index_path, self.reload_interval)
        self._texts = _LiveIndex(self.home.text_index_path, self.reload_interval)
        self._catalog = None
        self._bundle = bundle  # (model, preprocess, tokenizer) when the caller already has them
        self._tokens = None
        self._tokens_sig: tuple | None = None
        self._tokens_checked = 0.0
        self._init_lock = threading.Lock()
        self._tokens_lock = threading.RLock()
        self._write_lock = threading.Lock()
        self._cache: OrderedDict[str, _EncodedText] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_size = 512
        self.text_batcher = MicroBatcher(self._encode_text_batch, max_text_batch)

    def __repr__(self) -> str:
        return f"SearchEngine({self.home.root}, model={self.model_name!r})"

    # ------------------------------------------------------------------ resources
    @property
    def catalog(self):
        if self._catalog is None:
            with self._init_lock:
                if self._catalog is None:
                    from retrieval.catalog import Catalog, sqlite_file_missing

                    if sqlite_file_missing(self.db_url):  # opening it would leave an empty file behind
                        default_sqlite = self.db_url == f"sqlite:///{self.home.catalog_path}"
                        where = self.home.root if default_sqlite else self.db_url
                        raise StoreError(
                            f"no catalog in {where}: index some videos first (`vtr index FOLDER "
                            f"--home {self.home.root}`), or try `vtr demo`"
                        )
                    self._catalog = Catalog(self.db_url, create=False)
        return self._catalog

    @property
    def model_name(self) -> str | None:
        """The model queries are encoded with (see the class docstring for how it is chosen)."""
        if self._bundle is not None:
            return self._bundle[0].name
        if self._model_arg:
            return self._model_arg
        env = os.environ.get("VTR_MODEL")
        if env:
            return env
        if self.checkpoint and str(self.checkpoint).endswith(".safetensors"):
            return None  # the checkpoint names its own architecture
        return self._clips.peek_model() or self._texts.peek_model() or resolve("model")

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

        from retrieval.factory import create_model_and_transforms

        name = self.model_name
        t0 = time.perf_counter()
        # Seeded like the indexer's loader, so a model without shipped weights (the test model)
        # embeds queries with the same random weights that embedded the library.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model, preprocess, tokenizer = create_model_and_transforms(
                name, pretrained=self.checkpoint, device=self.device
            )
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
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
        return self._clips.get(self.model_name if self._bundle is not None else None)

    def _text_index(self):
        return self._texts.get(self.model_name if self._bundle is not None else None)

    def _token_store(self):
        """The token store, refreshed when the indexer appended to it (None if there is none)."""
        from retrieval.token_store import TokenStore

        meta = self.home.tokens_dir / "meta.json"
        now = time.monotonic()
        with self._tokens_lock:
            if self._tokens is not None and now - self._tokens_checked < self.reload_interval:
                return self._tokens
            self._tokens_checked = now
            shards = sorted(self.home.tokens_dir.glob("*.ids")) if self.home.tokens_dir.is_dir() else []
            sig = _file_signature(meta, *shards)
            if sig == self._tokens_sig and self._tokens is not None:
                return self._tokens
            if not meta.exists():
                self._tokens, self._tokens_sig = None, sig
                return None
            try:
                if self._tokens is None:
                    self._tokens = TokenStore(self.home.tokens_dir, readonly=True)
                else:
                    self._tokens.refresh()
            except (OSError, ValueError, KeyError) as exc:
                log.warning("token store unreadable (re-ranking off until it is): %s", exc)
                self._tokens = None
            self._tokens_sig = sig
            return self._tokens

    def _clip_tokens(self, ids: Sequence[int]) -> tuple[np.ndarray | None, np.ndarray]:
        """(fp16 token sets of the ids that have one, mask of which do)."""
        ids = np.asarray(ids, dtype=np.int64)
        with self._tokens_lock:
            store = self._token_store()
            if store is None or len(ids) == 0:
                return None, np.zeros(len(ids), bool)
            mask = store.contains(ids)
            if not mask.any():
                return None, mask
            return np.asarray(store.get_tokens(ids[mask])), mask

    def _clip_vectors(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(exact stored embeddings of the ids that have one, those ids)."""
        with self._tokens_lock:
            store = self._token_store()
            if store is None or len(ids) == 0:
                return np.empty((0, 0), np.float32), np.empty(0, np.int64)
            have = ids[store.contains(ids)]
            return np.asarray(store.get_vectors(have), dtype=np.float32), have

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
    def _encode_text_batch(self, texts: list[str]) -> list[_EncodedText]:
        import torch

        model, _, tokenizer = self.bundle
        ids = tokenizer(texts)
        with torch.inference_mode():
            emb, states = model.encode_text(ids.to(self.device), normalize=True, return_tokens=True)
        emb = emb.float().cpu().numpy()
        states = states.float().cpu()
        return [_EncodedText(emb[i], states[i], ids[i]) for i in range(len(texts))]

    def encode_text(self, text: str) -> _EncodedText:
        """Encode one query; concurrent callers share forward passes; recent queries are cached."""
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        enc = self.text_batcher(text)
        with self._cache_lock:
            self._cache[text] = enc
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return enc

    def embed_text(self, text: str) -> list[float]:
        """The query's embedding (normalised), e.g. for clients that search with vectors."""
        return self.encode_text(_clean_query(text)).vector.tolist()

    def _encode_file(self, path: str | os.PathLike) -> _EncodedVideo:
        import torch

        from retrieval.decode import probe, read_frames
        from retrieval.frames import middle_indices

        model, preprocess, _ = self.bundle
        deadline = time.monotonic() + self.query_timeout
        info = probe(path, deadline=deadline, self_contained=True)  # an upload may be a hostile playlist
        if info.width * info.height > MAX_QUERY_PIXELS:
            raise InvalidInput(f"the query video is {info.width}x{info.height}; frames up to 8K are accepted")
        indices = middle_indices(max(1, info.num_frames), model.num_frames)
        frames = read_frames(path, indices, deadline=deadline, self_contained=True)
        pixels = preprocess(frames)[None].to(self.device)
        with torch.inference_mode():
            emb, tokens = model.encode_video(pixels, normalize=True, return_tokens=True)
        return _EncodedVideo(emb[0].float().cpu().numpy(), tokens[0].float().cpu())

    def _encode_clip(self, clip_id: int) -> _EncodedVideo:
        import torch

        self.catalog.get_clip(clip_id)  # NotFound for an unknown id
        vecs, have = self._clip_vectors(np.asarray([clip_id], np.int64))
        if len(have) == 0:
            raise NotFound(f"clip {clip_id} has no stored embedding yet (is `vtr index` still writing it?)")
        tokens, mask = self._clip_tokens([clip_id])
        tok = torch.from_numpy(tokens[0].astype(np.float32)) if tokens is not None and mask[0] else None
        v = vecs[0]
        return _EncodedVideo(v / max(float(np.linalg.norm(v)), 1e-12), tok)

    # ------------------------------------------------------------------ candidate retrieval
    def _allowed_ids(self, filters: SearchFilters | None) -> np.ndarray | None:
        if filters is None or not filters.active:
            return None
        root = None
        if filters.library is not None:
            lib = str(filters.library).strip()
            libs = self.catalog.libraries()
            match = [x for x in libs if str(x["id"]) == lib or x["root"] == lib or x["root"] == lib.rstrip("/")]
            if not match:
                raise NotFound(f"no library {lib!r}; libraries: " + ", ".join(f"{x['id']}={x['root']}" for x in libs))
            root = match[0]["root"]
        return self.catalog.clip_ids(
            root=root,
            path_prefix=filters.path_prefix,
            min_duration=filters.min_duration,
            max_duration=filters.max_duration,
        )

    def _itc(
        self, index, query: np.ndarray, fetch: int, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, bool]:
        """Top ``fetch`` (scores, ids) by embedding similarity among ``allowed``; and whether that is all there is."""
        q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
        total = index.ntotal
        if allowed is not None:
            if len(allowed) == 0:
                return np.empty(0, np.float32), np.empty(0, np.int64), True
            if len(allowed) <= _EXACT_FILTER_MAX or len(allowed) * 8 <= total:
                vecs, have = self._clip_vectors(allowed)
                if len(have) > 0:  # exact scores from the stored embeddings
                    scores = vecs @ q[0]
                    order = np.lexsort((have, -scores))[:fetch]
                    return scores[order].astype(np.float32), have[order], fetch >= len(have)
        f = min(max(fetch, 1), total)
        while True:
            scores, ids = index.search(q, f)
            scores, ids = scores[0], ids[0]
            keep = ids >= 0
            if allowed is not None:
                keep &= np.isin(ids, allowed)
            scores, ids = scores[keep], ids[keep]
            if len(ids) >= fetch or f >= total:
                return scores[:fetch], ids[:fetch], f >= total
            f = min(total, f * 4)

    def _clip_candidates(
        self, query: np.ndarray, need: int, allowed: np.ndarray | None, group: bool
    ) -> list[tuple[Any, float]]:
        """ITC-ordered (ClipRecord, itc score) with at least ``need`` entries (videos, if grouping) when there are."""
        catalog = self.catalog  # a home without a catalog is an error, not an empty result
        index = self._clip_index()
        if index is None or index.ntotal == 0:
            return []
        fetch = min(max(need, 1), MAX_CANDIDATES)
        while True:
            scores, ids, exhausted = self._itc(index, query, fetch, allowed)
            records = catalog.clips_by_ids(ids.tolist())  # drops vectors of clips deleted since
            by_id = dict(zip(ids.tolist(), scores.tolist(), strict=True))
            cands = [(r, by_id[r.id]) for r in records]
            have = len({r.video_id for r, _ in cands}) if group else len(cands)
            if have >= need or exhausted or fetch >= min(index.ntotal, MAX_CANDIDATES):
                return cands
            fetch = min(index.ntotal, MAX_CANDIDATES, fetch * 2 + 16)

    # ------------------------------------------------------------------ re-ranking
    def _match_logits(self, text_tokens, text_ids, video_tokens) -> np.ndarray:
        """[n,2] logits for n (text, video) pairs, in chunks; padding columns past the longest text dropped."""
        import torch

        model = self.bundle[0]
        length = int(text_ids.argmax(dim=1).max()) + 1
        out = []
        with torch.inference_mode():
            for i in range(0, len(text_ids), 256):
                sl = slice(i, i + 256)
                logits = model.match_logits(
                    text_tokens[sl, :length].to(self.device),
                    text_ids[sl, :length].to(self.device),
                    video_tokens[sl].to(self.device),
                )
                out.append(logits.float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, 2), np.float32)

    def _rerank_clips_for_text(self, enc: _EncodedText, cands: list[tuple[Any, float]]) -> dict[int, np.ndarray]:
        """clip id -> [2] logits for the candidates that have a stored token set."""
        import torch

        if not cands:
            return {}
        ids = [r.id for r, _ in cands]
        tokens, mask = self._clip_tokens(ids)
        if tokens is None:
            return {}
        n = int(mask.sum())
        video = torch.from_numpy(tokens.astype(np.float32))
        logits = self._match_logits(enc.tokens[None].expand(n, -1, -1), enc.ids[None].expand(n, -1), video)
        have = [i for i, m in zip(ids, mask.tolist(), strict=True) if m]
        return dict(zip(have, logits, strict=True))

    def _rerank_clips_for_video(self, enc: _EncodedVideo, cands: list[tuple[Any, float]]) -> dict[int, np.ndarray]:
        """clip id -> [0, score]: frame-aligned cosine of the query's and the clip's token sets.

        The token set is what the matching head reads (class token + one pooled token per frame);
        comparing it token by token, frame i with frame i, adds the temporal alignment that one
        pooled embedding loses (the same action in the same order scores higher). A clip compared
        with itself scores exactly 1.
        """
        import torch

        if not cands or enc.tokens is None:
            return {}
        ids = [r.id for r, _ in cands]
        tokens, mask = self._clip_tokens(ids)
        if tokens is None:
            return {}
        q = torch.nn.functional.normalize(enc.tokens.float(), dim=-1)
        c = torch.nn.functional.normalize(torch.from_numpy(tokens.astype(np.float32)), dim=-1)
        if c.shape[1:] != q.shape:
            return {}
        sim = (c * q[None]).sum(-1).mean(-1).numpy()
        have = [i for i, m in zip(ids, mask.tolist(), strict=True) if m]
        return {i: np.array([0.0, float(x)], np.float32) for i, x in zip(have, sim, strict=True)}

    @staticmethod
    def _order(
        cands: list[tuple[Any, float]], key: Callable[[Any], int], logits: dict[int, np.ndarray], rerank_k: int
    ) -> list[tuple[Any, float, np.ndarray | None]]:
        """Re-ranked head (by match logit, ties by ITC order) followed by the rest in ITC order."""
        head = [(c, s, logits[key(c)]) for c, s in cands[:rerank_k] if key(c) in logits]
        head.sort(key=lambda t: -float(t[2][1]))  # stable: equal logits keep ITC order
        scored = {key(c) for c, _, _ in head}
        tail = [(c, s, None) for c, s in cands if key(c) not in scored]
        return head + tail

    # ------------------------------------------------------------------ results
    @staticmethod
    def _scores(itc: float, logits: np.ndarray | None, rank: int) -> dict:
        """The score fields every hit carries: ranked by the match logit when re-ranked, else by ITC."""
        match = None if logits is None else float(logits[1])
        return {
            "score": float(itc) if match is None else match,
            "itc_score": float(itc),
            "match_score": match,
            "reranked": logits is not None,
            "rank": rank,
        }

    @classmethod
    def _clip_hit(cls, rec, itc: float, logits: np.ndarray | None, rank: int) -> dict:
        return {
            "clip_id": int(rec.id),
            "video_id": int(rec.video_id),
            "video_path": rec.path,
            "start": round(float(rec.start), 3),
            "end": round(float(rec.end), 3),
            **cls._scores(itc, logits, rank),
        }

    def _page_clips(self, ordered, offset: int, k: int, group: bool) -> list[dict]:
        hits = [self._clip_hit(rec, itc, lg, i + 1) for i, (rec, itc, lg) in enumerate(ordered)]
        if not group:
            return hits[offset : offset + k]
        groups: OrderedDict[int, dict] = OrderedDict()
        for h in hits:
            g = groups.get(h["video_id"])
            if g is None:
                groups[h["video_id"]] = {**h, "rank": len(groups) + 1, "moments": []}
            elif len(g["moments"]) < MAX_MOMENTS:
                g["moments"].append(h)
        return list(groups.values())[offset : offset + k]

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
        query = _clean_query(query)
        k, offset = _check_page(k, offset)
        use_rerank = self._use_rerank(rerank)
        enc = self.encode_text(query)
        allowed = self._allowed_ids(filters)
        r = self.rerank_k if use_rerank else 0
        cands = self._clip_candidates(enc.vector, max(offset + k, r), allowed, group_by_video)
        logits = self._rerank_clips_for_text(enc, cands[:r]) if r else {}
        ordered = self._order(cands, lambda c: c.id, logits, r)
        return {
            "query": query,
            "target": "clips",
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
            "offset": offset,
            "k": k,
            "reranked": len(logits),
            "results": self._page_clips(ordered, offset, k, group_by_video),
        }

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
        if target not in TARGETS:
            raise InvalidInput(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
        k, offset = _check_page(k, offset)
        # video->clips has no head score (the head scores text-video pairs): its re-rank compares
        # token sets instead, and runs only when asked for
        use_rerank = self._use_rerank(rerank) if target == "texts" else bool(rerank) and self.rerank_k > 0
        if path is not None:
            try:
                enc = self._encode_file(path)
            except DecodeError as exc:  # name the file the user sent, not the server's temporary copy
                if display_name:
                    exc.message = exc.message.replace(Path(path).name, display_name)
                    exc.args = (exc.message,)
                raise
            query: dict = {"file": display_name or Path(path).name}
        else:
            enc = self._encode_clip(int(clip_id))
            query = {"clip_id": int(clip_id)}
        if target == "texts":
            results, reranked = self._texts_for_video(enc, k, offset, use_rerank)
        else:
            allowed = self._allowed_ids(filters)
            r = self.rerank_k if use_rerank and enc.tokens is not None else 0
            cands = self._clip_candidates(enc.vector, max(offset + k, r), allowed, group_by_video)
            scores = self._rerank_clips_for_video(enc, cands[:r]) if r else {}
            ordered = self._order(cands, lambda c: c.id, scores, r)
            results, reranked = self._page_clips(ordered, offset, k, group_by_video), len(scores)
        return {
            "query": query,
            "target": target,
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
            "offset": offset,
            "k": k,
            "reranked": reranked,
            "results": results,
        }

    def _texts_for_video(self, enc: _EncodedVideo, k: int, offset: int, use_rerank: bool) -> tuple[list[dict], int]:
        import torch

        catalog = self.catalog
        index = self._text_index()
        if index is None or index.ntotal == 0:
            return [], 0
        r = self.rerank_k if use_rerank and enc.tokens is not None else 0
        fetch = max(offset + k, r)
        scores, ids, _ = self._itc(index, enc.vector, fetch, None)
        records = catalog.texts_by_ids(ids.tolist())
        by_id = dict(zip(ids.tolist(), scores.tolist(), strict=True))
        cands = [(t, by_id[t.id]) for t in records]
        logits: dict[int, np.ndarray] = {}
        if r and cands:
            model, _, tokenizer = self.bundle
            head = cands[:r]
            tids = tokenizer([t.text for t, _ in head])
            with torch.inference_mode():
                _, states = model.encode_text(tids.to(self.device), normalize=True, return_tokens=True)
            video = enc.tokens[None].expand(len(head), -1, -1)
            lg = self._match_logits(states.float().cpu(), tids, video)
            logits = {t.id: lg[i] for i, (t, _) in enumerate(head)}
        ordered = self._order(cands, lambda t: t.id, logits, r)
        hits = [
            {"text_id": int(t.id), "text": t.text, "source": t.source, **self._scores(itc, lg, i)}
            for i, (t, itc, lg) in enumerate(ordered[offset : offset + k], start=offset + 1)
        ]
        return hits, len(logits)

    def search_embedding(self, vector: Sequence[float], *, target: str = "clips", k: int = 20) -> dict:
        """Nearest clips or captions to a vector in the model's space (no re-ranking: there are no tokens)."""
        t0 = time.perf_counter()
        if target not in TARGETS:
            raise InvalidInput(f"target must be one of {', '.join(TARGETS)}, not {target!r}")
        k, _ = _check_page(k, 0)
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
            results = self._page_clips([(c, s, None) for c, s in cands], 0, k, False)
        else:
            results, _ = self._texts_for_video(_EncodedVideo(v, None), k, 0, False)
        return {
            "query": {"vector": len(v)},
            "target": target,
            "took_ms": round((time.perf_counter() - t0) * 1000, 2),
            "offset": 0,
            "k": k,
            "reranked": 0,
            "results": results,
        }

    # ------------------------------------------------------------------ catalog views
    @staticmethod
    def _clip_view(rec) -> dict:
        return {
            "clip_id": int(rec.id),
            "video_id": int(rec.video_id),
            "video_path": rec.path,
            "library": rec.root,
            "index": int(rec.idx),
            "start": round(float(rec.start), 3),
            "end": round(float(rec.end), 3),
            "video_duration": rec.duration,
        }

    def get_clip(self, clip_id: int) -> dict:
        return self._clip_view(self.catalog.get_clip(clip_id))

    def get_clips(self, clip_ids: Sequence[int]) -> dict[int, dict]:
        return {rec.id: self._clip_view(rec) for rec in self.catalog.clips_by_ids(clip_ids)}

    def get_video(self, video_id: int) -> dict:
        v = self.catalog.get_video(video_id)
        clips = self.catalog.clips_of_video(video_id)
        return {
            "video_id": v.id,
            "path": v.path,
            "name": os.path.basename(v.path),
            "library": v.root,
            "status": v.status,
            "warning": v.error if v.status == "indexed" else None,
            "error": v.error if v.status != "indexed" else None,
            "duration": v.duration,
            "fps": v.fps,
            "width": v.width,
            "height": v.height,
            "codec": v.codec,
            "size": v.size,
            "model": v.model,
            "clips": [self._clip_view(c) for c in clips],
        }

    def stats(self) -> dict:
        counts = self.catalog.stats()
        clip_index, text_index = self._clip_index(), self._text_index()
        return {
            **counts,
            "model": self.model_name,
            "rerank_k": self.rerank_k,
            "rerank_available": self.can_rerank,  # the model has a matching head and rerank_k > 0
            "rerank_default": self._use_rerank(None),  # ... and its head is trained
            "text_encoder": {"queries": self.text_batcher.items, "batches": self.text_batcher.batches},
            "clip_index": _index_facts(clip_index),
            "text_index": _index_facts(text_index),
            "libraries": self.catalog.libraries(),
        }

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

    # ------------------------------------------------------------------ media
    def video_file(self, video_id: int) -> Path:
        """The file of an indexed video (from the catalog only), or NotFound."""
        v = self.catalog.get_video(video_id)
        if v.status != "indexed":  # a file that failed to index may be anything (a text renamed .mp4)
            raise NotFound(f"video {video_id} was not indexed ({v.error or v.status}); its file is not served")
        p = Path(v.path)
        if not p.is_file():
            raise NotFound(f"the file of video {video_id} is no longer at its indexed path")
        return p

    def thumbnail_file(self, clip_id: int) -> Path:
        """The clip's JPEG thumbnail; made from the video on first request when the indexer did not."""
        rec = self.catalog.get_clip(clip_id)
        path = self.home.thumbnail_path(rec.id)
        if path.is_file():
            return path
        return self._make_thumbnail(rec, path)

    def _make_thumbnail(self, rec, path: Path) -> Path:
        from PIL import Image

        from retrieval.decode import read_frames

        src = Path(rec.path)
        if not src.is_file():
            raise NotFound(f"no thumbnail for clip {rec.id}: its video file is gone")
        mid = max(0, (int(rec.start_frame) + int(rec.end_frame) - 1) // 2)
        try:
            frame = read_frames(src, [mid])[0]
        except DecodeError as exc:
            raise NotFound(f"no thumbnail for clip {rec.id}: {exc.message}") from exc
        img = Image.fromarray(frame)
        size = int(resolve("thumbnail_size")) or 320
        img.thumbnail((size, size))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        img.save(tmp, format="JPEG", quality=85)
        os.replace(tmp, path)
        return path

    # ------------------------------------------------------------------ admin writes
    def _locked_home(self):
        """Hold the indexer's lock while this process rewrites index files (one writer at a time)."""
        return _HomeLock(self.home.lock_path)

    def add_texts(self, texts: Sequence[str], source: str | None = None) -> list[int]:
        """Add captions to the corpus video->text search ranks; returns their ids (existing ones reused)."""
        import torch

        from retrieval.index import VectorIndex

        clean = [_clean_query(t) for t in texts]
        if not clean:
            return []
        model, _, tokenizer = self.bundle
        with self._write_lock, self._locked_home():
            new_ids, all_ids = self.catalog.add_texts(clean, source=source)
            if new_ids:
                new_set = set(new_ids)
                todo = [(i, t) for i, t in zip(all_ids, clean, strict=True) if i in new_set]
                todo = list(dict(todo).items())
                vecs = []
                for s in range(0, len(todo), 256):
                    ids = tokenizer([t for _, t in todo[s : s + 256]])
                    with torch.inference_mode():
                        vecs.append(model.encode_text(ids.to(self.device), normalize=True).float().cpu().numpy())
                vectors = np.concatenate(vecs)
                path = self.home.text_index_path
                self.home.ensure()
                if path.exists():
                    index = VectorIndex.load(path, model=model.name)
                else:
                    index = VectorIndex.create(vectors.shape[1], model.name, "Flat")
                present = np.isin([i for i, _ in todo], index.ids()) if index.ntotal else np.zeros(len(todo), bool)
                keep = ~present
                index.add(vectors[keep], np.asarray([i for i, _ in todo], np.int64)[keep])
                index.save(path)
                self._texts.replace(index)
        return list(all_ids)

    def delete_video(self, video_id: int) -> dict:
        """Remove a video from the catalog, the clip index and its thumbnails (the file stays)."""
        from retrieval.index import VectorIndex

        with self._write_lock, self._locked_home():
            v = self.catalog.get_video(video_id)
            removed = self.catalog.delete_video(video_id)
            path = self.home.clip_index_path
            if removed and path.exists():
                index = VectorIndex.load(path)
                index.remove(removed)
                index.save(path)
                self._clips.replace(index)
            for cid in removed:
                try:
                    self.home.thumbnail_path(cid).unlink()
                except OSError:
                    pass
        return {"deleted": int(video_id), "path": v.path, "clips_removed": len(removed)}

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()


class _HomeLock:
    """An exclusive ``flock`` on the home's ``indexer.lock`` (waits up to ``timeout`` seconds)."""

    def __init__(self, path: Path, timeout: float = 30.0):
        self.path = path
        self.timeout = timeout
        self._fh = None

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fh.seek(0)
                self._fh.truncate()
                self._fh.write(f"vtr serve (pid {os.getpid()})")  # what `vtr index` reports as the holder
                self._fh.flush()
                return self
            except BlockingIOError:
                if time.monotonic() > deadline:
                    self._fh.close()
                    raise StoreError("the index is busy (`vtr index` is running); try again when it finishes") from None
                time.sleep(0.1)

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()


def _index_facts(index) -> dict | None:
    if index is None:
        return None
    return {
        "vectors": index.ntotal,
        "dim": index.dim,
        "factory": index.factory,
        "metric": index.metric,
        "model": index.model,
    }


def _clean_query(text: Any) -> str:
    if not isinstance(text, str):
        raise InvalidInput("the query must be a string")
    text = " ".join(text.split())
    if not text:
        raise InvalidInput("the query is empty")
    return text


def _check_page(k: Any, offset: Any) -> tuple[int, int]:
    try:
        k, offset = int(k), int(offset)
    except (TypeError, ValueError):
        raise InvalidInput("k and offset must be integers") from None
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}")
    if offset < 0:
        raise InvalidInput("offset must not be negative")
    return k, offset
