"""The two training objectives of ViCLIP + InternVideo2-s2, for in-batch training.

* VTC: symmetric InfoNCE between video and text embeddings. Clips that share a caption (or the same
  semantic key) are all positives of each other, so identical captions are not pushed apart.
* VTM: the matching head classifies (text, video) pairs. Per text one hard-negative video and per
  video one hard-negative text are *sampled* from ``softmax(sim / temperature)`` over the batch,
  positives excluded — the s2 recipe (InternVideo2/UMT ``criterions.py``), which focuses the head on
  the confusions the dual encoder makes. Sampling from the raw cosine instead is nearly uniform and
  leaves the head a trivial task. Explicit extra negatives (a clip's generated twin, frame-shuffled
  copies) are added on top, because those are exactly the pairs a search must order correctly.
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


def vtc_loss(
    video_emb: Tensor, text_emb: Tensor, logit_scale: Tensor, pos: Tensor, extra_video_emb: Tensor | None = None
) -> Tensor:
    """Multi-positive symmetric InfoNCE: -log of the softmax mass on the positives, both directions.

    Embeddings must be L2-normalised; ``logit_scale`` is the (clamped) log inverse temperature.
    ``extra_video_emb`` are videos that match no text in the batch (frame-shuffled copies): extra
    columns of the text->video softmax only.
    """
    logits = logit_scale.exp() * text_emb @ video_emb.t()  # [texts, videos]
    pos = pos.to(logits.device)
    neg_inf = torch.finfo(logits.dtype).min

    def one_way(lg: Tensor, p: Tensor) -> Tensor:
        return (torch.logsumexp(lg, dim=1) - torch.logsumexp(lg.masked_fill(~p, neg_inf), dim=1)).mean()

    t2v, t2v_pos = logits, pos
    if extra_video_emb is not None and len(extra_video_emb):
        t2v = torch.cat([logits, logit_scale.exp() * text_emb @ extra_video_emb.t()], dim=1)
        t2v_pos = torch.cat([pos, pos.new_zeros(pos.shape[0], len(extra_video_emb))], dim=1)
    return 0.5 * (one_way(t2v, t2v_pos) + one_way(logits.t(), pos.t()))


def sample_hard_negatives(logits: Tensor, pos: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """For each row, one column index drawn from softmax(logits[row]) over the row's non-positives.

    ``logits`` are similarities already divided by the temperature. A row whose every column is
    positive (a degenerate batch) gets -1 and must be skipped.
    """
    logits = logits.detach().float().masked_fill(pos.to(logits.device), float("-inf"))
    valid = torch.isfinite(logits).any(dim=1)
    probs = torch.softmax(logits.masked_fill(~valid[:, None], 0.0), dim=1)
    picks = torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(logits.device)
    return torch.where(valid, picks, torch.full_like(picks, -1))


def vtm_loss(
    model,
    text_tokens: Tensor,
    token_ids: Tensor,
    video_tokens: Tensor,
    logits: Tensor,
    pos: Tensor,
    generator: torch.Generator | None = None,
    explicit: tuple[Tensor, Tensor] | None = None,
    extra_video_tokens: Tensor | None = None,
    extra_text_idx: Tensor | None = None,
    easy_negatives: bool = False,
) -> tuple[Tensor, Tensor]:
    """Binary match loss over B positive pairs, B (text, hard video) and B (hard text, video) pairs.

    ``logits`` is the [texts, videos] in-batch similarity divided by the temperature (the hard
    negatives are sampled from its softmax). ``explicit`` adds known negative (text, video) index
    pairs (generated twins); ``extra_video_tokens`` are token sets of videos that match no text
    (frame-shuffled copies), each paired with the text at ``extra_text_idx`` as a negative.
    ``easy_negatives`` adds one uniformly drawn negative video per text and text per video: a head
    trained from scratch on hard negatives alone sees positives and negatives that look alike to
    its untrained features, and settles on predicting the class prior; the easy pairs give it a
    gradient to start from. Returns (loss, accuracy of the head).
    """
    B = logits.shape[0]
    dev = logits.device
    idx = torch.arange(B, device=dev)
    neg_video = sample_hard_negatives(logits, pos, generator)  # for each text
    neg_text = sample_hard_negatives(logits.t(), pos.t(), generator)  # for each video
    tv, vt = neg_video >= 0, neg_text >= 0
    t_parts, v_parts = [idx, idx[tv], neg_text[vt]], [idx, neg_video[tv], idx[vt]]
    if easy_negatives:
        flat = torch.zeros_like(logits)
        easy_video = sample_hard_negatives(flat, pos, generator)
        easy_text = sample_hard_negatives(flat.t(), pos.t(), generator)
        ev, et = easy_video >= 0, easy_text >= 0
        t_parts += [idx[ev], easy_text[et]]
        v_parts += [easy_video[ev], idx[et]]
    if explicit is not None and len(explicit[0]):
        t_parts.append(explicit[0].to(dev))
        v_parts.append(explicit[1].to(dev))
    t_idx, v_idx = torch.cat(t_parts), torch.cat(v_parts)
    texts, ids, videos = text_tokens[t_idx], token_ids[t_idx], video_tokens[v_idx]
    if extra_video_tokens is not None and len(extra_video_tokens):
        e = extra_text_idx.to(dev)
        texts = torch.cat([texts, text_tokens[e]])
        ids = torch.cat([ids, token_ids[e]])
        videos = torch.cat([videos, extra_video_tokens])
    labels = torch.zeros(len(videos), dtype=torch.long, device=dev)
    labels[:B] = 1
    out = model.match_logits(texts, ids, videos)
    loss = F.cross_entropy(out, labels)
    acc = (out.argmax(dim=1) == labels).float().mean()
    return loss, acc
