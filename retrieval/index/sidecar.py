"""The JSON sidecar that says which model, dimension and settings an index file was built with."""

from __future__ import annotations

import json
import os
from pathlib import Path

from retrieval.errors import IndexMismatch, StoreError

FORMAT_VERSION = 1


def sidecar_path(index_path: str | os.PathLike) -> Path:
    return Path(index_path).with_suffix(".json")


def read_sidecar(index_path: str | os.PathLike) -> dict | None:
    p = sidecar_path(index_path)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"index sidecar {p} is unreadable: {exc}") from exc


def check_compatible(meta: dict, path: Path, *, model: str | None, dim: int | None) -> None:
    if model is not None and meta.get("model") != model:
        raise IndexMismatch(
            f"the index at {path} was built with model {meta.get('model')!r}, not {model!r}: search with "
            f"--model {meta.get('model')}, or index into another --home (vectors of two models cannot be mixed)"
        )
    if dim is not None and int(meta.get("dim", -1)) != int(dim):
        raise IndexMismatch(f"the index at {path} has dimension {meta.get('dim')}, the model {dim}")
