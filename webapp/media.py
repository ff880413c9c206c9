"""Thumbnails and video files, with HTTP Range so browsers can seek inside long videos.

Routes take integer ids only; the file to send is looked up in the catalog (videos) or derived from
the id inside the data home (thumbnails), so no part of a request path ever reaches the filesystem.
"""

from __future__ import annotations

import mimetypes
import os
import re

from flask import Blueprint, request, send_file

from retrieval.errors import NotFound
from webapp.guards import index_roots, inside_index_roots
from webapp.state import get_engine

bp = Blueprint("media", __name__, url_prefix="/media")

_VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".avi": "video/x-msvideo",
    ".ogv": "video/ogg",
}


def _video_type(path) -> str:
    suffix = path.suffix.lower()
    return _VIDEO_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _harden(resp):
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return resp


# at most 19 digits (2**63): a longer number is malformed here, and int() refuses > 4300 digits anyway
_RANGE_SPEC = re.compile(r"^\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$")


def range_to_serve(header: str | None, size: int) -> str | None:
    """The Range header werkzeug should act on, per RFC 9110 where werkzeug is stricter than it.

    werkzeug answers 416 to three requests the RFC says to serve: a range unit other than bytes
    (must be ignored: 200), a suffix longer than the file (``bytes=-N``: the whole file, 206), and
    several ranges (it cannot send multipart/byteranges; ignoring Range is allowed: 200). None means
    "ignore the header"; anything unsatisfiable or malformed is passed on and stays a 416.
    """
    if not header:
        return None
    unit, sep, spec = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [_RANGE_SPEC.match(p) for p in spec.split(",")]
    if any(m is None or not (m.group(1) or m.group(2)) for m in parts):
        return header  # malformed: 416
    if len(parts) == 1:
        first, last = parts[0].groups()
        if not first and int(last) > size > 0:
            return "bytes=0-"
        return header
    satisfiable = any(
        (int(m.group(1)) < size and (not m.group(2) or int(m.group(2)) >= int(m.group(1))))
        if m.group(1)
        else int(m.group(2)) > 0
        for m in parts
    )
    return None if satisfiable and size > 0 else header


def _send(path, mimetype: str, what: str):
    try:
        size = os.stat(path).st_size
        served = range_to_serve(request.headers.get("Range"), size)
        if served is None:
            request.environ.pop("HTTP_RANGE", None)
        else:
            request.environ["HTTP_RANGE"] = served
        resp = send_file(path, mimetype=mimetype, conditional=True, max_age=3600)
    except OSError:  # deleted or unreadable between the catalog lookup and the open
        raise NotFound(f"the {what} is no longer readable") from None
    return _harden(resp)


@bp.get("/thumbs/<int:clip_id>.jpg")
def thumbnail(clip_id: int):
    path = get_engine().thumbnail_file(clip_id)
    return _send(path, "image/jpeg", f"thumbnail of clip {clip_id}")


@bp.get("/filmstrips/<int:clip_id>.jpg")
def filmstrip(clip_id: int):
    """The clip's sampled frames side by side (square cells), for scrubbing in the UI."""
    path = get_engine().filmstrip_file(clip_id)
    return _send(path, "image/jpeg", f"filmstrip of clip {clip_id}")


@bp.get("/videos/<int:video_id>")
def video(video_id: int):
    path = get_engine().video_file(video_id)
    roots = index_roots()
    if roots and not inside_index_roots(path, roots):  # e.g. reached through a link that leaves the roots
        raise NotFound(f"the file of video {video_id} is not served: it is outside the index roots")
    return _send(path, _video_type(path), f"file of video {video_id}")
