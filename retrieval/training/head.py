"""Stage 2: train the matching head on frozen towers, with negatives mined from the whole training set.

Why a second stage: the head's job at search time is to re-order the dual encoder's top-k
candidates. Trained jointly from scratch on in-batch negatives, it sees positives and hard
negatives that look alike to its untrained features and settles on predicting the class prior
(measured: VTM loss flat at the prior's entropy for 400+ steps). With the towers frozen, every
clip's token set and embedding can be computed once, and each text's negatives can be drawn from
its ITC top-k over *all* training clips — exactly the lists the head will re-rank in search —
plus the generated twin (time reversal or swapped colours), a frame-shuffled copy and one random
clip. A head step then costs milliseconds instead of a tower forward and backward pass.

Determinism: encodings use fixed frame choices; every sampling draw is a function of (seed, step).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from retrieval.errors import ConfigError
from retrieval.training.config import build, read_json_object, reject_unknown_keys, require_positive_ints
from retrieval.training.reproducible import reproducible_torch

log = logging.getLogger(__name__)


@dataclass
class HeadTrainCfg:
    checkpoint: str  # stage-1 project .safetensors (towers and an initial head)
    data: str = "data/synth-train"  # the stage-1 training split
    output: str = "runs/head.safetensors"
    steps: int = 800
    batch_size: int = 128  # anchor clips per step (each brings ~5 pairs)
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 50
    weight_decay: float = 0.05
    neighbours: int = 16  # ITC top-k (per text and per video) that hard negatives are drawn from
    samplings: int = 2  # token sets per clip: the middle frames (as at search time) + random frames
    reinit_head: bool = False  # start the head from scratch instead of the stage-1 head
    frame_positions: bool = False  # give an order-blind stage-1 head a frame-order embedding (zero-init) first
    seed: int = 0
    log_every: int = 10
    num_threads: int = 1
    encode_batch: int = 128
    save_dtype: str = "float16"

    @classmethod
    def from_json(cls, path: str | Path) -> HeadTrainCfg:
        what = "head training config"
        d = read_json_object(path, what)
        reject_unknown_keys(d, cls, what)
        cfg = build(cls, d, what)
        names = ("steps", "batch_size", "neighbours", "samplings", "log_every", "num_threads", "encode_batch")
        require_positive_ints(cfg, names, what)
        return cfg


def _lr(step: int, cfg: HeadTrainCfg) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    low = cfg.lr * cfg.min_lr_ratio
    return low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * t))


@torch.no_grad()
def _encode_clips(
    model, frames: np.ndarray, rows: np.ndarray, picks: np.ndarray, batch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (unit embeddings [n,D] fp32, head token sets [n,1+T,W] fp16) for frames[rows[k]][picks[k]]."""
    from retrieval.training.data import normalize

    pre = model.config.preprocess
    embs, toks = [], []
    for s in range(0, len(rows), batch):
        ks = range(s, min(len(rows), s + batch))
        pixels = normalize(np.stack([frames[rows[k]][picks[k]] for k in ks]), pre.mean, pre.std)
        e, t = model.encode_video(pixels, normalize=True, return_tokens=True)
        embs.append(e.float())
        toks.append(t.half())
    return torch.cat(embs), torch.cat(toks)


