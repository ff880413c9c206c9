"""Typed mirrors of the model JSON files in ``model_configs/``.

Architectures are data: a JSON file names every size that matters, and these dataclasses give
the code one typed place to read them from, with a short note per field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from retrieval.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class VisionCfg:
    image_size: int = 224  # square input side; frames are squash-resized to it
    patch_size: int = 16  # ViT patch side; one token per patch per frame
    width: int = 768  # transformer width
    layers: int = 12  # transformer depth
    heads: int = 12  # attention heads
    mlp_ratio: float = 4.0  # MLP hidden = width * mlp_ratio
    num_frames: int = 8  # T: frames per clip the temporal embedding is sized for
    temporal: str = "joint"  # "joint": ViCLIP space-time attention; "frame_mean": per-frame CLIP, mean-pooled


@dataclass
class TextCfg:
    context_length: int = 32  # ViCLIP truncates CLIP's 77 positions to 32
    vocab_size: int = 49408  # CLIP BPE vocabulary
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0


@dataclass
class MatchHeadCfg:
    width: int = 256  # hidden width of the cross-attention re-ranker
    layers: int = 2  # fusion blocks: self-attention over text, cross-attention to video tokens, MLP
    heads: int = 4
    mlp_ratio: float = 4.0
    frame_positions: int = 0  # learned frame-order embedding over the 1+T video tokens; 0 = order-blind (v1 heads)


@dataclass
class PreprocessCfg:
    mean: tuple[float, ...] = IMAGENET_MEAN  # ViCLIP normalises with ImageNet stats, not CLIP's
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bicubic"
    antialias: bool = False  # the reference's torchvision 0.15 resize did not antialias


@dataclass
class OpenClipCfg:
    arch: str | None = None  # open_clip architecture whose image tower we inflate (e.g. "ViT-B-16")


@dataclass
class ModelCfg:
    name: str
    embed_dim: int
    vision: VisionCfg
    text: TextCfg
    match_head: MatchHeadCfg | None = None
    preprocess: PreprocessCfg = field(default_factory=PreprocessCfg)
    quick_gelu: bool = True  # ViCLIP uses QuickGELU in both towers
    init_logit_scale: float = 4.605170185988091  # ln(100): ViCLIP's temp starts at 1/100
    open_clip: OpenClipCfg = field(default_factory=OpenClipCfg)
    default_pretrained: str | None = None  # weights shipped with the package, relative to retrieval/weights/

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelCfg:
        try:
            d = dict(d)
            sub = {
                "vision": VisionCfg,
                "text": TextCfg,
                "match_head": MatchHeadCfg,
                "preprocess": PreprocessCfg,
                "open_clip": OpenClipCfg,
            }
            for key, typ in sub.items():
                if d.get(key) is not None:
                    d[key] = _build(typ, d[key])
            known = {f.name for f in fields(cls)}
            unknown = set(d) - known
            if unknown:
                raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
            cfg = cls(**d)
        except TypeError as exc:
            raise ConfigError(f"malformed model config: {exc}") from exc
        if cfg.vision.temporal not in ("joint", "frame_mean"):
            raise ConfigError(f"vision.temporal must be 'joint' or 'frame_mean', not {cfg.vision.temporal!r}")
        if cfg.vision.image_size % cfg.vision.patch_size:
            raise ConfigError("vision.image_size must be a multiple of vision.patch_size")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> ModelCfg:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read model config {path}: {exc}") from exc
        data.setdefault("name", Path(path).stem)
        return cls.from_dict(data)


def _build(typ: type, value: Any) -> Any:
    if isinstance(value, typ):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{typ.__name__} must be a JSON object")
    unknown = set(value) - {f.name for f in fields(typ)}
    if unknown:
        raise ConfigError(f"unknown {typ.__name__} keys: {sorted(unknown)}")
    value = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return typ(**value)
