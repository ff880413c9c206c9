"""Retrieval evaluation on a captioned clip set, MSR-VTT 1k-A style.

Frames go through the real decode path (``retrieval.decode``, decord first, middle frame of each of
T equal segments) and the model's own preprocessing, exactly as indexing does. Three rankings are
scored in both directions (text->video and video->text):

* ``itc``: cosine similarity of the dual encoder's embeddings;
* ``dsl``: the same similarities through dual softmax;
* ``match``: the top ``rerank_k`` candidates by ITC re-ordered by the matching head's "match" logit
  alone (InternVideo2-s2's protocol); candidates beyond k keep their ITC order;
* ``fused``: the same candidates re-ordered by the fitted mix of scaled cosine and head margin
  (``retrieval.calibration``), the search service's ranking when the checkpoint carries one and
  the search has no query bank;
* ``fused_bank``: the fitted mix with query-bank normalisation (``retrieval.query_bank``), the
  split's own captions (text->video) and clips (video->text) as the banks, as a home holding the
  split's videos and its captions in the caption corpus would rank: the service's default when the
  checkpoint carries a bank mix.

Metrics are reported overall and per subset of the query (a synthetic clip's ``subset`` field).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retrieval.calibration import RankingParams, fit_ranking
from retrieval.errors import InvalidInput
from retrieval.metrics import dual_softmax, rerank_scores, retrieval_metrics
from retrieval.query_bank import bank_similarities

log = logging.getLogger(__name__)

# subsets reported besides each clip's own subset: aggregates named in the benchmark's targets
SUBSET_GROUPS = {
    "direction_order": ("direction", "order"),
    "temporal": ("direction", "order", "size_change", "visibility", "rotation"),
}
METHODS = ("itc", "dsl", "match", "fused", "fused_bank")


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield slice(i, min(n, i + size))


@torch.no_grad()
def embed_videos(model, preprocess, paths: list[Path], batch_size: int = 32, progress: bool = False):
    """-> (embeddings [N,D] float32, matching-head token sets [N,1+T,Wv]) for video files."""
    from retrieval.decode import probe, read_frames
    from retrieval.frames import middle_indices

    embs, toks = [], []
    it = _batches(len(paths), batch_size)
    if progress:
        from tqdm import tqdm

        it = tqdm(list(it), unit="batch", desc="embedding videos")
    for sl in it:
        pixels = []
        for p in paths[sl]:
            info = probe(p)
            pixels.append(preprocess(read_frames(p, middle_indices(info.num_frames, model.num_frames))))
        emb, tok = model.encode_video(torch.stack(pixels), normalize=True, return_tokens=True)
        embs.append(emb.float())
        toks.append(tok.float())
    return torch.cat(embs), torch.cat(toks)


@torch.no_grad()
def embed_texts(model, tokenizer, captions: list[str], batch_size: int = 256):
    """-> (embeddings [M,D], token states [M,L,Wt], token ids [M,L])."""
    ids = tokenizer(captions)
    embs, toks = [], []
    for sl in _batches(len(captions), batch_size):
        emb, tok = model.encode_text(ids[sl], normalize=True, return_tokens=True)
        embs.append(emb.float())
        toks.append(tok.float())
    return torch.cat(embs), torch.cat(toks), ids


@torch.no_grad()
def match_topk(model, text_tok, ids, video_tok, sim: np.ndarray, k: int, text_queries: bool, chunk: int = 4096):
    """Matching-head logits of each query's top-k candidates by ``sim`` ([queries, candidates]).

    -> (candidate indices [Q,k], logits [Q,k,2]).
    """
    k = min(k, sim.shape[1])
    top = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    q_idx = np.repeat(np.arange(sim.shape[0]), k)
    c_idx = top.reshape(-1)
    t_idx, v_idx = (q_idx, c_idx) if text_queries else (c_idx, q_idx)
    length = int(ids.argmax(dim=1).max()) + 1  # columns after the longest caption's end are padding
    logits = np.empty((len(q_idx), 2), np.float32)
    for sl in _batches(len(q_idx), chunk):
        t, v = torch.from_numpy(t_idx[sl]), torch.from_numpy(v_idx[sl])
        logits[sl] = model.match_logits(text_tok[t, :length], ids[t, :length], video_tok[v]).float().numpy()
    return top, logits.reshape(*top.shape, 2)


def _ground_truth(records: list[dict], video_of: list[int], n_videos: int) -> np.ndarray:
    """[texts, videos] bool: a text matches its own clip and every clip whose caption or key equals its own."""
    ident = [r.get("key") or r["caption"] for r in records]
    code: dict = {}
    ids = np.array([code.setdefault(x, len(code)) for x in ident])
    clip_codes = [set() for _ in range(n_videos)]
    for t, v in enumerate(video_of):
        clip_codes[v].add(ids[t])
    gt = np.zeros((len(records), n_videos), bool)
    for v, codes in enumerate(clip_codes):
        for c in codes:
            gt[ids == c, v] = True
    return gt


def _subset_rows(subsets: list[str]) -> dict[str, np.ndarray]:
    arr = np.array(subsets)
    out = {"all": np.ones(len(arr), bool)}
    for s in sorted(set(arr) - {""}):
        out[s] = arr == s
    for name, members in SUBSET_GROUPS.items():
        rows = np.isin(arr, members)
        if rows.any():
            out[name] = rows
    return out


def _metrics_by_subset(score: np.ndarray, gt: np.ndarray, subsets: list[str], extra: dict | None = None) -> dict:
    rows = _subset_rows(subsets)
    rows.update(extra or {})
    return {name: retrieval_metrics(score[m], gt[m]) for name, m in rows.items() if m.any()}


@dataclass
class ScoredSplit:
    """Everything the rankings of one captioned split are computed from (scored once, ranked many ways)."""

    sim: np.ndarray  # [texts, videos] cosine
    gt: np.ndarray  # [texts, videos] bool
    text_subsets: list[str]
    video_subsets: list[str]
    extra_t: dict
    extra_v: dict
    candidates: dict  # "t2v"/"v2t" -> (top [Q,k], head logits [Q,k,2]); empty without a trained head
    videos: int
    data: dict  # description of the split for the report
    text_emb: np.ndarray | None = None  # [texts, D] unit vectors (query banks for the bank mix)
    video_emb: np.ndarray | None = None  # [videos, D]


def score_split(
    model,
    preprocess,
    tokenizer,
    data_dir: str | os.PathLike,
    rerank_k: int = 128,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = False,
) -> ScoredSplit:
    """Embed a directory with ``captions.jsonl`` + videos and score its top-k candidates with the head."""
    from retrieval.synth import CAPTIONS, read_captions

    data_dir = Path(data_dir)
    records = read_captions(data_dir)[:limit]
    if len(records) < 2:
        raise InvalidInput("evaluation needs at least 2 captioned clips")
    paths, video_of, index = [], [], {}
    for r in records:
        p = data_dir / r["path"]
        if p not in index:
            index[p] = len(paths)
            paths.append(p)
        video_of.append(index[p])
    model.eval()
    v_emb, v_tok = embed_videos(model, preprocess, paths, batch_size, progress)
    t_emb, t_tok, ids = embed_texts(model, tokenizer, [r["caption"] for r in records])
    sim = (t_emb @ v_emb.t()).numpy().astype(np.float64)  # [texts, videos]
    gt = _ground_truth(records, video_of, len(paths))
    text_subsets = [r.get("subset", "") for r in records]
    video_subsets = [""] * len(paths)
    for t, v in enumerate(video_of):
        video_subsets[v] = video_subsets[v] or text_subsets[t]
    held_t = np.array([bool(r.get("held_out")) for r in records])
    held_v = np.zeros(len(paths), bool)
    held_v[np.array(video_of)[held_t]] = True
    candidates = {}
    if model.match_head is not None and rerank_k > 0:
        candidates["t2v"] = match_topk(model, t_tok, ids, v_tok, sim, rerank_k, text_queries=True)
        candidates["v2t"] = match_topk(model, t_tok, ids, v_tok, sim.T, rerank_k, text_queries=False)
    captions_file = data_dir / CAPTIONS
    manifest = data_dir / "synth.json"
    data = {
        "videos": len(paths),
        "texts": len(records),
        "captions_sha1": hashlib.sha1(captions_file.read_bytes()).hexdigest() if limit is None else None,
        "generated_with": json.loads(manifest.read_text()) if manifest.is_file() and limit is None else None,
    }
    return ScoredSplit(
        sim,
        gt,
        text_subsets,
        video_subsets,
        {"held_out": held_t} if held_t.any() else {},
        {"held_out": held_v} if held_v.any() else {},
        candidates,
        len(paths),
        data,
        t_emb.numpy(),
        v_emb.numpy(),
    )


def _directions(split: ScoredSplit) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """direction -> (cosine [Q,N], ground truth [Q,N])."""
    return {"t2v": (split.sim, split.gt), "v2t": (split.sim.T, split.gt.T)}


def _banks(split: ScoredSplit) -> dict[str, dict[str, np.ndarray]]:
    """direction -> {"gallery": ranked items' embeddings, "bank": the query bank}: the split's own
    captions for text->video and its clips for video->text, as the service's home would have."""
    if split.text_emb is None or split.video_emb is None:
        return {}
    return {
        "t2v": {"gallery": split.video_emb, "bank": split.text_emb},
        "v2t": {"gallery": split.text_emb, "bank": split.video_emb},
    }


def fit_split_ranking(model, split: ScoredSplit, min_head_gain: float | None = None) -> RankingParams:
    """Fit the fused ranking and the match-probability calibration on a held-out scored split
    (``min_head_gain``: see :data:`retrieval.calibration.MIN_HEAD_GAIN`, the default)."""
    if not split.candidates:
        raise InvalidInput(f"model {model.name!r} has no matching head to fuse (or rerank_k is 0)")
    directions = []
    for name, (sim, gt) in _directions(split).items():
        top, logits = split.candidates[name]
        margin = logits[..., 1] - logits[..., 0]
        directions.append({"sim": sim, "top": top, "margin": margin, "gt": gt, **_banks(split).get(name, {})})
    scale = float(model.clamped_logit_scale().detach().exp())
    fitted_on = {"data": split.data, "rerank_k": split.candidates["t2v"][0].shape[1]}
    return fit_ranking(scale, directions, fitted_on=fitted_on, min_head_gain=min_head_gain)


def evaluate(
    model,
    preprocess,
    tokenizer,
    data_dir: str | os.PathLike,
    rerank_k: int = 128,
    batch_size: int = 32,
    limit: int | None = None,
    progress: bool = False,
    ranking: RankingParams | None = None,
) -> dict:
    """Evaluate ``model`` on a directory with ``captions.jsonl`` + videos; returns the report dict.

    ``ranking`` defaults to the fitted ranking shipped in the model's checkpoint, if any.
    """
    split = score_split(model, preprocess, tokenizer, data_dir, rerank_k, batch_size, limit, progress)
    ranking = ranking or getattr(model, "ranking", None)
    scores: dict[str, dict[str, np.ndarray]] = {}
    for name, (sim, _) in _directions(split).items():
        scores[name] = {"itc": sim, "dsl": dual_softmax(sim)}
        if name in split.candidates:
            top, logits = split.candidates[name]
            scores[name]["match"] = rerank_scores(sim, top, logits[..., 1])
            if ranking is not None:
                cos, margin = np.take_along_axis(sim, top, 1), logits[..., 1] - logits[..., 0]
                scores[name]["fused"] = rerank_scores(sim, top, ranking.fused(cos, margin))
                bank = _banks(split).get(name)
                if ranking.bank is not None and bank is not None:
                    bank_sim = bank_similarities(bank["gallery"], bank["bank"], ranking.bank.beta)[top]
                    scores[name]["fused_bank"] = rerank_scores(sim, top, ranking.fused(cos, margin, bank_sim))
    results = {
        "t2v": {
            m: _metrics_by_subset(sc, split.gt, split.text_subsets, split.extra_t) for m, sc in scores["t2v"].items()
        },
        "v2t": {
            m: _metrics_by_subset(sc, split.gt.T, split.video_subsets, split.extra_v) for m, sc in scores["v2t"].items()
        },
    }
    default = next(m for m in ("fused_bank", "fused", "match", "itc") if m in scores["t2v"])
    return {
        "model": model.name,
        "temporal": model.config.vision.temporal,
        "num_frames": model.num_frames,
        "rerank_k": rerank_k if split.candidates else 0,
        "match_head_trained": bool(getattr(model, "match_head_trained", False)),
        "default_ranking": default,
        "ranking": None if ranking is None else json.loads(ranking.to_json()),
        "data": split.data,
        "results": results,
    }


def format_table(report: dict, subsets: tuple[str, ...] | None = None) -> str:
    """A plain-text (also valid Markdown) table: one row per direction x method x subset."""
    lines = ["| dir | method | subset | n | R@1 | R@5 | R@10 | MdR | MnR |", "|---|---|---|---|---|---|---|---|---|"]
    for direction, methods in report["results"].items():
        for method, by_subset in methods.items():
            for subset, m in by_subset.items():
                if subsets and subset not in subsets:
                    continue
                lines.append(
                    f"| {direction} | {method} | {subset} | {m['n']} | {m['R@1']:.1f} | {m['R@5']:.1f} | "
                    f"{m['R@10']:.1f} | {m['MdR']:.0f} | {m['MnR']:.1f} |"
                )
    return "\n".join(lines)
