"""Which frames a clip is represented by, and how they become model input (no decoding here).

Sampling and the pixel transform follow the ViCLIP/InternVideo evaluation code exactly, because a
model sees its best accuracy only on inputs prepared the way it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from retrieval.config import PreprocessCfg
from retrieval.errors import InvalidInput


def _segments(vlen: int, n: int) -> np.ndarray:
    if vlen <= 0:
        raise InvalidInput("a clip needs at least one frame")
    if n <= 0:
        raise InvalidInput("number of frames to sample must be positive")
    return np.linspace(0, vlen, min(n, vlen) + 1).astype(int)


def _pad(indices: list[int], n: int) -> list[int]:
    return indices + [indices[-1]] * (n - len(indices))


def middle_indices(vlen: int, n: int) -> list[int]:
    """Middle frame of each of n equal segments (evaluation and indexing); padded with the last."""
    b = _segments(vlen, n)
    return _pad([int((b[i] + b[i + 1] - 1) // 2) for i in range(len(b) - 1)], n)


def random_indices(vlen: int, n: int, rng: np.random.Generator) -> list[int]:
    """A random frame inside each of n equal segments (training augmentation)."""
    b = _segments(vlen, n)
    return _pad([int(rng.integers(b[i], b[i + 1])) for i in range(len(b) - 1)], n)


class VideoTransform:
    """uint8 frames [T,H,W,3] -> normalised float [T,3,S,S]: squash resize (no crop), /255, mean/std."""

    def __init__(self, image_size: int, cfg: PreprocessCfg | None = None):
        cfg = cfg or PreprocessCfg()
        self.image_size = image_size
        self.interpolation = InterpolationMode(cfg.interpolation)
        self.antialias = cfg.antialias
        self.mean = torch.tensor(cfg.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.std).view(1, 3, 1, 1)

    def __call__(self, frames: np.ndarray | Tensor | Sequence[np.ndarray]) -> Tensor:
        if isinstance(frames, (list, tuple)):
            frames = np.stack(frames)
        x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise InvalidInput(f"frames must be uint8 [T,H,W,3], got {x.dtype} {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)
        size = [self.image_size, self.image_size]
        x = TF.resize(x, size, interpolation=self.interpolation, antialias=self.antialias)
        x = x.float().div_(255.0)
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return f"VideoTransform(size={self.image_size}, {self.interpolation.value}, antialias={self.antialias})"
