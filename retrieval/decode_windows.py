"""Which decoded frame fills which clip window: the window assembly behind :meth:`retrieval.decode.Video.iter_windows`.

Why a module of its own: this is bookkeeping over frames the decoder hands out (which frame index
or time each window wants, which frame is near enough under ``frame_tolerance``, padding windows a
truncated file ends in), not decoding. It never imports a decoder: frames come from the open
:class:`~retrieval.decode.Video`'s ``_decoder`` and are converted with their own ``to_ndarray``, so
:mod:`retrieval.decode` stays the only module that imports one. The functions read and set the
video's counters (``frames_decoded``, ``incomplete_windows``, ``max_frame_offset``) as the methods
they came from did.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from retrieval.errors import InvalidInput

if TYPE_CHECKING:
    from retrieval.decode import Video

log = logging.getLogger("retrieval.decode")  # the messages of the reader these functions serve


def to_rgb(frame, rotation: int) -> np.ndarray:
    """A decoded frame as uint8 [H,W,3], rotated the way a player shows it."""
    arr = frame.to_ndarray(format="rgb24")
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(arr, k)) if k else arr


def iter_windows_reference(video: Video, windows: Sequence[Sequence[int]]) -> Iterator[tuple[int, np.ndarray]]:
    """``video.iter_windows`` from reference frames only (see :meth:`Video.iter_windows`); exact for what they cannot serve."""
    for idx in windows:
        if len(idx) == 0 or min(idx) < 0:
            yield from iter_windows_exact(video, windows)  # its errors
            return
    tol = video.frame_tolerance
    video.incomplete_windows = 0
    wanted: dict[int, list[tuple[int, int]]] = {}
    failed: set[int] = set()  # windows decoded exactly afterwards
    for w, idx in enumerate(windows):
        for slot, i in enumerate(idx):
            if int(i) >= len(video._times):  # past the frames the file lists: the exact path pads
                failed.add(w)
            wanted.setdefault(int(i), []).append((w, slot))
    targets = sorted(i for i in wanted if i < len(video._times))
    remaining = [len(idx) for idx in windows]
    buffers: dict[int, list] = {}
    video.frames_decoded = 0
    rotation = video.info.rotation
    prev = None  # (time, frame, rgb or None) of the last decoded frame
    p = 0

    def assign(target: int, chosen, offset: float):
        if offset > tol + 1e-9:
            failed.update(w for w, _ in wanted[target])
            return
        if chosen[2] is None:
            chosen[2] = to_rgb(chosen[1], rotation)
        video.max_frame_offset = max(video.max_frame_offset, offset)
        for w, slot in wanted[target]:
            buffers.setdefault(w, [None] * len(windows[w]))[slot] = chosen[2]
            remaining[w] -= 1
            if remaining[w] == 0 and w not in failed:
                finished.append(w)

    finished: list[int] = []
    for frame in video._decoder(reference_only=True):
        if frame.pts is None or video._time_base is None:
            failed.update(range(len(windows)))  # cannot place frames in time: decode exactly
            break
        cur = [frame.pts * video._time_base - video._time_origin, frame, None]
        video.frames_decoded = int(np.searchsorted(video._times, cur[0] + 1e-6, side="right"))
        while p < len(targets) and video._times[targets[p]] <= cur[0] + 1e-9:
            t = video._times[targets[p]]
            near = prev if prev is not None and t - prev[0] <= cur[0] - t else cur
            assign(targets[p], near, abs(near[0] - t))
            p += 1
        for w in finished:
            yield w, np.stack(buffers.pop(w))
        finished.clear()
        prev = cur
        if p == len(targets):
            break
    while p < len(targets):  # past the last decoded frame
        if prev is None:
            failed.update(w for w, _ in wanted[targets[p]])
        else:
            assign(targets[p], prev, abs(video._times[targets[p]] - prev[0]))
        p += 1
    for w in finished:
        yield w, np.stack(buffers.pop(w))
    video.close()
    redo = sorted(failed)
    if redo:
        log.debug("%s: %d windows decoded exactly (no reference frame within %.3f s)", video.path.name, len(redo), tol)
        offset = video.max_frame_offset
        for j, frames in iter_windows_exact(video, [windows[w] for w in redo]):
            yield redo[j], frames
        video.max_frame_offset = offset


def iter_windows_exact(video: Video, windows: Sequence[Sequence[int]]) -> Iterator[tuple[int, np.ndarray]]:
    """``video.iter_windows`` decoding every frame, front to back; pads the windows a truncated file ends in."""
    video.incomplete_windows = 0
    wanted: dict[int, list[tuple[int, int]]] = {}
    remaining: list[int] = []
    for w, idx in enumerate(windows):
        if len(idx) == 0:
            raise InvalidInput(f"window {w} has no frame indices")
        if min(idx) < 0:
            raise InvalidInput("frame indices must be non-negative")
        remaining.append(len(idx))
        for slot, i in enumerate(idx):
            wanted.setdefault(int(i), []).append((w, slot))
    buffers: dict[int, list] = {}  # window -> per slot RGB frame or None
    last_needed = max(wanted) if wanted else -1
    video.frames_decoded = 0
    rotation = video.info.rotation
    done: set[int] = set()
    for i, frame in enumerate(video._decoder()):
        video.frames_decoded = i + 1
        users = wanted.get(i)
        if users:
            arr = to_rgb(frame, rotation)
            for w, slot in users:
                buf = buffers.setdefault(w, [None] * len(windows[w]))
                buf[slot] = arr
                remaining[w] -= 1
                if remaining[w] == 0:
                    done.add(w)
                    yield w, np.stack(buffers.pop(w))
        if i >= last_needed:
            break
    video.incomplete_windows = 0
    for w in sorted(buffers):  # file ended early: pad partially decoded windows
        buf = buffers[w]
        got = [b for b in buf if b is not None]
        if not got:
            continue
        video.incomplete_windows += 1
        filled, prev = [], got[0]
        for b in buf:
            prev = b if b is not None else prev
            filled.append(prev)
        yield w, np.stack(filled)
    video.close()
