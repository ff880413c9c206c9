"""Training run configuration (``retrieval/train_configs/*.json``), one typed place with defaults."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from retrieval.errors import ConfigError


def read_json_object(path: str | Path, what: str) -> dict:
    """The JSON object in config file ``path``; a ConfigError naming ``what`` (e.g. "training config") otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must be a JSON object")
    return data


def reject_unknown_keys(d: dict, cls: type, what: str) -> None:
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise ConfigError(f"unknown {what} keys: {sorted(unknown)}")


def build(cls: type, d: dict, what: str):
    """``cls(**d)``, with a malformed value reported as a ConfigError."""
    try:
        return cls(**d)
    except TypeError as exc:
        raise ConfigError(f"malformed {what}: {exc}") from exc


def require_positive_ints(cfg, names: tuple[str, ...], what: str) -> None:
    for name in names:
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
            raise ConfigError(f"{what} {name} must be a positive integer")


@dataclass
class SynthCfg:
    count: int = 20000  # clips generated when the data directory has none
    seed: int = 0


@dataclass
class TrainCfg:
    model: str = "viclip-tiny-synth"  # architecture name (retrieval/model_configs)
    init: str | None = None  # weights to start from (any `pretrained` the factory accepts); None = random
    data: str = "data/synth-train"  # directory with captions.jsonl + videos/
    synth: SynthCfg | None = field(default_factory=SynthCfg)  # generate `data` first if missing
    output: str = "runs/viclip-tiny-synth.safetensors"
    steps: int = 2000
    batch_size: int = 128
    lr: float = 1e-3
    logit_scale_lr: float | None = None  # own peak lr for the temperature (Adam moves it ~lr a step); None = lr
    min_lr_ratio: float = 0.02  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.98)
    grad_clip: float = 1.0
    vtm_weight: float = 1.0  # 0 disables the matching head's loss
    mask_ratio: float = 0.0  # ViCLIP-style random dropping of video patch tokens
    rephrase: bool = False  # draw a fresh caption phrasing for each clip at each step (generated data)
    easy_negatives: bool = False  # VTM: also one uniformly drawn negative per text and per video (bootstraps the head)
    twin_negatives: bool = True  # VTM: a clip's generated twin (other meaning) is an explicit negative
    shuffled_negatives: int = 0  # frame-shuffled copies of time-dependent clips per batch, negatives for VTC and VTM
    text_contrast: float = 0.0  # weight of an InfoNCE between two phrasings of each caption (generated data)
    seed: int = 0
    checkpoint_every: int = 200
    log_every: int = 10
    num_threads: int = 2
    device: str = "cpu"
    save_dtype: str = "float16"  # weights written to `output`; the resume state keeps fp32

    @classmethod
    def from_dict(cls, d: dict) -> TrainCfg:
        reject_unknown_keys(d, cls, "training config")
        d = dict(d)
        if d.get("synth") is not None:
            if not isinstance(d["synth"], dict) or set(d["synth"]) - {"count", "seed"}:
                raise ConfigError('training config \'synth\' must be {"count": N, "seed": S} or null')
            d["synth"] = SynthCfg(**d["synth"])
        if "betas" in d:
            d["betas"] = tuple(d["betas"])
        cfg = build(cls, d, "training config")
        require_positive_ints(
            cfg, ("steps", "batch_size", "checkpoint_every", "log_every", "num_threads"), "training config"
        )
        if cfg.batch_size < 2:
            raise ConfigError("batch_size must be at least 2 (contrastive training needs negatives)")
        if not 0.0 <= cfg.mask_ratio < 1.0:
            raise ConfigError("mask_ratio must be in [0, 1)")
        if cfg.lr <= 0 or (cfg.logit_scale_lr is not None and cfg.logit_scale_lr <= 0):
            raise ConfigError("lr and logit_scale_lr must be positive")
        if not isinstance(cfg.shuffled_negatives, int) or not 0 <= cfg.shuffled_negatives <= cfg.batch_size:
            raise ConfigError("shuffled_negatives must be an integer in [0, batch_size]")
        if not isinstance(cfg.text_contrast, int | float) or not cfg.text_contrast >= 0:
            raise ConfigError("text_contrast must be a number >= 0")
        if cfg.save_dtype not in ("float16", "float32"):
            raise ConfigError("save_dtype must be float16 or float32")
        return cfg

    @classmethod
    def from_json(cls, path: str | Path) -> TrainCfg:
        return cls.from_dict(read_json_object(path, "training config"))

    def to_dict(self) -> dict:
        return asdict(self)
