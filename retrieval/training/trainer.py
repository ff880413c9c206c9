"""The training loop: VTC + VTM on in-batch negatives, AdamW with warmup + cosine, resumable.

Determinism: the batch order, the frames picked from each clip, token masking and hard-negative
sampling are all functions of ``(seed, step)``, so a run resumed from its state file continues
exactly as if it had never stopped, and two runs with one seed give the same weights on one machine.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from retrieval.errors import CheckpointError
from retrieval.training.config import TrainCfg
from retrieval.training.reproducible import reproducible_torch

log = logging.getLogger(__name__)


def lr_at(step: int, cfg: TrainCfg, peak: float | None = None) -> float:
    peak = cfg.lr if peak is None else peak
    if step < cfg.warmup_steps:
        return peak * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    low = peak * cfg.min_lr_ratio
    return low + 0.5 * (peak - low) * (1 + math.cos(math.pi * min(1.0, t)))


def _no_decay(name: str, p: torch.nn.Parameter) -> bool:
    return p.ndim < 2 or "embedding" in name or name.endswith("logit_scale")


def make_optimizer(model: torch.nn.Module, cfg: TrainCfg) -> torch.optim.Optimizer:
    """AdamW with three groups: decayed weights, undecayed (norms, biases, embeddings), the temperature.

    The temperature gets a group of its own because Adam moves a parameter by about its lr each step:
    at lr 1e-3 a logit scale starting at ln(1/0.07) needs ~2,000 steps to reach its clamp of ln(100),
    so a short run ends with a soft softmax that barely separates near-duplicates.
    """
    decay, plain, scale = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name == "logit_scale":
            scale.append(p)
        else:
            (plain if _no_decay(name, p) else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "peak_lr": cfg.lr},
        {"params": plain, "weight_decay": 0.0, "peak_lr": cfg.lr},
        {"params": scale, "weight_decay": 0.0, "peak_lr": cfg.logit_scale_lr or cfg.lr},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def state_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".state.pt")


def ensure_data(cfg: TrainCfg, progress: bool = True) -> list[dict]:
    from retrieval.synth import CAPTIONS, generate, read_captions

    data = Path(cfg.data)
    if not (data / CAPTIONS).is_file() and cfg.synth is not None:
        log.info("generating %d training clips into %s", cfg.synth.count, data)
        generate(data, cfg.synth.count, seed=cfg.synth.seed, split="train", progress=progress)
    return read_captions(data)


def prepare(cfg: TrainCfg, progress: bool = True):
    """Generate the data if missing and build its frame cache: (records, frames).

    Separate from :func:`train` so that runs sharing one data set (the model and its baseline) can
    prepare it once and then train side by side, one core each, without racing to write the cache.
    """
    from retrieval.factory import get_model_config
    from retrieval.training.data import frame_cache

    records = ensure_data(cfg, progress)
    return records, frame_cache(cfg.data, records, get_model_config(cfg.model).vision.image_size, progress=progress)


def _batch_loss(model, batch, tokenizer, cfg: TrainCfg, step: int, device):
    from retrieval.training.data import normalize
    from retrieval.training.losses import positive_mask, vtc_loss, vtm_loss

    pre = model.config.preprocess
    B = len(batch.captions)
    gen = torch.Generator().manual_seed(cfg.seed * 7_919 + step)  # hard negatives, shuffles
    shuffled = _shuffled_copies(batch, cfg.shuffled_negatives, gen)
    frames = batch.pixels if shuffled is None else np.concatenate([batch.pixels, shuffled[1]])
    pixels = normalize(frames, pre.mean, pre.std).to(device)
    ids = tokenizer(batch.captions).to(device)
    torch.manual_seed(cfg.seed * 1_000_003 + step)  # token masking
    pos = positive_mask(batch.keys).to(device)
    v_all, v_tok_all = model.encode_video(pixels, normalize=True, return_tokens=True, mask_ratio=cfg.mask_ratio)
    v, v_tok = v_all[:B], v_tok_all[:B]
    t, t_tok = model.encode_text(ids, normalize=True, return_tokens=True)
    scale = model.clamped_logit_scale()
    vtc = vtc_loss(v, t, scale, pos, extra_video_emb=v_all[B:])
    stats = {"vtc": vtc.item()}
    loss = vtc
    if batch.alt_captions is not None:  # present exactly when text_contrast > 0
        # Two phrasings of one meaning are positives, every other meaning a negative: the text tower
        # must tell "moves left" from "moves right" even while the video tower cannot yet, which
        # breaks the symmetric start where neither tower has a gradient to separate the two.
        t_alt = model.encode_text(tokenizer(batch.alt_captions).to(device), normalize=True)
        ttc = vtc_loss(t_alt, t, scale, pos)
        loss = loss + cfg.text_contrast * ttc
        stats["ttc"] = ttc.item()
    if cfg.vtm_weight > 0 and model.match_head is not None:
        length = int(ids.argmax(dim=1).max()) + 1  # drop all-padding columns: exact, and faster
        explicit = None
        if cfg.twin_negatives and len(batch.twins):
            a, b = (torch.from_numpy(batch.twins[:, i]) for i in (0, 1))
            explicit = (torch.cat([a, b]), torch.cat([b, a]))  # (text, video): each twin's text vs the other clip
        vtm, acc = vtm_loss(
            model,
            t_tok[:, :length],
            ids[:, :length],
            v_tok,
            (scale.exp() * (t @ v.t())).detach(),
            pos,
            gen,
            explicit=explicit,
            extra_video_tokens=v_tok_all[B:],
            extra_text_idx=None if shuffled is None else torch.from_numpy(shuffled[0]),
            easy_negatives=cfg.easy_negatives,
        )
        loss = loss + cfg.vtm_weight * vtm
        stats.update(vtm=vtm.item(), itm_acc=acc.item())
    stats["temp"] = 1.0 / scale.exp().item()
    return loss, stats


def _shuffled_copies(batch, count: int, gen: torch.Generator) -> tuple[np.ndarray, np.ndarray] | None:
    """(batch positions, uint8 frames) of up to ``count`` time-dependent clips with their frames permuted.

    A permutation that is the identity is replaced by the reversal, so every copy differs from its
    source in frame order, which is all that tells it apart.
    """
    candidates = np.flatnonzero(batch.asymmetric)
    if count <= 0 or not len(candidates):
        return None
    order = torch.randperm(len(candidates), generator=gen).numpy()[:count]
    chosen = candidates[order]
    T = batch.pixels.shape[1]
    copies = []
    for i in chosen:
        perm = torch.randperm(T, generator=gen).numpy()
        if (perm == np.arange(T)).all():
            perm = perm[::-1]
        copies.append(batch.pixels[i][perm])
    return chosen, np.stack(copies)


def train(cfg: TrainCfg, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> Path | None:
    """Run (or continue) a training run and write the project checkpoint to ``cfg.output``.

    ``stop_at`` ends this session early at that step, saving only the resume state (for running a
    long job in slices); the result is then None and ``--resume`` continues the same run.
    """
    with reproducible_torch(cfg.num_threads):
        return _train(cfg, resume, progress, stop_at)


def _train(cfg: TrainCfg, resume: bool, progress: bool, stop_at: int | None) -> Path | None:
    from retrieval.checkpoints import save_checkpoint
    from retrieval.factory import create_model_and_transforms
    from retrieval.training.data import ClipBatches

    device = torch.device(cfg.device)
    records, frames = prepare(cfg, progress)
    torch.manual_seed(cfg.seed)
    model, _, tokenizer = create_model_and_transforms(cfg.model, pretrained=cfg.init or "random", device=device)
    batches = ClipBatches(
        records,
        frames,
        cfg.batch_size,
        model.num_frames,
        cfg.seed,
        rephrase=cfg.rephrase,
        alt_phrasings=cfg.text_contrast > 0,
    )
    optimizer = make_optimizer(model, cfg)
    output = Path(cfg.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    start, elapsed = 0, 0.0
    if resume and state_path(output).is_file():
        start, elapsed = _load_state(state_path(output), model, optimizer, cfg)
        log.info("resuming %s at step %d", output, start)
    model.train()
    log_file = open(output.with_name(output.stem + ".log.jsonl"), "a" if start else "w")  # noqa: SIM115
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, unit="step", desc=f"train {cfg.model}", dynamic_ncols=True)
    t0, seen = time.perf_counter(), 0
    end = cfg.steps if stop_at is None else max(start, min(stop_at, cfg.steps))
    try:
        for step in range(start, end):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, cfg, group.get("peak_lr"))
            loss, stats = _batch_loss(model, batches.batch(step), tokenizer, cfg, step, device)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            seen += batches.batch_size
            rate = seen / max(1e-9, time.perf_counter() - t0)
            if bar is not None:
                bar.set_postfix(loss=f"{loss.item():.3f}", clips_s=f"{rate:.0f}", refresh=False)
                bar.update(1)
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                rec = {"step": step + 1, "loss": loss.item(), "lr": lr_at(step, cfg), "clips_per_s": rate, **stats}
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
            if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < cfg.steps:
                _save_state(state_path(output), model, optimizer, step + 1, elapsed + time.perf_counter() - t0)
    finally:
        if bar is not None:
            bar.close()
        log_file.close()
    wall = elapsed + time.perf_counter() - t0
    _save_state(state_path(output), model, optimizer, end, wall)
    if end < cfg.steps:
        log.info("stopped at step %d of %d; continue with --resume", end, cfg.steps)
        return None
    model.match_head_trained = cfg.vtm_weight > 0 and model.match_head is not None
    model.eval()
    dtype = torch.float16 if cfg.save_dtype == "float16" else None
    meta = {"train_config": cfg.to_dict(), "train_steps": cfg.steps, "train_wall_s": round(wall, 1)}
    save_checkpoint(model, output, metadata=meta, dtype=dtype)
    log.info("wrote %s after %d steps (%.0f s)", output, cfg.steps, wall)
    return output


def _save_state(path: Path, model, optimizer, step: int, wall: float) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "wall_s": wall}, tmp)
    os.replace(tmp, path)


def _load_state(path: Path, model, optimizer, cfg: TrainCfg) -> tuple[int, float]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except Exception as exc:  # noqa: BLE001 - any unreadable/mismatched state means "cannot resume"
        raise CheckpointError(f"cannot resume from {path}: {type(exc).__name__}: {str(exc)[:300]}") from exc
    return min(int(state["step"]), cfg.steps), float(state.get("wall_s", 0.0))
