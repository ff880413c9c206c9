"""Re-rank scores for the top candidates: the matching head's logits, or token-set similarity.

Why apart from ranking: this is where the model runs on candidates (torch), while
:mod:`retrieval.ranking` decides, from the scores computed here, what the final order is. Each
function returns ``{id: [2] logits}`` for the candidates it could score (those with a stored token
set); the rest keep their ITC place.
"""

from __future__ import annotations

import numpy as np

from retrieval import ranking
from retrieval.encoder import EncodedText, EncodedVideo, QueryEncoder
from retrieval.live import LiveTokens
from retrieval.query_bank import QueryBank


def clips_for_text(encoder: QueryEncoder, tokens: LiveTokens, enc: EncodedText, cands: list) -> dict[int, np.ndarray]:
    """clip id -> match-head logits of (query text, clip) for the candidates that have a token set.

    The token sets come from the memory-mapped store in one gather (fp16, converted once inside
    the head pass); concurrent queries share that pass (:meth:`QueryEncoder.rerank`).
    """
    if not cands:
        return {}
    ids = [r.id for r, _ in cands]
    toks, mask = tokens.tokens(ids)
    if toks is None:
        return {}
    logits = encoder.rerank(enc, toks)
    have = [i for i, m in zip(ids, mask.tolist(), strict=True) if m]
    return dict(zip(have, logits, strict=True))


def clips_for_video(tokens: LiveTokens, enc: EncodedVideo, cands: list) -> dict[int, np.ndarray]:
    """clip id -> ``[0, s]``, s the frame-aligned similarity of the two clips' token sets (the head
    scores text-video pairs only; see :func:`retrieval.ranking.frame_aligned_similarity`)."""
    if not cands or enc.tokens is None:
        return {}
    ids = [r.id for r, _ in cands]
    toks, mask = tokens.tokens(ids)
    if toks is None:
        return {}
    sim = ranking.frame_aligned_similarity(enc.tokens.float().numpy(), toks.astype(np.float32))
    if sim is None:
        return {}
    return ranking.as_logits([i for i, m in zip(ids, mask.tolist(), strict=True) if m], sim)


def texts_for_video(encoder: QueryEncoder, enc: EncodedVideo, cands: list, head: bool = True) -> tuple[dict, dict]:
    """text id -> match-head logits, the head reading each caption against the query clip's tokens
    (NaN with ``head=False``: the ranking gives it no weight); and text id -> the caption's embedding
    from the same text pass (exact, for the query bank)."""
    if not cands:
        return {}, {}
    states, tids, emb = encoder.text_states([t.text for t, _ in cands])
    if head:
        video = enc.tokens[None].expand(len(cands), -1, -1)
        lg = encoder.pair_logits(states, tids, video, np.arange(len(cands)))
    else:
        lg = np.full((len(cands), 2), np.nan, np.float32)
    ids = [t.id for t, _ in cands]
    return dict(zip(ids, lg, strict=True)), dict(zip(ids, emb, strict=True))


def bank_similarities(bank: QueryBank | None, ids: list[int], vectors, beta: float) -> dict[int, float]:
    """id -> the candidate's soft maximum similarity to the query bank (QB-Norm), for the ids whose
    stored embedding ``vectors(ids) -> (embeddings, ids found)`` can read; empty without a bank."""
    if bank is None or not ids:
        return {}
    return bank.similarity_of(np.asarray(ids, np.int64), vectors, beta)