def _neighbours(q: torch.Tensor, c: torch.Tensor, same: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k columns of q @ c.T per row, excluding columns with the row's key: (indices, cosines)."""
    idx_out, sim_out = [], []
    for s in range(0, len(q), 1024):
        sim = q[s : s + 1024] @ c.t()
        rows = np.arange(s, min(len(q), s + 1024))
        mask = torch.from_numpy(same[rows][:, None] == same[None, :])
        sim = sim.masked_fill(mask, -2.0)
        top = sim.topk(k, dim=1)
        idx_out.append(top.indices.numpy())
        sim_out.append(top.values.numpy())
    return np.concatenate(idx_out), np.concatenate(sim_out)


def _pick(rng: np.random.Generator, idx: np.ndarray, sims: np.ndarray, scale: float) -> int:
    """One neighbour drawn from softmax(scale * sim): the s2 sampler over the global candidate list."""
    w = np.exp(scale * (sims - sims.max()))
    return int(idx[rng.choice(len(idx), p=w / w.sum())])


class _Pairs:
    """The (text row, video token set, label) pairs of one head step, and where the key ones sit."""

    def __init__(self):
        self.text_rows: list[int] = []
        self.videos: list[torch.Tensor] = []
        self.labels: list[int] = []
        self.pos_at: list[int] = []  # position of each anchor's positive pair
        self.hard_at: list[int] = []  # ... and of its hard negative video

    def add(self, text_row: int, tok: torch.Tensor, label: int) -> int:
        self.text_rows.append(text_row)
        self.videos.append(tok)
        self.labels.append(label)
        return len(self.labels) - 1


def train_head(cfg: HeadTrainCfg, progress: bool = True) -> Path:
    """Train the matching head of ``cfg.checkpoint`` with frozen towers; write ``cfg.output``."""
    with reproducible_torch(cfg.num_threads):
        return _train_head(cfg, progress)


def _train_head(cfg: HeadTrainCfg, progress: bool) -> Path:
    from retrieval.checkpoints import read_project_checkpoint, save_checkpoint
    from retrieval.factory import create_model_and_transforms
    from retrieval.frames import middle_indices, random_indices
    from retrieval.synth import read_captions
    from retrieval.training.data import frame_cache, rephrase, time_asymmetric

    t_start = time.perf_counter()
    model, _, tokenizer = create_model_and_transforms(None, pretrained=cfg.checkpoint)
    if model.match_head is None:
        raise ConfigError(f"{cfg.checkpoint}: the model has no matching head to train")
    records = read_captions(cfg.data)
    frames = frame_cache(cfg.data, records, model.image_size, progress=progress)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.match_head
    if cfg.frame_positions and head.frame_embedding is None:
        model.config.match_head.frame_positions = 1 + model.num_frames  # saved with the weights
        head.frame_embedding = torch.nn.Parameter(torch.zeros(1 + model.num_frames, model.config.match_head.width))
    if cfg.reinit_head:
        torch.manual_seed(cfg.seed)
        for m in head.modules():
            if hasattr(m, "reset_parameters") and m is not head:
                m.reset_parameters()
        if head.frame_embedding is not None:
            head.frame_embedding.data.zero_()
    for p in head.parameters():
        p.requires_grad_(True)

    N, cached, T = len(records), frames.shape[1], model.num_frames
    rng0 = np.random.default_rng([cfg.seed, 21])
    picks = [np.array([middle_indices(cached, T)] * N)]
    picks += [np.array([random_indices(cached, T, rng0) for _ in range(N)]) for _ in range(cfg.samplings - 1)]
    log.info("encoding %d clips x %d frame samplings with the frozen video tower", N, len(picks))
    everyone = np.arange(N)
    encoded = [_encode_clips(model, frames, everyone, p, cfg.encode_batch) for p in picks]
    v_emb, tokens = encoded[0][0], [t for _, t in encoded]
    asym = np.flatnonzero([time_asymmetric(r) for r in records])
    shuffled_tok, shuffled_of = None, {}
    if len(asym):
        perms = [rng0.permutation(T) for _ in asym]
        perms = [p if not (p == np.arange(T)).all() else p[::-1] for p in perms]  # never the identity
        shuffled = np.stack([picks[0][i][p] for i, p in zip(asym, perms, strict=True)])
        shuffled_tok = _encode_clips(model, frames, asym, shuffled, cfg.encode_batch)[1]
        shuffled_of = {int(i): n for n, i in enumerate(asym)}

    keys = [r.get("key") or r["caption"] for r in records]
    codes: dict = {}
    same = np.array([codes.setdefault(k, len(codes)) for k in keys])
    with torch.no_grad():
        t_emb = torch.cat([model.encode_text(tokenizer([r["caption"] for r in records[s : s + 512]]), normalize=True)
                           for s in range(0, N, 512)])  # fmt: skip
    t2v_idx, t2v_sim = _neighbours(t_emb, v_emb, same, cfg.neighbours)
    v2t_idx, v2t_sim = _neighbours(v_emb, t_emb, same, cfg.neighbours)
    groups: dict = {}
    for i, r in enumerate(records):
        groups.setdefault(r.get("group", f"clip{i}"), []).append(i)
    twin = {i: j for members in groups.values() for i in members for j in members if j != i and same[j] != same[i]}
    scale = float(model.clamped_logit_scale().exp())
    log.info("encoded in %.0f s; training the head for %d steps", time.perf_counter() - t_start, cfg.steps)

    decay = [p for n, p in head.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    plain = [p for n, p in head.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}], lr=cfg.lr
    )
    head.train()
    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(out.with_name(out.stem + ".log.jsonl"), "w")  # noqa: SIM115
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, unit="step", desc="train head", dynamic_ncols=True)
    t0 = time.perf_counter()
    try:
        for step in range(cfg.steps):
            for g in opt.param_groups:
                g["lr"] = _lr(step, cfg)
            rng = np.random.default_rng([cfg.seed, 23, step])
            anchors = rng.choice(N, size=min(cfg.batch_size, N), replace=False)
            neg_text_src = [_pick(rng, v2t_idx[i], v2t_sim[i], scale) for i in anchors]
            texts = [rephrase(records[i], rng) for i in anchors] + [rephrase(records[j], rng) for j in neg_text_src]
            with torch.no_grad():
                ids = tokenizer(texts)
                _, t_tok = model.encode_text(ids, normalize=True, return_tokens=True)
                length = int(ids.argmax(dim=1).max()) + 1  # padding columns after the longest text: exact to drop
                ids, t_tok = ids[:, :length], t_tok[:, :length]
            pairs = _Pairs()
            B = len(anchors)
            for n, i in enumerate(anchors):
                tok = tokens[int(rng.integers(len(tokens)))]
                pairs.pos_at.append(pairs.add(n, tok[i], 1))
                pairs.hard_at.append(pairs.add(n, tok[_pick(rng, t2v_idx[i], t2v_sim[i], scale)], 0))  # hard video
                pairs.add(B + n, tok[i], 0)  # hard text for the video
                easy = int(rng.integers(N))
                if same[easy] != same[i]:
                    pairs.add(n, tok[easy], 0)
                if i in twin:
                    pairs.add(n, tok[twin[i]], 0)
                if shuffled_tok is not None and int(i) in shuffled_of:
                    pairs.add(n, shuffled_tok[shuffled_of[int(i)]], 0)
            rows = torch.tensor(pairs.text_rows)
            videos, labels, pos_at, hard_at = pairs.videos, pairs.labels, pairs.pos_at, pairs.hard_at
            y = torch.tensor(labels)
            logits = model.match_logits(t_tok[rows], ids[rows], torch.stack(videos).float())
            n_pos, n_neg = int(y.sum()), int((1 - y).sum())
            weight = torch.where(y == 1, 0.5 / max(1, n_pos), 0.5 / max(1, n_neg))  # classes count equally
            loss = (F.cross_entropy(logits, y, reduction="none") * weight).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
            opt.step()
            margin = (logits[:, 1] - logits[:, 0]).detach()
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                rec = {
                    "step": step + 1,
                    "loss": round(loss.item(), 4),
                    "balanced_acc": round(0.5 * float((margin[y == 1] > 0).float().mean() + (margin[y == 0] <= 0).float().mean()), 4),
                    "pos_above_hard_video": round(float((margin[pos_at] > margin[hard_at]).float().mean()), 4),
                    "lr": _lr(step, cfg),
                    "steps_per_s": round((step + 1) / (time.perf_counter() - t0), 3),
                }  # fmt: skip
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
            if bar is not None:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        log_file.close()
    head.eval()
    model.match_head_trained = True
    _, _, meta = read_project_checkpoint(cfg.checkpoint)
    stage1 = {k: meta[k] for k in ("train_config", "train_steps", "train_wall_s") if k in meta}
    wall = round(time.perf_counter() - t_start, 1)
    meta_out = {**stage1, "head_train_config": asdict(cfg), "head_train_wall_s": wall}
    dtype = torch.float16 if cfg.save_dtype == "float16" else None
    save_checkpoint(model, out, metadata=meta_out, dtype=dtype)
    log.info("wrote %s (head stage: %.0f s)", out, wall)
    return out
