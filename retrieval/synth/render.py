"""Scene -> uint8 frames, drawn with numpy (no graphics dependency)."""

from __future__ import annotations

import numpy as np

from retrieval.synth import vocab as V
from retrieval.synth.scenes import Obj, Scene


def _mask(shape: str, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "square":
        s = 0.82 * r
        return (np.abs(u) <= s) & (np.abs(v) <= s)
    if shape == "triangle":  # equilateral, circumradius r, apex up at angle 0
        k = np.sqrt(3.0)
        return (v <= r / 2) & (k * u - v <= r) & (-k * u - v <= r)
    if shape == "cross":
        t = 0.32 * r
        return ((np.abs(u) <= t) & (np.abs(v) <= r)) | ((np.abs(v) <= t) & (np.abs(u) <= r))
    raise ValueError(f"unknown shape {shape!r}")


def _draw(frame: np.ndarray, obj: Obj, t: int, colour: np.ndarray, grid: tuple[np.ndarray, np.ndarray]) -> None:
    if not obj.visible[t]:
        return
    h, w = frame.shape[:2]
    gy, gx = grid
    dx, dy = gx - obj.x[t] * w, gy - obj.y[t] * h
    a = np.deg2rad(obj.angle[t])
    u = np.cos(a) * dx + np.sin(a) * dy  # rotate the sampling grid by -angle: the shape turns by +angle
    v = -np.sin(a) * dx + np.cos(a) * dy
    frame[_mask(obj.shape, u, v, obj.r[t] * w)] = colour


def render(scene: Scene, size: int = 96) -> np.ndarray:
    """-> uint8 [T, size, size, 3]."""
    T = len(scene.objects[0].x)
    bg = np.clip(np.add(V.BACKGROUNDS[scene.background], scene.jitter.get("bg", 0)), 0, 255).astype(np.uint8)
    frames = np.empty((T, size, size, 3), np.uint8)
    frames[:] = bg
    grid = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    jit = scene.jitter.get("obj", [[0, 0, 0]] * len(scene.objects))
    for i, obj in enumerate(scene.objects):
        colour = np.clip(np.add(V.COLOURS[obj.colour], jit[i]), 0, 255).astype(np.uint8)
        for t in range(T):
            _draw(frames[t], obj, t, colour, (grid[0], grid[1]))
    return frames
