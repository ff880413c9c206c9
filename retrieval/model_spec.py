"""Which model a name or checkpoint means, and the shapes it produces, without importing torch.

Why a module of its own: the indexer starts its decoders before the model has loaded (importing
torch and open_clip costs seconds of one core), and for that it needs the model's name, input size
and token shapes from the JSON config or the checkpoint's header alone. :mod:`retrieval.factory`
builds the model from the same resolution.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from retrieval.config import ModelCfg
from retrieval.errors import CheckpointError, ConfigError

CONFIG_DIR = Path(__file__).with_name("model_configs")
WEIGHTS_DIR = Path(__file__).with_name("weights")
RANDOM_INIT = "random"  # pretrained="random" forces random init even when the config ships weights
PROJECT_FORMAT = "vtr-checkpoint"


def _config_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("VTR_MODEL_CONFIGS", "").split(os.pathsep) if p]
    return [CONFIG_DIR, *extra]


def _config_paths() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in _config_dirs():
        for p in sorted(d.glob("*.json")):
            found.setdefault(p.stem, p)
    return found


def list_models() -> list[str]:
    return sorted(_config_paths())


def get_model_config(name: str) -> ModelCfg:
    path = _config_paths().get(name)
    if path is None:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return ModelCfg.from_json(path)


def default_model_name(model: str | None, checkpoint: str | os.PathLike | None, indexed=None) -> str | None:
    """The model to use when the user named none: the one rule the indexer and the engine share.

    ``model`` if given; else None for a self-describing project ``.safetensors`` (it names its own
    architecture); else the model an existing index was built with (``indexed()``, when given);
    else the ``model`` setting (``VTR_MODEL``, else the shipped default).
    """
    from retrieval.settings import resolve

    if model:
        return model
    if checkpoint and str(checkpoint).endswith(".safetensors"):
        return None
    return (indexed() if indexed is not None else None) or resolve("model")


def is_project_checkpoint(pretrained) -> bool:
    return pretrained is not None and str(pretrained) != RANDOM_INIT and Path(pretrained).suffix == ".safetensors"


def project_metadata(path: str | os.PathLike) -> tuple[dict, dict[str, str]]:
    """(embedded model config, metadata) of a project ``.safetensors`` file, from its header alone."""
    from safetensors import SafetensorError, safe_open

    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    if meta.get("format") != PROJECT_FORMAT or "config" not in meta:
        raise CheckpointError(
            f"{path}: safetensors file without the project's metadata (format={meta.get('format')!r}); "
            "only checkpoints written by `vtr train` / save_checkpoint embed their model config"
        )
    try:
        config = json.loads(meta["config"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: embedded model config is not valid JSON ({exc})") from exc
    return config, meta


def model_config(name: str | None, pretrained: str | os.PathLike | None = None) -> ModelCfg:
    """The config :func:`retrieval.factory.create_model` builds for (``name``, ``pretrained``)."""
    if is_project_checkpoint(pretrained):
        cfg = ModelCfg.from_dict(project_metadata(pretrained)[0])
        if name is not None and name != cfg.name:
            raise CheckpointError(f"{pretrained} holds model {cfg.name!r}, not {name!r}")
        return cfg
    if name is None:
        raise ConfigError("a model name is needed unless pretrained is a project .safetensors checkpoint")
    cfg = get_model_config(name)
    if pretrained is None and cfg.default_pretrained:
        return model_config(name, WEIGHTS_DIR / cfg.default_pretrained)
    return cfg


def token_shape(cfg: ModelCfg) -> tuple[int, int, int]:
    """(tokens per clip, token width, embedding dim): the class token and one pooled token per frame."""
    return cfg.vision.num_frames + 1, cfg.vision.width, cfg.embed_dim
