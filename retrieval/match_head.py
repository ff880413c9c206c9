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
