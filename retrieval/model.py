"""The ViCLIP-style dual encoder plus its optional s2-style matching head."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, TextTransformer
from torch import Tensor, nn

from retrieval.config import ModelCfg
from retrieval.match_head import MatchHead
from retrieval.text_prefix import encode_text_prefix
from retrieval.video_tower import VideoTower

MAX_LOGIT_SCALE = math.log(100.0)  # ViCLIP clamps temp >= 1/100


class VideoTextModel(nn.Module):
    """Video tower + CLIP text tower sharing one embedding space, and a re-ranking head.

    Parameter names follow open_clip (``visual.*``) and open_clip's separate text tower
    (``text.*``), so open_clip and ViCLIP weights map onto this module key for key.
    """

    def __init__(self, cfg: ModelCfg):
        super().__init__()
        self.config = cfg
        act = QuickGELU if cfg.quick_gelu else nn.GELU
        self.visual = VideoTower(cfg.vision, cfg.embed_dim, act)
        t = cfg.text
        self.text = TextTransformer(
            context_length=t.context_length,
            vocab_size=t.vocab_size,
            width=t.width,
            heads=t.heads,
            layers=t.layers,
            mlp_ratio=t.mlp_ratio,
            output_dim=cfg.embed_dim,
            act_layer=act,
            output_tokens=True,
        )
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.init_logit_scale)))
        self.match_head = (
            MatchHead(cfg.match_head, t.width, cfg.vision.width, act) if cfg.match_head is not None else None
        )
        # False until weights that include a trained head are loaded (foreign CLIP/ViCLIP weights have none).
        self.match_head_trained = False
        # Fitted fusion of ITC and head scores + calibration (retrieval.calibration); shipped in the
        # checkpoint's metadata because it belongs to these weights. None: rank by the head alone.
        self.ranking = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def num_frames(self) -> int:
        return self.config.vision.num_frames

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def context_length(self) -> int:
        return self.config.text.context_length

    def encode_video(
        self, pixels: Tensor, normalize: bool = False, return_tokens: bool = False, mask_ratio: float = 0.0
    ):
        """[B,T,3,H,W] -> [B,D]; with return_tokens also the [B,1+T,Wv] set the match head reads."""
        out = self.visual(pixels, mask_ratio=mask_ratio, return_tokens=return_tokens)
        emb, tokens = out if return_tokens else (out, None)
        if normalize:
            emb = F.normalize(emb, dim=-1)
        return (emb, tokens) if return_tokens else emb

    def encode_text(self, token_ids: Tensor, normalize: bool = False, return_tokens: bool = False):
        """[B,L] ids -> [B,D]; with return_tokens also the [B,L,Wt] final-layer text states (zeros after
        the batch's last end-of-text token: see :mod:`retrieval.text_prefix`)."""
        emb, tokens = encode_text_prefix(self.text, token_ids)
        if normalize:
            emb = F.normalize(emb, dim=-1)
        return (emb, tokens) if return_tokens else emb

    def clamped_logit_scale(self) -> Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE)

    def match_logits(self, text_tokens: Tensor, token_ids: Tensor, video_tokens: Tensor) -> Tensor:
        if self.match_head is None:
            raise RuntimeError(f"model {self.name!r} has no matching head (config 'match_head' is null)")
        return self.match_head(text_tokens, token_ids, video_tokens)

    def match_score(self, text_tokens: Tensor, token_ids: Tensor, video_tokens: Tensor) -> Tensor:
        """The re-rank score: the 'match' logit alone, as InternVideo2-s2 ranks its candidates."""
        return self.match_logits(text_tokens, token_ids, video_tokens)[:, 1]

    def forward(self, pixels: Tensor, token_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (
            self.encode_video(pixels, normalize=True),
            self.encode_text(token_ids, normalize=True),
            self.clamped_logit_scale().exp(),
        )
