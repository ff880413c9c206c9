"""The model's frame resize in numpy: torch's bicubic/bilinear upsampling (no antialias), without importing torch.

Why not torchvision: the decode workers resize every sampled frame, and importing torch and
torchvision costs each worker process 4 CPU-seconds before its first frame (a third of indexing a
few minutes of video on two cores). Without antialias each output pixel reads only 2 or 4 source
rows and columns, so the resize is a gather plus a few multiply-adds: cheaper than torch's path,
which first converts the whole full-resolution frame to float.

The arithmetic is torch's CPU kernel (``aten/src/ATen/native/UpSample.h``, align_corners=False):
float32 source coordinates ``scale * (i + 0.5) - 0.5``, Keys' cubic with A = -0.75 (bilinear:
coordinates clamped at 0), edge taps clamped, each row interpolated along x first and the rows then
combined along y, rounded half to even and clamped to 0..255 as torchvision's uint8 resize does.
Results equal torchvision's exactly or, where float contraction differs, by one level (tested).
"""

from __future__ import annotations

import numpy as np

_A = np.float32(-0.75)


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    def conv1(x):  # |x| <= 1
        return ((_A + np.float32(2)) * x - (_A + np.float32(3))) * x * x + np.float32(1)

    def conv2(x):  # 1 < |x| < 2
        return ((_A * x - np.float32(5) * _A) * x + np.float32(8) * _A) * x - np.float32(4) * _A

    one = np.float32(1)
    return np.stack([conv2(t + one), conv1(t), conv1(one - t), conv2((one - t) + one)], axis=1)


def _taps(in_size: int, out_size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Source indices [out, taps] and float32 weights [out, taps] along one axis."""
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32)
    real = scale * (dst + np.float32(0.5)) - np.float32(0.5)
    if mode == "bilinear":
        real = np.maximum(real, np.float32(0))
        i0 = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
        lam = np.clip(real - i0.astype(np.float32), 0, 1).astype(np.float32)
        idx = np.stack([i0, np.minimum(i0 + 1, in_size - 1)], axis=1)
        return idx, np.stack([np.float32(1) - lam, lam], axis=1)
    i0 = np.minimum(np.floor(real).astype(np.int64), in_size - 1)
    lam = np.clip(real - i0.astype(np.float32), 0, 1).astype(np.float32)
    idx = np.clip(i0[:, None] + np.arange(-1, 3), 0, in_size - 1)
    return idx, _cubic_weights(lam)


MODES = ("bicubic", "bilinear")


def resize_uint8(frames: np.ndarray, height: int, width: int, mode: str = "bicubic") -> np.ndarray:
    """uint8 [N,H,W,C] -> uint8 [N,height,width,C], torchvision's ``resize(antialias=False)`` of a uint8 tensor."""
    if mode not in MODES:
        raise ValueError(f"resize mode {mode!r}: numpy resize knows {MODES}")
    n, h, w, c = frames.shape
    yi, yw = _taps(h, height, mode)
    xi, xw = _taps(w, width, mode)
    rows = frames[:, yi]  # [N, height, taps, W, C]: only the rows the output reads
    cols = rows[:, :, :, xi].astype(np.float32)  # [N, height, ytaps, width, xtaps, C]
    acc = cols[..., 0, :] * xw[:, 0, None]  # along x, tap by tap (torch's order of additions)
    for k in range(1, xw.shape[1]):
        acc += cols[..., k, :] * xw[:, k, None]
    wy = yw[:, :, None, None]  # [height, ytaps, 1, 1]
    out = acc[:, :, 0] * wy[:, 0]
    for j in range(1, yw.shape[1]):
        out += acc[:, :, j] * wy[:, j]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
