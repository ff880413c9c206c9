"""Training data: a generated split decoded once into a uint8 frame cache at model resolution.

Decoding dominates on a CPU, so every clip is decoded a single time (through the same decode path
and resize as indexing and evaluation) into ``<data>/cache/frames_<size>x<frames>.npy``; epochs then
read frames from memory and only pick which frames to use (a random frame per segment).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from retrieval.config import PreprocessCfg
from retrieval.errors import DecodeError, InvalidInput
from retrieval.frames import VideoTransform, middle_indices, random_indices

log = logging.getLogger(__name__)
CACHE_FRAMES = 16  # frames kept per clip; training samples T of them


def resize_frames(frames: np.ndarray, size: int, interpolation: str = "bicubic", antialias: bool = False) -> np.ndarray:
    """uint8 [N,H,W,3] -> uint8 [N,size,size,3], the resize VideoTransform applies (so cached = live)."""
    cfg = PreprocessCfg(interpolation=interpolation, antialias=antialias)
    return VideoTransform(size, cfg).resize(np.ascontiguousarray(frames))


def _cache_path(data_dir: Path, records: list[dict], size: int, frames: int) -> Path:
    digest = hashlib.sha1("\n".join(r["path"] for r in records).encode()).hexdigest()[:10]
    return data_dir / "cache" / f"frames_{size}x{frames}_{digest}.npy"


def decode_clip(path: Path, size: int, frames: int = CACHE_FRAMES, preprocess_cfg=None) -> np.ndarray:
    from retrieval.decode import probe, read_frames

    info = probe(path)
    raw = read_frames(path, middle_indices(info.num_frames, frames))
    kw = (
        {}
        if preprocess_cfg is None
        else {"interpolation": preprocess_cfg.interpolation, "antialias": preprocess_cfg.antialias}
    )
    return resize_frames(raw, size, **kw)


def frame_cache(
    data_dir: str | os.PathLike, records: list[dict], size: int, frames: int = CACHE_FRAMES, progress: bool = False
) -> np.ndarray:
    """uint8 [N, frames, size, size, 3] for ``records``, built once and memory-mapped afterwards."""
    data_dir = Path(data_dir)
    path = _cache_path(data_dir, records, size, frames)
    if path.is_file():
        arr = np.load(path, mmap_mode="r")
        if arr.shape == (len(records), frames, size, size, 3):
            return arr
        log.warning("ignoring stale frame cache %s (shape %s)", path, arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.empty((len(records), frames, size, size, 3), np.uint8)
    items = enumerate(records)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=len(records), unit="clip", desc="decoding training clips")
    for i, rec in items:
        try:
            out[i] = decode_clip(data_dir / rec["path"], size, frames)
        except DecodeError as exc:
            raise InvalidInput(f"training clip {rec['path']} cannot be decoded: {exc.message}") from exc
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
    return out


@dataclass
class Batch:
    """One training step's clips: pixels, captions, semantic keys, and the known hard negatives."""

    pixels: np.ndarray  # uint8 [B,T,S,S,3]
    captions: list[str]
    keys: list[str]  # equal keys = same meaning (positives of each other)
    twins: np.ndarray  # int [P,2]: (a, b) batch positions of generated twins whose meanings differ
    asymmetric: np.ndarray  # bool [B]: shuffling this clip's frames changes what it shows
    alt_captions: list[str] | None = None  # a second phrasing of each caption (text contrast), or None


def time_asymmetric(record: dict) -> bool:
    """Whether a clip's caption depends on frame order (a still or two-object layout does not)."""
    kind = record.get("kind")
    if kind == "order":
        return True
    return kind == "single" and (record.get("attributes") or {}).get("motion") not in (None, "still")


