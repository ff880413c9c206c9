"""What is wrong with a file that does not decode, said in words: the checks :mod:`retrieval.decode` raises.

Why a module of its own: these are the messages a user sees ("empty file (0 bytes)", "not a video
file (it contains text)", "is a playlist or reference file", "decoding took too long"), and they
depend only on the file and the exception, never on a decoder. Keeping them here leaves
:mod:`retrieval.decode` (still the only module that imports a decoder) to the reading itself.
"""

from __future__ import annotations

import time
from pathlib import Path

from retrieval.errors import DecodeError


def check_file(path: Path) -> None:
    """Raise for a path that is no file to open at all: missing, a directory, or empty."""
    if not path.exists():
        raise DecodeError(f"{path}: file not found")
    if not path.is_file():
        raise DecodeError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise DecodeError(f"{path.name}: empty file (0 bytes)")


def _looks_like_text(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def open_error(path: Path, exc: Exception) -> DecodeError:
    """The DecodeError for a file the container layer (ffmpeg) refused to open, with the likely reason."""
    if isinstance(exc, PermissionError) or "Permission denied" in str(exc):
        return DecodeError(f"{path.name}: permission denied")
    if _looks_like_text(path):
        return DecodeError(f"{path.name}: not a video file (it contains text)")
    reason = getattr(exc, "strerror", None) or str(exc)
    return DecodeError(
        f"{path.name}: cannot open as a video ({reason}); the file is corrupt, truncated without its index, "
        "or not a video"
    )


def reference_file(path: Path) -> DecodeError:
    """The DecodeError for a playlist or manifest (HLS, DASH, ffconcat) sent where a video must be."""
    return DecodeError(
        f"{path.name}: is a playlist or reference file (it points to other files or URLs); send the video itself"
    )


def check_deadline(deadline: float | None, path: Path) -> None:
    """Raise when a decode with a deadline (``time.monotonic()`` value) has run past it.

    Why: a search query file is decoded inside a request; a small upload can hold millions of cheap
    frames (or huge ones) and would otherwise keep a server thread busy for minutes. The indexer
    needs none of this: its decoders are processes it kills on a timeout.
    """
    if deadline is not None and time.monotonic() > deadline:
        raise DecodeError(
            f"{path.name}: decoding took too long (too many or too large frames); send a shorter or smaller clip"
        )
