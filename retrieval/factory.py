"""Resolve a model name, build it, load its weights, hand out its matching transforms.

Handing out the preprocessing and tokenizer together with the model keeps the indexer and the
web app from drifting apart (open_clip's ``create_model_and_transforms`` habit).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from retrieval.config import ModelCfg
from retrieval.errors import CheckpointError, ConfigError
from retrieval.frames import VideoTransform
from retrieval.model import VideoTextModel
from retrieval.model_spec import (  # noqa: F401  (re-exported: the factory is where callers look)
    CONFIG_DIR,
    RANDOM_INIT,
    WEIGHTS_DIR,
    default_model_name,
    get_model_config,
    is_project_checkpoint,
    list_models,
)
from retrieval.tokenizer import Tokenizer


def create_model(
    name: str | None = None,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    num_frames: int | None = None,
) -> VideoTextModel:
    """Build ``name`` and load ``pretrained`` (file path, open_clip tag, "random", or the shipped default)."""
    project = _project_checkpoint(pretrained)
    if project is not None:
        cfg_dict, tensors, meta = project
        cfg = ModelCfg.from_dict(cfg_dict)
        if name is not None and name != cfg.name:
            raise CheckpointError(f"{pretrained} holds model {cfg.name!r}, not {name!r}")
    elif name is None:
        raise ConfigError("a model name is needed unless pretrained is a project .safetensors checkpoint")
    else:
        cfg = get_model_config(name)
        if pretrained is None and cfg.default_pretrained:
            return create_model(name, WEIGHTS_DIR / cfg.default_pretrained, device, num_frames)
    if num_frames is not None:
        if num_frames < 1:
            raise ConfigError("num_frames must be >= 1")
        cfg.vision.num_frames = num_frames
    model = VideoTextModel(cfg)
    if project is not None:
        _load_project(model, tensors, meta, str(pretrained))
    elif pretrained not in (None, RANDOM_INIT):
        _load_other(model, pretrained)
    return model.to(device).eval()


def create_model_and_transforms(
    name: str | None = None,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    num_frames: int | None = None,
) -> tuple[VideoTextModel, VideoTransform, Tokenizer]:
    model = create_model(name, pretrained, device, num_frames)
    cfg = model.config
    return model, VideoTransform(cfg.vision.image_size, cfg.preprocess), Tokenizer(cfg.text.context_length)


def _project_checkpoint(pretrained):
    if not is_project_checkpoint(pretrained):
        return None
    from retrieval.checkpoints import read_project_checkpoint

    return read_project_checkpoint(pretrained)


def _load_project(model: VideoTextModel, tensors, meta, source: str) -> None:
    from retrieval.calibration import METADATA_KEY, RankingParams
    from retrieval.checkpoints import adapt_to_model, load_strict

    trained = meta.get("match_head_trained", "false") == "true"
    load_strict(model, adapt_to_model(dict(tensors), model), source=source)
    model.match_head_trained = trained
    model.ranking = RankingParams.from_json(meta.get(METADATA_KEY)) if trained else None


def _load_other(model: VideoTextModel, pretrained) -> None:
    from retrieval.checkpoints import load_foreign_weights, load_open_clip_pretrained, read_torch_file

    path = Path(pretrained)
    if path.is_file():
        try:
            sd = read_torch_file(path)
        except CheckpointError:
            if model.config.open_clip.arch:  # e.g. OpenAI's TorchScript archives: let open_clip read them
                return load_open_clip_pretrained(model, model.config.open_clip.arch, str(path))
            raise
        return load_foreign_weights(model, sd, source=str(path))
    if os.sep in str(pretrained) or path.suffix in (".pt", ".pth", ".bin", ".safetensors"):
        raise CheckpointError(f"checkpoint file not found: {path}")
    load_open_clip_pretrained(model, model.config.open_clip.arch, str(pretrained))


def load_model(
    name: str | None, checkpoint: str | os.PathLike | None, device: str | torch.device | None = None
) -> tuple[VideoTextModel, VideoTransform, Tokenizer]:
    """(model, preprocess, tokenizer) for inference on ``device`` (CUDA when available and not given).

    Seeded: a model without shipped weights (the test model) gets the same random init in every
    process, so the indexer and the engine embed alike; real weights overwrite it.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, preprocess, tokenizer = create_model_and_transforms(name, pretrained=checkpoint, device=device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, preprocess, tokenizer