def rephrase(record: dict, rng: np.random.Generator) -> str:
    """A fresh phrasing of a generated clip's meaning, so the text tower learns meanings, not strings."""
    attrs, kind = record.get("attributes"), record.get("kind")
    if not isinstance(attrs, dict) or kind not in ("single", "binding", "order"):
        return record["caption"]
    from retrieval.synth.scenes import Scene, caption

    return caption(Scene(kind, attrs, [], attrs.get("background", "")), rng)


class ClipBatches:
    """Deterministic batches for step ``n`` of a run seeded with ``seed``.

    Clips of one ``group`` (generated hard-negative twins) stay in the same batch; the order of
    groups is a fresh permutation each epoch. Everything is a pure function of (seed, step), which
    is what makes ``--resume`` continue exactly where a run stopped.
    """

    def __init__(
        self,
        records: list[dict],
        frames: np.ndarray,
        batch_size: int,
        num_frames: int,
        seed: int,
        rephrase: bool = False,
        alt_phrasings: bool = False,
    ):
        if len(records) < 2:
            raise InvalidInput("training needs at least 2 clips")
        self.records, self.frames = records, frames
        self.batch_size, self.num_frames, self.seed = min(batch_size, len(records)), num_frames, seed
        self.rephrase, self.alt_phrasings = rephrase, alt_phrasings
        groups: dict = {}
        for i, r in enumerate(records):
            groups.setdefault(r.get("group", f"clip{i}"), []).append(i)
        self.groups = list(groups.values())
        self.group_of = np.empty(len(records), int)
        for g, members in enumerate(self.groups):
            self.group_of[members] = g
        self.asymmetric = np.array([time_asymmetric(r) for r in records])
        self.keys = [r.get("key") or r["caption"] for r in records]
        self.steps_per_epoch = max(1, len(records) // self.batch_size)
        self._epoch, self._order = -1, np.empty(0, int)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, 7, epoch])
            perm = rng.permutation(len(self.groups))
            self._order = np.array([i for g in perm for i in self.groups[g]])
            self._epoch = epoch
        return self._order

    def indices(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.steps_per_epoch)
        order = self._epoch_order(epoch)
        return order[pos * self.batch_size : (pos + 1) * self.batch_size]

    def _twins(self, idx: np.ndarray) -> np.ndarray:
        by_group: dict[int, list[int]] = {}
        for pos, i in enumerate(idx):
            by_group.setdefault(int(self.group_of[i]), []).append(pos)
        pairs = [
            (a, b)
            for members in by_group.values()
            for a, b in itertools.combinations(members, 2)
            if self.keys[idx[a]] != self.keys[idx[b]]
        ]
        return np.array(pairs, int).reshape(-1, 2)

    def batch(self, step: int) -> Batch:
        idx = self.indices(step)
        rng = np.random.default_rng([self.seed, 11, step])
        cached = self.frames.shape[1]
        picks = np.array([random_indices(cached, self.num_frames, rng) for _ in idx])
        pixels = np.stack([self.frames[i][p] for i, p in zip(idx, picks, strict=True)])
        if self.rephrase:
            text_rng = np.random.default_rng([self.seed, 13, step])
            caps = [rephrase(self.records[i], text_rng) for i in idx]
        else:
            caps = [self.records[i]["caption"] for i in idx]
        keys = [self.keys[i] for i in idx]
        alt = None
        if self.alt_phrasings:
            alt_rng = np.random.default_rng([self.seed, 17, step])
            alt = [rephrase(self.records[i], alt_rng) for i in idx]
        return Batch(pixels, caps, keys, self._twins(idx), self.asymmetric[idx], alt)


def normalize(pixels: np.ndarray, mean, std) -> torch.Tensor:
    """uint8 [B,T,S,S,3] -> float [B,T,3,S,S], as VideoTransform (already resized)."""
    x = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 1, 4, 2, 3).float().div_(255.0)
    m = torch.tensor(mean).view(1, 1, 3, 1, 1)
    s = torch.tensor(std).view(1, 1, 3, 1, 1)
    return (x - m) / s
