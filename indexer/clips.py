"""Cutting a video into clips and choosing the frames that represent each clip.

Defaults (settings ``clip_seconds``/``clip_stride``): 4-second clips, back to back. Why 4 s: the
model sees T=8 frames per clip, and at 4 s that is one frame every half second, the density ViCLIP
was trained on (InternVid clips average ~10 s, MSR-VTT test clips 10-30 s sampled to 8 frames);
shorter clips give finer moments but more vectors to store and search.

Rules:
* a video no longer than one clip is one clip covering all of it;
* otherwise clips start at 0, stride, 2*stride, ... while a full clip fits, and one last clip is
  aligned to the end of the video, so every clip has the full length and the tail is covered
  (it overlaps the previous clip instead of being a 0.3-second stub);
* the frames of a clip are the middle frames of T equal segments of the frames whose timestamps
  fall inside it (:func:`retrieval.frames.middle_indices`, the evaluation protocol), so variable
  frame rate videos are sampled by time, not by position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retrieval.errors import InvalidInput
from retrieval.frames import middle_indices

_EPS = 1e-6


@dataclass(frozen=True)
class ClipPlan:
    idx: int
    start: float  # seconds
    end: float
    start_frame: int
    end_frame: int  # exclusive
    indices: tuple[int, ...]  # the T frames the model sees


def clip_bounds(duration: float, clip_seconds: float, stride: float) -> list[tuple[float, float]]:
    """(start, end) seconds of every clip of a video of ``duration`` seconds."""
    if clip_seconds <= 0 or stride <= 0:
        raise InvalidInput("clip length and stride must be positive")
    if duration <= clip_seconds + _EPS:
        return [(0.0, max(0.0, float(duration)))]
    bounds = []
    start = 0.0
    while start + clip_seconds <= duration + _EPS:
        bounds.append((start, start + clip_seconds))
        start = round(start + stride, 6)
    if bounds[-1][1] < duration - 0.01:
        bounds.append((max(0.0, float(duration) - clip_seconds), float(duration)))
    return [(round(float(a), 6), round(float(b), 6)) for a, b in bounds]


def plan_clips(
    times: np.ndarray, duration: float, clip_seconds: float, stride: float, num_frames: int
) -> list[ClipPlan]:
    """Clips of a video whose frames are shown at ``times`` (seconds, ascending)."""
    times = np.asarray(times, dtype=np.float64)
    n = len(times)
    if n == 0:
        return []
    plans = []
    for idx, (start, end) in enumerate(clip_bounds(max(duration, float(times[-1])), clip_seconds, stride)):
        first = int(np.searchsorted(times, start - _EPS, side="left"))
        last = int(np.searchsorted(times, end - _EPS, side="left"))  # exclusive
        if idx == 0:
            first = 0
        if end >= duration - _EPS:
            last = n
        if last <= first:  # no frame starts inside (a gap in a variable frame rate video)
            first = max(0, min(n - 1, int(np.searchsorted(times, start, side="right")) - 1))
            last = first + 1
        sel = tuple(first + i for i in middle_indices(last - first, num_frames))
        plans.append(ClipPlan(idx, start, end, first, last, sel))
    return plans
