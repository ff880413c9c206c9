"""A cheap identity for a file's content: size plus a hash of its first and last 64 KiB.

Why not a full hash: reading every byte of a multi-terabyte library on each run is what makes
re-scans take hours. Head and tail catch the usual changes (re-encodes, re-muxes, appended or cut
data, replaced files), and the size catches the rest of the common ones. Whether to compute it at
all is decided by (size, mtime) first, like rsync: an unchanged size and mtime skips the read.
"""

from __future__ import annotations

import hashlib
import os

BLOCK = 64 * 1024


def fingerprint(path: str | os.PathLike, size: int | None = None) -> str:
    """``"<size hex>-<sha1 of head+tail, 24 hex>"``; raises OSError if the file cannot be read."""
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        if size is None:
            size = os.fstat(fh.fileno()).st_size
        h.update(fh.read(BLOCK))
        if size > BLOCK:
            fh.seek(max(BLOCK, size - BLOCK))
            h.update(fh.read(BLOCK))
    return f"{size:x}-{h.hexdigest()[:24]}"
