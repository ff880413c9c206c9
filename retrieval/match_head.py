"""InternVideo2-s2-style video-text matching head, sized for re-ranking without decoding video.

In InternVideo2-s2 the last BERT layers cross-attend from text tokens to all video tokens and an
``itm_head`` turns the fused ``[CLS]`` into 2-way match logits; the re-rank score is logit 1
alone. Keeping all 1+T·HW video tokens per clip is too large for an index, so this head attends
to a compact set: the class token plus one mean-pooled token per frame (stored as fp16 at
index time). Text tokens come from the CLIP text tower; the fused end-of-text token is scored.
With ``frame_positions`` set, each stored token slot gets a learned position, so frame order (and
hence the direction of motion) is visible to the head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import LayerNorm
from torch import Tensor, nn

from retrieval.config import MatchHeadCfg
from retrieval.errors import InvalidInput


class FusionBlock(nn.Module):
    """Pre-LN block: self-attention over text, cross-attention to video tokens, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, act_layer: type[nn.Module]):
        super().__init__()
        self.ln_self = LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_cross = LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_mlp = LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), act_layer(), nn.Linear(hidden, width))

    def forward(self, x: Tensor, video: Tensor, text_pad: Tensor) -> Tensor:
        h = self.ln_self(x)
        x = x + self.self_attn(h, h, h, key_padding_mask=text_pad, need_weights=False)[0]
        h = self.ln_cross(x)
        x = x + self.cross_attn(h, video, video, need_weights=False)[0]
        return x + self.mlp(self.ln_mlp(x))


class MatchHead(nn.Module):
    def __init__(self, cfg: MatchHeadCfg, text_width: int, video_width: int, act_layer: type[nn.Module]):
        super().__init__()
        self.text_in = nn.Linear(text_width, cfg.width)
        self.video_in = nn.Linear(video_width, cfg.width)
        self.ln_video = LayerNorm(cfg.width)
        # Cross-attention is blind to key order, so without this a clip and its time reversal look
        # alike to the head; one learned vector per slot (class token, frame 1..T) restores order.
        self.frame_embedding = (
            nn.Parameter(torch.zeros(cfg.frame_positions, cfg.width)) if cfg.frame_positions else None
        )
        self.blocks = nn.ModuleList(
            [FusionBlock(cfg.width, cfg.heads, cfg.mlp_ratio, act_layer) for _ in range(cfg.layers)]
        )
        self.ln_out = LayerNorm(cfg.width)
        self.itm = nn.Linear(cfg.width, 2)

    def forward(self, text_tokens: Tensor, token_ids: Tensor, video_tokens: Tensor) -> Tensor:
        """[B,L,Wt] text states, [B,L] ids, [B,N,Wv] video tokens -> [B,2] (no-match, match) logits."""
        video_tokens = video_tokens.to(self.video_in.weight.dtype)
        x = self.text_in(text_tokens)
        v = self.video_in(video_tokens)
        if self.frame_embedding is not None:
            if v.shape[1] != self.frame_embedding.shape[0]:
                raise InvalidInput(f"match head expects {self.frame_embedding.shape[0]} video tokens, got {v.shape[1]}")
            v = v + self.frame_embedding.to(v.dtype)
        v = self.ln_video(v)
        eot = token_ids.argmax(dim=-1)  # CLIP's end-of-text id is the largest in the vocabulary
        pad = torch.arange(token_ids.shape[1], device=token_ids.device)[None, :] > eot[:, None]
        for block in self.blocks:
            x = block(x, v, pad)
        fused = self.ln_out(x[torch.arange(x.shape[0], device=x.device), eot])
        return self.itm(fused)

    # ------------------------------------------------------------------ re-ranking many candidates
    def score(self, text_tokens: Tensor, token_ids: Tensor, video_tokens: Tensor, query_of: Tensor) -> Tensor:
        """[N,2] logits of N (text, video) pairs where many pairs share a text: :meth:`forward`'s result.

        ``text_tokens`` [Q,L,Wt] and ``token_ids`` [Q,L] are Q distinct texts, ``video_tokens``
        [N,Nv,Wv] one token set per pair, ``query_of`` [N] the text of each pair. The same
        arithmetic as ``forward(text_tokens[query_of], token_ids[query_of], video_tokens)``, up to
        float rounding (tested), without its repeats: everything before the first cross-attention
        (``text_in``, the first self-attention, the first cross-attention's query projection) is
        computed once per text rather than once per pair, and the last block computes its
        self-attention query, cross-attention and MLP for the end-of-text token only (the only
        row ``itm`` reads; the other rows are still keys and values of that self-attention).
        Shapes are read from the inputs, so a ``torch.jit.trace`` of it serves any Q, L and N.
        """
        dtype = self.video_in.weight.dtype
        text_tokens, video_tokens = text_tokens.to(dtype), video_tokens.to(dtype)
        v = self.video_in(video_tokens)
        if self.frame_embedding is not None:
            if v.shape[1] != self.frame_embedding.shape[0]:
                raise InvalidInput(f"match head expects {self.frame_embedding.shape[0]} video tokens, got {v.shape[1]}")
            v = v + self.frame_embedding.to(v.dtype)
        v = self.ln_video(v)
        eot = token_ids.argmax(dim=-1)  # [Q]
        keep = torch.arange(token_ids.shape[1], device=token_ids.device)[None, :] <= eot[:, None]  # [Q,L] keys
        x = self.text_in(text_tokens)  # [Q,L,W]: per text until the first cross-attention
        per_pair = False
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            h = block.ln_self(x)
            rows = eot if not per_pair else eot[query_of]
            mask = keep if not per_pair else keep[query_of]
            if i == last:  # only the end-of-text row is read after this block
                pick = torch.arange(x.shape[0], device=x.device)
                x = x[pick, rows][:, None]
                q_in = h[pick, rows][:, None]
            else:
                q_in = h
            x = x + _attend(block.self_attn, _project(block.self_attn, q_in, 0), h, h, mask[:, None, None, :])
            q = _project(block.cross_attn, block.ln_cross(x), 0)
            if not per_pair:  # from here on, every pair has its own video: expand texts to pairs
                x, q, per_pair = x[query_of], q[query_of], True
            x = x + _attend(block.cross_attn, q, v, v, None)
            x = x + block.mlp(block.ln_mlp(x))
        if not self.blocks:
            x = x[query_of][torch.arange(len(query_of), device=x.device), eot[query_of]][:, None]
        return self.itm(self.ln_out(x[:, 0]))


def _project(mha: nn.MultiheadAttention, x: Tensor, which: int) -> Tensor:
    """The query (0), key (1) or value (2) input projection of ``mha`` (packed weights, as built here)."""
    e = mha.embed_dim
    bias = mha.in_proj_bias[which * e : (which + 1) * e] if mha.in_proj_bias is not None else None
    return F.linear(x, mha.in_proj_weight[which * e : (which + 1) * e], bias)


def _attend(mha: nn.MultiheadAttention, q: Tensor, k_in: Tensor, v_in: Tensor, keep: Tensor | None) -> Tensor:
    """``mha(...)[0]`` given the projected queries ``q`` [B,Lq,E]; ``keep`` masks keys (True = attend)."""
    b, lq, e = q.shape
    heads = mha.num_heads
    d = e // heads
    k = _project(mha, k_in, 1)
    v = _project(mha, v_in, 2)
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, d).transpose(1, 2)  # noqa: E731
    out = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=keep)
    return mha.out_proj(out.transpose(1, 2).reshape(b, lq, e))
