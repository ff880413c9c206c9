"""Frames -> H.264 MP4 through PyAV (libx264, yuv420p, single thread so output is deterministic)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8, crf: int = 18) -> Path:
    """Write uint8 [T,H,W,3] frames atomically (temp file + rename): a killed run leaves no half file."""
    import av

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    T, H, W, _ = frames.shape
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1", "bframes": "0"}
        stream.codec_context.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)
    return path
