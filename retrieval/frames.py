"""Which frames a clip is represented by, and how they become model input (no decoding here).

Sampling and the pixel transform follow the ViCLIP/InternVideo evaluation code exactly, because a
model sees its best accuracy only on inputs prepared the way it was trained.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from retrieval.config import PreprocessCfg
from retrieval.errors import InvalidInput
from retrieval.resize import MODES, resize_uint8

if TYPE_CHECKING:
    from torch import Tensor


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
    """uint8 frames [T,H,W,3] -> normalised float [T,3,S,S]: squash resize (no crop), /255, mean/std.

    Torch-free unless asked for a tensor (or an antialiased resize): the indexer's decode workers
    unpickle this object, and importing torch there would cost each worker seconds of start-up.
    """

    def __init__(self, image_size: int, cfg: PreprocessCfg | None = None):
        cfg = cfg or PreprocessCfg()
        self.image_size = image_size
        self.interpolation = str(cfg.interpolation)
        self.antialias = bool(cfg.antialias)
        self.mean = np.asarray(cfg.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(cfg.std, dtype=np.float32).reshape(1, 3, 1, 1)

    def resize(self, frames: np.ndarray) -> np.ndarray:
        """uint8 [T,H,W,3] -> uint8 [T,S,S,3], torchvision's resize of a uint8 tensor."""
        s = self.image_size
        if not self.antialias and self.interpolation in MODES:
            return resize_uint8(frames, s, s, self.interpolation)
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        x = TF.resize(x, [s, s], interpolation=InterpolationMode(self.interpolation), antialias=self.antialias)
        return x.permute(0, 2, 3, 1).contiguous().numpy()

    def array(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """The model input as float32 numpy [T,3,S,S] (what the decode workers ship)."""
        if isinstance(frames, (list, tuple)):
            frames = np.stack(frames)
        if not isinstance(frames, np.ndarray):  # a torch tensor
            frames = frames.numpy()
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InvalidInput(f"frames must be uint8 [T,H,W,3], got {frames.dtype} {tuple(frames.shape)}")
        x = self.resize(frames).transpose(0, 3, 1, 2).astype(np.float32)
        x /= np.float32(255.0)
        return (x - self.mean) / self.std

    def __call__(self, frames: np.ndarray | Tensor | Sequence[np.ndarray]) -> Tensor:
        import torch

        return torch.from_numpy(self.array(frames))

    def __repr__(self) -> str:
        return f"VideoTransform(size={self.image_size}, {self.interpolation}, antialias={self.antialias})"
