"""Build state dicts laid out exactly as the InternVideo ViCLIP release files, from the key list."""

from __future__ import annotations

from pathlib import Path

import torch

KEY_FILE = Path(__file__).with_name("data") / "viclip-checkpoint-keys.txt"


def release_keys(size: str) -> list[tuple[str, tuple[int, ...]]]:
    """[(key, shape)] for size 'b' or 'l', in file order."""
    out, current = [], None
    for line in KEY_FILE.read_text().splitlines():
        if line.startswith("## size="):
            current = line.split("'")[1]
        elif line and not line.startswith("#") and current == size:
            key, shape, _dtype = line.split("\t")
            dims = tuple(int(d) for d in shape.strip("()").split(",") if d.strip())
            out.append((key, dims))
    return out


def random_release_state_dict(size: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with realistic scales (LayerNorm ~1, others small) in the release layout."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in release_keys(size):
        if key == "temp":
            sd[key] = torch.tensor(0.0123)
        elif key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
            sd[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.02 * torch.randn(shape, generator=g)
    return sd
