"""The caption corpus for video->text search: `vtr texts add FILE`.

Accepted files: ``.txt`` (one caption per line), ``.jsonl`` (one JSON value per line: a string, or
an object with a ``text``/``caption``/``sentence`` field), ``.csv``/``.tsv`` (a column named
``text``/``caption``/``sentence``, else the first column; a header row is detected). Blank lines are
skipped and a caption already in the corpus is not added twice.

This module only reads caption files; writing them into the corpus is the one write path of
:mod:`retrieval.text_corpus`, shared with the server's ``POST /api/v1/texts``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

from retrieval.errors import InvalidInput
from retrieval.utf8 import is_utf8_encodable

log = logging.getLogger(__name__)

TEXT_FIELDS = ("text", "caption", "sentence", "description")
MAX_TEXT_CHARS = 10_000


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
