"""Replacing a file so that readers see the old or the new version, never a mix (the one helper).

Why one helper: every file the data home rewrites (FAISS indexes and their sidecars, the token
store's ``meta.json``, thumbnails, checkpoints) must survive a crash mid-write, and the rule is the
same each time: write a uniquely named temp file beside the target, optionally fsync it, rename it
over the target, fsync the folder. Temp names end in ``.tmp`` so a reconcile can sweep leftovers.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from retrieval.crashpoints import crash_point


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable (best effort: some file systems refuse)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path``; once the block has written it, it replaces ``path``.

    ``durable`` fsyncs the file before and the folder after the rename (what indexes and metadata
    need); thumbnails, which a reconcile can always rebuild or drop, skip it for speed. On an error
    the temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            crash_point(f"replace:{path.name}")  # test hook (see retrieval.crashpoints)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, obj: dict) -> None:
    """Replace ``path`` with ``obj`` as indented JSON, durably."""
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())
