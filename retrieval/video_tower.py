"""CLIP's vision transformer inflated to video, as ViCLIP does it.

Built on open_clip's ``VisionTransformer`` so that its parameter names (``conv1``,
``class_embedding``, ``positional_embedding``, ``ln_pre``, ``transformer``, ``ln_post``, ``proj``)
are exactly open_clip's, and CLIP image weights load unchanged. The only new parameter is the
learned ``temporal_positional_embedding`` (zero-initialised, so an untrained model behaves exactly
like CLIP applied per frame). Attention is joint over ``[cls] + T·HW`` tokens.
"""

from __future__ import annotations

import torch
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn

from retrieval.config import VisionCfg
from retrieval.errors import InvalidInput


class VideoTower(VisionTransformer):
    def __init__(self, cfg: VisionCfg, embed_dim: int, act_layer: type[nn.Module]):
        super().__init__(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            width=cfg.width,
            layers=cfg.layers,
            heads=cfg.heads,
            mlp_ratio=cfg.mlp_ratio,
            output_dim=embed_dim,
            act_layer=act_layer,
        )
        self.num_frames = cfg.num_frames
        self.temporal = cfg.temporal
        # Zero init: training starts from "CLIP per frame"; the frame-average baseline never uses it.
        self.temporal_positional_embedding = nn.Parameter(torch.zeros(1, cfg.num_frames, cfg.width))

    def forward(self, pixels: Tensor, mask_ratio: float = 0.0, return_tokens: bool = False):  # type: ignore[override]
        """pixels: [B, T, 3, H, W] with T == num_frames or T == 1 (the image path)."""
        if pixels.ndim == 4:
            pixels = pixels.unsqueeze(1)
        if pixels.ndim != 5:
            raise InvalidInput(f"video pixels must be [B,T,3,H,W], got shape {tuple(pixels.shape)}")
        B, T = pixels.shape[:2]
        if T not in (1, self.num_frames):
            raise InvalidInput(
                f"this model takes {self.num_frames} frames per clip (or 1), got {T}; "
                f"load it with num_frames={T} to adapt the temporal embedding"
            )
        if self.temporal == "frame_mean":
            return self._frame_mean(pixels, return_tokens)
        return self._joint(pixels, mask_ratio, return_tokens)

    def _patch_tokens(self, frames: Tensor) -> Tensor:
        x = self.conv1(frames)  # [BT, W, gh, gw]
        return x.flatten(2).transpose(1, 2)  # [BT, HW, W]

    def _joint(self, pixels: Tensor, mask_ratio: float, return_tokens: bool):
        B, T = pixels.shape[:2]
        x = self._patch_tokens(pixels.flatten(0, 1))
        HW, W = x.shape[1], x.shape[2]
        pos = self.positional_embedding.to(x.dtype)
        x = (x + pos[1:]).view(B, T, HW, W)
        tpe = self.temporal_positional_embedding.to(x.dtype)
        tpe = tpe.mean(1, keepdim=True) if T == 1 else tpe  # T=1: the reference adds the mean
        x = x + tpe[:, :, None, :]  # patch tokens only; the class token gets none
        x = x.permute(0, 2, 1, 3).reshape(B, HW * T, W)  # (n t) order, as the reference
        frame_of = torch.arange(T, device=x.device).repeat(HW)  # frame index of each patch token
        if mask_ratio > 0.0:
            x, frame_of = _drop_tokens(x, frame_of, mask_ratio)
        cls = (self.class_embedding.to(x.dtype) + pos[0]).expand(B, 1, W)
        x = torch.cat([cls, x], dim=1)
        x = self.ln_pre(x)
        x = self.transformer(x)
        x = self.ln_post(x)
        pooled = x[:, 0] @ self.proj
        if not return_tokens:
            return pooled
        return pooled, torch.cat([x[:, :1], _frame_means(x[:, 1:], frame_of, T)], dim=1)

    def _frame_mean(self, pixels: Tensor, return_tokens: bool):
        """The frame-average CLIP baseline: each frame is an image, embeddings are averaged."""
        B, T = pixels.shape[:2]
        x = self._embeds(pixels.flatten(0, 1))  # open_clip's image path: cls + pos + ln_pre
        x = self.ln_post(self.transformer(x))
        cls = x[:, 0].view(B, T, -1)
        pooled = (cls @ self.proj).mean(1)
        if not return_tokens:
            return pooled
        return pooled, torch.cat([cls.mean(1, keepdim=True), cls], dim=1)


def _drop_tokens(x: Tensor, frame_of: Tensor, ratio: float) -> tuple[Tensor, Tensor]:
    """ViCLIP's training-time masking: drop exactly int(ratio·L) patch tokens per sample."""
    B, L, _ = x.shape
    keep = L - int(ratio * L)
    order = torch.rand(B, L, device=x.device).argsort(dim=1)[:, :keep]
    x = torch.gather(x, 1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return x, frame_of[order]


def _frame_means(tokens: Tensor, frame_of: Tensor, T: int) -> Tensor:
    """Mean patch token of each frame: the compact per-frame summary the matching head attends to."""
    B, L, W = tokens.shape
    if frame_of.ndim == 1:
        frame_of = frame_of.expand(B, L)
    sums = tokens.new_zeros(B, T, W).scatter_add_(1, frame_of.unsqueeze(-1).expand(-1, -1, W), tokens)
    counts = tokens.new_zeros(B, T).scatter_add_(1, frame_of, tokens.new_ones(B, L))
    return sums / counts.clamp_min(1).unsqueeze(-1)
