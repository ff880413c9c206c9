"""The caption corpus for video->text search: `vtr texts add FILE`.

Accepted files: ``.txt`` (one caption per line), ``.jsonl`` (one JSON value per line: a string, or
an object with a ``text``/``caption``/``sentence`` field), ``.csv``/``.tsv`` (a column named
``text``/``caption``/``sentence``, else the first column; a header row is detected). Blank lines are
skipped and a caption already in the corpus is not added twice.

Writes follow the clip index's rule: the catalog commits first, then FAISS is updated and saved;
at the start of every run the text index is reconciled with the catalog (vectors of deleted texts
removed, texts without vectors embedded again), so an interrupted run leaves nothing half-done.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.catalog import Catalog
from retrieval.errors import InvalidInput
from retrieval.home import DataHome
from retrieval.index import VectorIndex
from retrieval.utf8 import is_utf8_encodable

log = logging.getLogger(__name__)

TEXT_FIELDS = ("text", "caption", "sentence", "description")
MAX_TEXT_CHARS = 10_000


@dataclass
class TextsReport:
    read: int = 0
    added: int = 0
    duplicates: int = 0
    reembedded: int = 0
    total: int = 0
    vectors: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def read_texts(path: str | Path, fmt: str | None = None) -> list[str]:
    """Captions in ``path``; ``fmt`` (txt, jsonl, csv, tsv) defaults to the file extension."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt == "json":
        fmt = "jsonl"
    if fmt not in ("txt", "jsonl", "csv", "tsv"):
        raise InvalidInput(f"{path.name}: unknown caption file type {fmt!r}; use .txt, .jsonl or .csv (or --format)")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from exc
    if b"\x00" in raw[:4096]:
        raise InvalidInput(f"{path.name} is a binary file, not a caption list")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"{path.name} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if fmt == "txt":
        items = text.splitlines()
    elif fmt == "jsonl":
        items = _jsonl(text, path.name)
    else:
        items = _csv(text, "\t" if fmt == "tsv" else ",", path.name)
    out = []
    for i, t in enumerate(items, 1):
        t = " ".join(str(t).split())
        if not is_utf8_encodable(t):
            raise InvalidInput(f"{path.name}: caption {i} is not valid Unicode (a lone surrogate)")
        if t:
            out.append(t[:MAX_TEXT_CHARS])
    return out


def _jsonl(text: str, name: str) -> list[str]:
    stripped = text.lstrip()
    if stripped.startswith("["):  # a JSON array of strings/objects is accepted too
        try:
            values = json.loads(stripped)
        except ValueError as exc:
            raise InvalidInput(f"{name}: invalid JSON: {exc}") from exc
        except RecursionError:  # not a ValueError
            raise InvalidInput(f"{name}: invalid JSON: nested too deeply") from None
        return [_json_text(v, name, i + 1) for i, v in enumerate(values)]
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise InvalidInput(f"{name} line {lineno}: invalid JSON ({exc.msg})") from exc
        except RecursionError:
            raise InvalidInput(f"{name} line {lineno}: invalid JSON (nested too deeply)") from None
        out.append(_json_text(value, name, lineno))
    return out


def _json_text(value, name: str, lineno: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        for key in TEXT_FIELDS:
            if isinstance(value.get(key), str):
                return value[key]
    raise InvalidInput(f"{name} line {lineno}: expected a string or an object with a 'text' or 'caption' field")


def _csv(text: str, delimiter: str, name: str) -> list[str]:
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter))
    except csv.Error as exc:
        raise InvalidInput(f"{name}: invalid CSV: {exc}") from exc
    rows = [r for r in rows if r and any(c.strip() for c in r)]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    col = next((header.index(f) for f in TEXT_FIELDS if f in header), None)
    if col is not None:
        rows = rows[1:]
    else:
        col = 0
    return [r[col] for r in rows if len(r) > col]


class TextEmbedder:
    def __init__(self, model, tokenizer, batch_size: int = 256):
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), self.batch_size):
            ids = self.tokenizer(texts[i : i + self.batch_size]).to(self.device)
            with self.torch.inference_mode():
                emb = self.model.encode_text(ids, normalize=True)
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, self.model.embed_dim), np.float32)


def open_text_index(home: DataHome, model_name: str, dim: int) -> VectorIndex:
    if home.text_index_path.exists():
        return VectorIndex.load(home.text_index_path, model=model_name, dim=dim)
    return VectorIndex.create(dim, model_name, "Flat")


def reconcile_texts(catalog: Catalog, index: VectorIndex, embed: TextEmbedder) -> int:
    """Make the text index hold exactly the catalog's texts; returns how many were re-embedded."""
    want = catalog.all_text_ids()
    have = index.ids()
    extra = np.setdiff1d(have, want, assume_unique=True)
    if len(extra):
        index.remove(extra)
    missing = np.setdiff1d(want, have, assume_unique=True)
    for i in range(0, len(missing), 4096):
        part = missing[i : i + 4096]
        recs = catalog.texts_by_ids(part.tolist())
        index.add(embed([r.text for r in recs]), np.array([r.id for r in recs], dtype=np.int64))
    return len(missing)


def add_texts(
    items: list[str], *, source: str | None, home: DataHome, catalog: Catalog, model, tokenizer, batch_size: int = 256
) -> TextsReport:
    """Add captions to the corpus and the text index (the caller holds the data home lock)."""
    embed = TextEmbedder(model, tokenizer, batch_size)
    index = open_text_index(home, model.name, model.embed_dim)
    rep = TextsReport(read=len(items))
    rep.reembedded = reconcile_texts(catalog, index, embed)
    new_ids, _ = catalog.add_texts(items, source)  # committed first: the catalog is the truth
    rep.added = len(new_ids)
    rep.duplicates = len(items) - rep.added
    if new_ids:
        recs = catalog.texts_by_ids(new_ids)
        index.add(embed([r.text for r in recs]), np.array([r.id for r in recs], dtype=np.int64))
    if new_ids or rep.reembedded or not home.text_index_path.exists():
        index.save(home.text_index_path)
    rep.total = catalog.stats()["texts"]
    rep.vectors = index.ntotal
    return rep
