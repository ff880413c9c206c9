"""Clip thumbnails: one JPEG per clip at ``thumbs/<clip id>.jpg`` in the data home, and a filmstrip
(the clip's sampled frames side by side, one square cell each) at ``filmstrips/<clip id>.jpg``.

Why one module: the indexer writes them while embedding, the server makes a missing one on first
request, and every delete or reconcile removes them; the file rules (atomic writes, names that say
which clip, stray temp files swept) live here once.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from retrieval.atomic import atomic_write_bytes
from retrieval.errors import DecodeError, NotFound
from retrieval.home import DataHome
from retrieval.settings import resolve


def fit_rgb(frame: np.ndarray, box: int):
    """An RGB frame (uint8 [H,W,3]) fitted into a ``box`` square with its aspect kept, as a PIL image.

    Why not one filter over the whole frame: a thumbnail is made for every clip and a filmstrip cell
    for every sampled frame, from full-resolution frames the decoder already turned into RGB for the
    model. Point-sampling down to ~4x the box, a box filter (PIL ``reduce``) to ~1x and a bilinear
    fit cost ~0.5 ms for a 96-px cell of a 720p frame, against ~3.5 ms for swscale's area filter
    from the decoded picture (measured), and look the same at that size.
    """
    from PIL import Image

    h, w = frame.shape[:2]
    step = max(h, w) // (4 * box)
    if step > 1:
        frame = frame[step // 2 :: step, step // 2 :: step]
    img = Image.fromarray(np.ascontiguousarray(frame))
    factor = max(img.size) // box
    if factor > 1:
        img = img.reduce(factor)
    img.thumbnail((box, box), Image.Resampling.BILINEAR)
    return img


def thumbnail_jpeg(frame: np.ndarray, max_side: int, quality: int = 82) -> bytes:
    """A small JPEG of one RGB frame (longest side ``max_side``), as the indexer stores it."""
    buf = io.BytesIO()
    fit_rgb(frame, max_side).save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue()


FILMSTRIP_CELL = 96  # pixels per frame of a filmstrip (square cells: the UI counts frames as width / height)


def filmstrip_jpeg(frames, cell: int = FILMSTRIP_CELL, quality: int = 75) -> bytes:
    """The frames (RGB uint8, any sizes) side by side, each fitted into a black ``cell`` x ``cell`` square."""
    from PIL import Image

    strip = Image.new("RGB", (cell * len(frames), cell))
    for i, frame in enumerate(frames):
        img = fit_rgb(frame, cell)
        strip.paste(img, (i * cell + (cell - img.width) // 2, (cell - img.height) // 2))
    buf = io.BytesIO()
    strip.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def write_thumbnail(home: DataHome, clip_id: int, jpeg) -> None:
    """Store a clip's thumbnail, or a (thumbnail, filmstrip) pair (not fsynced: a lost one is made again on request)."""
    strip = None
    if isinstance(jpeg, tuple):
        jpeg, strip = jpeg
    if jpeg is not None:
        atomic_write_bytes(home.thumbnail_path(clip_id), jpeg, durable=False)
    if strip is not None:
        home.filmstrips_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(home.filmstrip_path(clip_id), strip, durable=False)


def filmstrip_file(home: DataHome, rec, num_frames: int = 8) -> Path:
    """The clip's filmstrip; made from its video on first request (homes indexed before filmstrips existed)."""
    from retrieval.decode import read_frames

    path = home.filmstrip_path(rec.id)
    if path.is_file():
        return path
    src = Path(rec.path)
    if not src.is_file():
        raise NotFound(f"no filmstrip for clip {rec.id}: its video file is gone")
    first, last = int(rec.start_frame), max(int(rec.start_frame) + 1, int(rec.end_frame))
    edges = np.linspace(first, last, num_frames + 1)
    indices = sorted({int((a + b) / 2) for a, b in zip(edges[:-1], edges[1:], strict=True)})  # segment middles
    try:
        frames = read_frames(src, indices)
    except DecodeError as exc:
        raise NotFound(f"no filmstrip for clip {rec.id}: {exc.message}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, filmstrip_jpeg(list(frames)), durable=False)
    return path


def thumbnail_file(home: DataHome, rec) -> Path:
    """The clip's (``ClipRecord``) JPEG; made from its video on first request when the indexer did not."""
    from retrieval.decode import read_frames

    path = home.thumbnail_path(rec.id)
    if path.is_file():
        return path
    src = Path(rec.path)
    if not src.is_file():
        raise NotFound(f"no thumbnail for clip {rec.id}: its video file is gone")
    mid = max(0, (int(rec.start_frame) + int(rec.end_frame) - 1) // 2)
    try:
        frame = read_frames(src, [mid])[0]
    except DecodeError as exc:
        raise NotFound(f"no thumbnail for clip {rec.id}: {exc.message}") from exc
    size = int(resolve("thumbnail_size")) or 320
    atomic_write_bytes(path, thumbnail_jpeg(frame, size), durable=False)
    return path


def remove_thumbnails(home: DataHome, clip_ids: Iterable[int]) -> None:
    """Delete the thumbnails and filmstrips of removed clips (missing ones are fine)."""
    for cid in clip_ids:
        for path in (home.thumbnail_path(cid), home.filmstrip_path(cid)):
            try:
                os.unlink(path)
            except OSError:
                pass


def remove_orphan_thumbnails(home: DataHome, catalog_ids: np.ndarray) -> int:
    """Delete thumbnails and filmstrips of clips not in ``catalog_ids`` and stray temp files; returns how many."""
    return _remove_orphans(home.thumbs_dir, catalog_ids) + _remove_orphans(home.filmstrips_dir, catalog_ids)


def _remove_orphans(folder: Path, catalog_ids: np.ndarray) -> int:
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    names = [(e.name, e.path) for e in entries if e.name.endswith(".jpg") or e.name.endswith(".tmp")]
    ids = []
    for name, path in names:
        stem = name[:-4]
        if name.endswith(".tmp") or not stem.isdigit():
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
            continue
        ids.append((int(stem), path))
    if ids:
        arr = np.array([i for i, _ in ids], dtype=np.int64)
        orphan = ~np.isin(arr, catalog_ids)
        for k in np.flatnonzero(orphan):
            try:
                os.unlink(ids[k][1])
                removed += 1
            except OSError:
                pass
    return removed
