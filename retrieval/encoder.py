"""Query encoding: texts, uploaded video files and indexed clips in the model's space.

Why apart from the engine: encoding is where the model runs for a query, with its own concerns
(concurrent text queries share one forward pass through :class:`~retrieval.batching.MicroBatcher`,
and so do concurrent re-rankings through the matching head; recent queries are cached, uploaded
files are decoded under a deadline and a pixel limit); the engine only asks for vectors, token
sets and head logits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.batching import MicroBatcher
from retrieval.errors import InvalidInput

log = logging.getLogger(__name__)

MAX_QUERY_PIXELS = 8192 * 4320  # refuse frames larger than 8K (a decompression bomb in 64 MiB is easy)
# seconds a query video may take to decode: 64 MiB of near-empty frames decodes for many minutes
QUERY_DECODE_SECONDS = 30.0


@dataclass
class EncodedText:
    vector: np.ndarray  # float32 [D], L2-normalised
    tokens: Any  # torch float [L, Wt]: the text tower's final states (matching-head input)
    ids: Any  # torch long [L]


@dataclass
class EncodedVideo:
    vector: np.ndarray  # float32 [D], L2-normalised
    tokens: Any | None  # torch float [N, Wv] or None when the clip has no stored token set


class QueryEncoder:
    """Encodes queries with the model ``bundle()`` returns (``(model, preprocess, tokenizer)``, loaded lazily)."""

    def __init__(
        self,
        bundle: Callable[[], tuple],
        device: str = "cpu",
        *,
        max_text_batch: int = 64,
        max_rerank_batch: int = 16,
        query_timeout: float = QUERY_DECODE_SECONDS,
        cache_size: int = 512,
    ):
        self._bundle = bundle
        self.device = device
        self.query_timeout = float(query_timeout)
        self.batcher = MicroBatcher(self._encode_text_batch, max_text_batch)
        # concurrent re-rankings (each: one query text against its top candidates' token sets)
        # run as one matching-head pass: see :meth:`rerank`
        self.rerank_batcher = MicroBatcher(self._rerank_batch, max_rerank_batch, lanes=os.cpu_count() or 1)
        self._traces: dict[tuple, tuple[Any, Any]] = {}  # (id(owner), method) -> (owner, traced call)
        self._trace_lock = threading.Lock()
        self._cache: OrderedDict[str, EncodedText] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cache_size = cache_size

    def _encode_text_batch(self, texts: list[str]) -> list[EncodedText]:
        model, _, tokenizer = self._bundle()
        ids = tokenizer(texts).to(self.device)
        emb, states = self._encode_ids(model, ids)
        ids = ids.cpu()
        return [EncodedText(emb[i], states[i], ids[i]) for i in range(len(texts))]

    def _encode_ids(self, model, ids) -> tuple[np.ndarray, Any]:
        """(embeddings [B,D], token states [B,L,Wt] fp32 on the CPU) of tokenised texts, by the traced
        tower over the columns the batch uses (half the work or less for short queries; the same
        numbers: see :mod:`retrieval.text_prefix`), the states padded back to the context length."""
        import torch

        from retrieval.text_prefix import pad_states, trim

        used = trim(ids)
        with torch.inference_mode():
            emb, states = self._text_tower(model, (used,))(used)
        return emb.float().cpu().numpy(), pad_states(states.float().cpu(), ids.shape[1])

    def text(self, text: str) -> EncodedText:
        """Encode one query; concurrent callers share forward passes; recent queries are cached."""
        with self._cache_lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        enc = self.batcher(text)
        with self._cache_lock:
            self._cache[text] = enc
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return enc

    def text_states(self, texts: list[str]) -> tuple[Any, Any, np.ndarray]:
        """(final text states, token ids, embeddings) of ``texts`` in one pass: the matching head's
        text input, and the captions' exact vectors (for the query bank)."""
        model, _, tokenizer = self._bundle()
        tids = tokenizer(texts).to(self.device)
        emb, states = self._encode_ids(model, tids)
        return states, tids.cpu(), emb

    def file(self, path: str | os.PathLike) -> EncodedVideo:
        """Embedding and token set of a video file (an upload: decoded self-contained, under a deadline)."""
        import torch

        from retrieval.decode import probe, read_frames
        from retrieval.frames import middle_indices

        model, preprocess, _ = self._bundle()
        deadline = time.monotonic() + self.query_timeout
        info = probe(path, deadline=deadline, self_contained=True)  # an upload may be a hostile playlist
        if info.width * info.height > MAX_QUERY_PIXELS:
            raise InvalidInput(f"the query video is {info.width}x{info.height}; frames up to 8K are accepted")
        indices = middle_indices(max(1, info.num_frames), model.num_frames)
        frames = read_frames(path, indices, deadline=deadline, self_contained=True)
        pixels = preprocess(frames)[None].to(self.device)
        with torch.inference_mode():
            emb, tokens = model.encode_video(pixels, normalize=True, return_tokens=True)
        return EncodedVideo(emb[0].float().cpu().numpy(), tokens[0].float().cpu())

    def stored_clip(self, clip_id: int, tokens) -> EncodedVideo:
        """An indexed clip as a query: its stored embedding and token set (``tokens``: a LiveTokens)."""
        import torch

        from retrieval.errors import NotFound

        vecs, have = tokens.vectors(np.asarray([clip_id], np.int64))
        if len(have) == 0:
            raise NotFound(f"clip {clip_id} has no stored embedding yet (is `vtr index` still writing it?)")
        toks, mask = tokens.tokens([clip_id])
        tok = torch.from_numpy(toks[0].astype(np.float32)) if toks is not None and mask[0] else None
        v = vecs[0]
        return EncodedVideo(v / max(float(np.linalg.norm(v)), 1e-12), tok)

    def rerank(self, enc: EncodedText, video_tokens: np.ndarray) -> np.ndarray:
        """[n,2] head logits of one query text against n token sets ([n,N,W], fp16 as stored).

        Concurrent callers (server threads) share one head pass: the pairs of every query waiting
        are scored together by :meth:`pair_logits`, which gives each pair the logits it would get
        alone (up to float rounding; tested).
        """
        return self.rerank_batcher((enc, video_tokens))

    def _rerank_batch(self, items: list[tuple[EncodedText, np.ndarray]]) -> list[np.ndarray]:
        import torch

        counts = [len(v) for _, v in items]
        text_tokens = torch.stack([e.tokens for e, _ in items])
        text_ids = torch.stack([e.ids for e, _ in items])
        video = items[0][1] if len(items) == 1 else np.concatenate([v for _, v in items])
        query_of = np.repeat(np.arange(len(items)), counts)
        logits = self.pair_logits(text_tokens, text_ids, video, query_of)
        return np.split(logits, np.cumsum(counts)[:-1])

    def pair_logits(self, text_tokens, text_ids, video_tokens, query_of) -> np.ndarray:
        """[n,2] logits of n (text, video) pairs: ``query_of[i]`` indexes the Q texts
        (``text_tokens`` [Q,L,Wt], ``text_ids`` [Q,L]), ``video_tokens`` [n,N,W] (array or tensor,
        any float dtype; the head runs in its weights' dtype, fp32: the fastest on CPUs without
        bf16 units). One :meth:`MatchHead.score` pass per 4,096 pairs; columns past the longest
        text dropped."""
        import torch

        head = self._bundle()[0].match_head
        if head is None:
            raise InvalidInput("this model has no matching head; search with rerank off")
        n = len(query_of)
        if n == 0:
            return np.empty((0, 2), np.float32)
        video = (
            torch.from_numpy(np.ascontiguousarray(video_tokens))
            if isinstance(video_tokens, np.ndarray)
            else video_tokens
        )
        length = int(text_ids.argmax(dim=1).max()) + 1
        texts = text_tokens[:, :length].to(self.device)
        ids = text_ids[:, :length].to(self.device)
        query_of = torch.as_tensor(np.asarray(query_of, np.int64)).to(self.device)
        out = []
        with torch.inference_mode():
            for i in range(0, n, 4096):
                args = (texts, ids, video[i : i + 4096].to(self.device), query_of[i : i + 4096])
                out.append(self._scorer(head, args)(*args).float().cpu().numpy())
        return np.concatenate(out)

    def _scorer(self, head, example: tuple):
        """``head.score`` as a TorchScript trace: see :meth:`_traced`."""
        return self._traced(head, "score", {}, example)

    def _text_tower(self, model, example: tuple):
        """``model.encode_text(ids, normalize=True, return_tokens=True)`` as a trace: see :meth:`_traced`."""
        return self._traced(model, "encode_text", {"normalize": True, "return_tokens": True}, example)

    def _traced(self, owner, method: str, kwargs: dict, example: tuple):
        """A TorchScript trace of ``owner.method(*args, **kwargs)`` (built on first use, checked against
        eager on ``example``).

        Why: eager torch releases and re-takes the GIL around each operator (~100 in a head pass,
        as many in the text tower), and with server threads busy in Python each re-take waits for
        a switch interval: measured here, a 200 ms head pass took 710 ms next to four busy Python
        threads, and 250 ms as one traced call, which holds no GIL while it runs (the text tower:
        30 -> 19 ms even alone). A trace reads shapes from its inputs (any batch, text length or
        candidate count) and computes the same numbers; if tracing fails or disagrees with eager,
        eager is used.
        """
        import torch

        key = (id(owner), method)
        cached = self._traces.get(key)
        if cached is not None and cached[0] is owner:
            return cached[1]
        with self._trace_lock:
            cached = self._traces.get(key)
            if cached is not None and cached[0] is owner:
                return cached[1]
            module = _module_class()(owner, method, **kwargs)
            fn = module
            try:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # TracerWarnings about Python-side shape checks
                    traced = torch.jit.trace(module, example, check_trace=False)
                got, want = traced(*example), module(*example)
                got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
                if all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(got, want, strict=True)):
                    fn = traced
                else:
                    log.warning("traced %s disagrees with eager; it runs eager", method)
            except Exception as exc:  # an architecture the tracer cannot follow: eager still works
                log.warning("%s could not be traced (%s); it runs eager", method, exc)
            self._traces[key] = (owner, fn)
            return fn

    def clear_cache(self) -> None:
        """Forget cached query encodings (a test that must see the batcher run)."""
        with self._cache_lock:
            self._cache.clear()


def _module_class():
    import torch

    class Call(torch.nn.Module):
        """``owner.method(*args, **kwargs)`` as a module (what ``torch.jit.trace`` takes)."""

        def __init__(self, owner, method: str, **kwargs):
            super().__init__()
            self.owner, self.method, self.kwargs = owner, method, kwargs

        def forward(self, *args):
            return getattr(self.owner, self.method)(*args, **self.kwargs)

    return Call
