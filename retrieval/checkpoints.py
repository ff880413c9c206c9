"""Weights in, weights out: every format users bring, loaded strictly.

Three sources map onto :class:`VideoTextModel`:

* InternVideo ViCLIP release files (``torch.load(p)["model"]``: ``vision_encoder.*``,
  ``text_encoder.*``, ``temp``);
* open_clip CLIP weights (a pretrained tag fetched by open_clip, or a local open_clip file), whose
  image tower is inflated into the video tower with a zero temporal embedding;
* the project's own self-describing ``.safetensors`` (model config embedded in the metadata).

A partial load silently degrades every search result, so loading is strict: any missing,
unexpected or mis-shaped key raises :class:`CheckpointError` naming them. Only two adaptations are
made on purpose, as the reference does: the temporal embedding follows the model's frame count
(truncate when fewer, linear interpolation when more) and CLIP's 77 text positions are cut to
the model's context.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from retrieval.atomic import atomic_path
from retrieval.errors import CheckpointError
from retrieval.model_spec import PROJECT_FORMAT

log = logging.getLogger(__name__)

PROJECT_FORMAT_VERSION = "1"
TEMPORAL_KEY = "visual.temporal_positional_embedding"
TEXT_POS_KEY = "text.positional_embedding"
VISUAL_POS_KEY = "visual.positional_embedding"
_NON_PERSISTENT = ("text.attn_mask",)


# --------------------------------------------------------------------------- reading files


def read_project_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor], dict[str, str]]:
    """-> (model config dict, tensors, metadata) of a project ``.safetensors`` file."""
    from safetensors import SafetensorError, safe_open

    from retrieval.model_spec import project_metadata

    config, meta = project_metadata(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from exc
    return config, tensors, meta


def read_torch_file(path: str | Path) -> dict[str, Tensor]:
    """A ``.pth``/``.pt``/``.bin`` file -> flat state dict (unwrapping ``model``/``state_dict``)."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign pickles
        if os.environ.get("VTR_TRUST_PICKLE") != "1":
            raise CheckpointError(
                f"{path}: cannot be read as plain tensors ({type(exc).__name__}: {str(exc)[:200]}). "
                "If you trust this file, set VTR_TRUST_PICKLE=1 to allow full unpickling."
            ) from exc
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    for key in ("model", "state_dict", "module"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: does not contain a state dict")
    sd = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise CheckpointError(f"{path}: contains no tensors")
    return sd


def detect_layout(sd: Mapping[str, Tensor]) -> str:
    keys = list(sd)
    if any(k.startswith("vision_encoder.") for k in keys):
        return "viclip"
    if any(k.startswith("text.") for k in keys) and any(k.startswith("visual.") for k in keys):
        return "project"
    if "token_embedding.weight" in sd or any(k.startswith("visual.") for k in keys):
        return "open_clip"
    raise CheckpointError(f"unrecognised checkpoint layout; first keys: {keys[:5]}")


# --------------------------------------------------------------------------- key mapping


def from_viclip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """InternVideo ViCLIP release layout -> this model's layout."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key == "temp":
            out["logit_scale"] = torch.log(1.0 / value.float()).reshape(())
        elif key.startswith("vision_encoder."):
            name = "visual." + key.removeprefix("vision_encoder.")
            if name == "visual.conv1.weight" and value.ndim == 5:
                if value.shape[2] != 1:
                    raise CheckpointError(f"{key}: temporal kernel {value.shape[2]} unsupported (ViCLIP uses 1)")
                value = value[:, :, 0]
            out[name] = value
        elif key.startswith("text_encoder."):
            out["text." + key.removeprefix("text_encoder.")] = value
        else:
            out[key] = value  # left for the strict check to report as unexpected
    return out


def from_open_clip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """open_clip CLIP layout (image tower ``visual.*``, text at top level) -> this model's layout."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key.startswith("visual.") or key in ("logit_scale",):
            out[key] = value
        elif key.startswith("text."):  # open_clip CustomTextCLIP keeps its text tower under text.*
            out[key] = value
        elif key == "attn_mask":
            continue
        else:
            out["text." + key] = value
    return out


def to_viclip(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """This model's towers -> the ViCLIP release layout (for exporting, and to test the mapping)."""
    out: dict[str, Tensor] = {}
    for key, value in sd.items():
        if key == "logit_scale":
            out["temp"] = torch.exp(-value.float())
        elif key.startswith("visual."):
            name = "vision_encoder." + key.removeprefix("visual.")
            out[name] = value.unsqueeze(2) if key == "visual.conv1.weight" else value
        elif key.startswith("text.") and key not in _NON_PERSISTENT:
            out["text_encoder." + key.removeprefix("text.")] = value
    return out


# --------------------------------------------------------------------------- shape adaptation


def adapt_temporal(embedding: Tensor, num_frames: int) -> Tensor:
    """[1,T,W] -> [1,num_frames,W]: truncate when fewer, linear interpolation when more (reference)."""
    t = embedding.shape[1]
    if t == num_frames:
        return embedding
    if num_frames < t:
        return embedding[:, :num_frames].clone()
    x = embedding.float().permute(0, 2, 1)  # [1,W,T]
    x = F.interpolate(x, size=num_frames, mode="linear", align_corners=False)
    return x.permute(0, 2, 1).to(embedding.dtype).contiguous()


def adapt_text_positions(embedding: Tensor, context_length: int) -> Tensor:
    """CLIP's [77,w] positions -> [context,w]: truncate (causal mask makes this exact), zero-pad if longer."""
    n = embedding.shape[0]
    if n >= context_length:
        return embedding[:context_length].clone()
    return torch.cat([embedding, embedding.new_zeros(context_length - n, embedding.shape[1])])


def adapt_spatial_positions(embedding: Tensor, grid: int) -> Tensor:
    """[1+g0²,W] -> [1+grid²,W] by bicubic resize, class row kept (for other input resolutions)."""
    g0 = int(math.isqrt(embedding.shape[0] - 1))
    if g0 == grid:
        return embedding
    cls, patches = embedding[:1], embedding[1:]
    x = patches.float().reshape(1, g0, g0, -1).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False)
    x = x.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(embedding.dtype)
    return torch.cat([cls, x])


def adapt_to_model(sd: dict[str, Tensor], model: torch.nn.Module) -> dict[str, Tensor]:
    """The deliberate, documented adaptations; everything else must already fit exactly."""
    target = model.state_dict()
    if TEMPORAL_KEY in sd and TEMPORAL_KEY in target:
        sd[TEMPORAL_KEY] = adapt_temporal(sd[TEMPORAL_KEY], target[TEMPORAL_KEY].shape[1])
    elif TEMPORAL_KEY not in sd and TEMPORAL_KEY in target and any(k.startswith("visual.") for k in sd):
        sd[TEMPORAL_KEY] = torch.zeros_like(target[TEMPORAL_KEY])  # CLIP image weights: ViCLIP's zero init
    if TEXT_POS_KEY in sd and TEXT_POS_KEY in target:
        sd[TEXT_POS_KEY] = adapt_text_positions(sd[TEXT_POS_KEY], target[TEXT_POS_KEY].shape[0])
    if VISUAL_POS_KEY in sd and VISUAL_POS_KEY in target:
        grid = int(math.isqrt(target[VISUAL_POS_KEY].shape[0] - 1))
        sd[VISUAL_POS_KEY] = adapt_spatial_positions(sd[VISUAL_POS_KEY], grid)
    return sd


# --------------------------------------------------------------------------- strict loading


def load_strict(
    model: torch.nn.Module,
    sd: Mapping[str, Tensor],
    *,
    allow_missing_prefixes: tuple[str, ...] = (),
    source: str = "checkpoint",
) -> None:
    """Load or raise a CheckpointError that names every missing, unexpected and mis-shaped key."""
    target = model.state_dict()
    sd = {k: v for k, v in sd.items() if k not in _NON_PERSISTENT}
    missing = [
        k for k in target if k not in sd and k not in _NON_PERSISTENT and not k.startswith(allow_missing_prefixes)
    ]
    unexpected = [k for k in sd if k not in target]
    misshaped = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(target[k].shape)}"
        for k in sd
        if k in target and sd[k].shape != target[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)):
            if items:
                shown = ", ".join(items[:8]) + (f", … ({len(items)} in all)" if len(items) > 8 else "")
                parts.append(f"{label} keys: {shown}")
        raise CheckpointError(f"{source} does not fit model {getattr(model, 'name', '?')!r}: " + "; ".join(parts))
    cast = {k: v.to(target[k].dtype) for k, v in sd.items()}
    model.load_state_dict(cast, strict=False)


