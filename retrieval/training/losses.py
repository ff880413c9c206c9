"""The two training objectives of ViCLIP + InternVideo2-s2, for in-batch training.

* VTC: symmetric InfoNCE between video and text embeddings. Clips that share a caption (or the same
  semantic key) are all positives of each other, so identical captions are not pushed apart.
* VTM: the matching head classifies (text, video) pairs. Per text one hard-negative video and per
  video one hard-negative text are *sampled* from the softmax of in-batch similarities, positives
  excluded — the s2 recipe, which focuses the head on the confusions the dual encoder makes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def positive_mask(keys: list) -> Tensor:
    """[B,B] bool: True where two batch items describe the same thing (the diagonal always)."""
    codes: dict = {}
    ids = torch.tensor([codes.setdefault(k, len(codes)) for k in keys])
    return ids[:, None] == ids[None, :]


def vtc_loss(video_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, pos: Tensor) -> Tensor:
    """Multi-positive symmetric InfoNCE: -log of the softmax mass on the positives, both directions.

    Embeddings must be L2-normalised; ``logit_scale`` is the (clamped) log inverse temperature.
    """
    logits = logit_scale.exp() * text_emb @ video_emb.t()  # [texts, videos]
    pos = pos.to(logits.device)
    neg_inf = torch.finfo(logits.dtype).min

    def one_way(lg: Tensor, p: Tensor) -> Tensor:
        return (torch.logsumexp(lg, dim=1) - torch.logsumexp(lg.masked_fill(~p, neg_inf), dim=1)).mean()

    return 0.5 * (one_way(logits, pos) + one_way(logits.t(), pos.t()))


def sample_hard_negatives(sim: Tensor, pos: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """For each row, one column index drawn from softmax(sim[row]) over the row's non-positives.

    A row whose every column is positive (a degenerate batch) gets -1 and must be skipped.
    """
    logits = sim.detach().float().masked_fill(pos.to(sim.device), float("-inf"))
    valid = torch.isfinite(logits).any(dim=1)
    probs = torch.softmax(logits.masked_fill(~valid[:, None], 0.0), dim=1)
    picks = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(sim.device)
    return torch.where(valid, picks, torch.full_like(picks, -1))


def vtm_loss(
    model,
    text_tokens: Tensor,
    token_ids: Tensor,
    video_tokens: Tensor,
    sim: Tensor,
    pos: Tensor,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Binary match loss over B positive pairs, B (text, hard video) and B (hard text, video) pairs.

    ``sim`` is the [texts, videos] in-batch similarity. Returns (loss, accuracy of the head).
    """
    B = sim.shape[0]
    idx = torch.arange(B, device=sim.device)
    neg_video = sample_hard_negatives(sim, pos, generator)  # for each text
    neg_text = sample_hard_negatives(sim.t(), pos.t(), generator)  # for each video
    tv, vt = neg_video >= 0, neg_text >= 0
    t_idx = torch.cat([idx, idx[tv], neg_text[vt]])
    v_idx = torch.cat([idx, neg_video[tv], idx[vt]])
    labels = torch.cat([torch.ones(B), torch.zeros(int(tv.sum()) + int(vt.sum()))]).long().to(sim.device)
    logits = model.match_logits(text_tokens[t_idx], token_ids[t_idx], video_tokens[v_idx])
    loss = F.cross_entropy(logits, labels)
    acc = (logits.argmax(dim=1) == labels).float().mean()
    return loss, acc