def load_foreign_weights(model: torch.nn.Module, sd: Mapping[str, Tensor], source: str) -> None:
    """ViCLIP or open_clip weights: towers strictly; the matching head keeps its init (they have none)."""
    layout = detect_layout(sd)
    mapped = {"viclip": from_viclip, "open_clip": from_open_clip, "project": dict}[layout](sd)
    has_head = any(k.startswith("match_head.") for k in mapped)
    mapped = adapt_to_model(dict(mapped), model)
    load_strict(model, mapped, allow_missing_prefixes=() if has_head else ("match_head.",), source=source)
    model.match_head_trained = has_head
    if not has_head and getattr(model, "match_head", None) is not None:
        log.warning("%s has no matching-head weights: re-ranking stays off until the head is trained", source)


def load_open_clip_pretrained(model: torch.nn.Module, arch: str | None, tag: str) -> None:
    """Fetch CLIP weights through open_clip (its normal download/cache) and inflate them."""
    if not arch:
        raise CheckpointError(
            f"model {model.name!r} has no open_clip architecture in its config, so the tag {tag!r} means nothing; "
            "pass a checkpoint file instead"
        )
    import open_clip

    if tag not in open_clip.list_pretrained_tags_by_model(arch) and not Path(tag).is_file():
        known = ", ".join(open_clip.list_pretrained_tags_by_model(arch)) or "none"
        raise CheckpointError(f"{tag!r} is neither a file nor an open_clip tag for {arch} (known tags: {known})")
    try:
        clip = open_clip.create_model(arch, pretrained=tag, force_quick_gelu=model.config.quick_gelu)
    except Exception as exc:  # noqa: BLE001 - network, hub and file errors all mean "could not get weights"
        raise CheckpointError(
            f"could not obtain open_clip weights {arch}/{tag}: {type(exc).__name__}: {str(exc)[:300]}. "
            "Without network access, download the open_clip checkpoint elsewhere and pass its path."
        ) from exc
    load_foreign_weights(model, clip.state_dict(), source=f"open_clip {arch}/{tag}")


# --------------------------------------------------------------------------- project format


def save_checkpoint(
    model: torch.nn.Module,
    path: str | Path,
    metadata: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write the self-describing project checkpoint (weights + model config) atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if k not in _NON_PERSISTENT
    }
    meta = {
        "format": PROJECT_FORMAT,
        "format_version": PROJECT_FORMAT_VERSION,
        "config": json.dumps(model.config.to_dict()),
        "match_head_trained": json.dumps(bool(getattr(model, "match_head_trained", False))),
    }
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path
