"""Thumbnails and video files, with HTTP Range so browsers can seek inside long videos.

Routes take integer ids only; the file to send is looked up in the catalog (videos) or derived from
the id inside the data home (thumbnails), so no part of a request path ever reaches the filesystem.
"""

from __future__ import annotations

import mimetypes

from flask import Blueprint, send_file

from retrieval.errors import NotFound
from webapp import get_engine

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


def _send(path, mimetype: str, what: str):
    try:
        resp = send_file(path, mimetype=mimetype, conditional=True, max_age=3600)
    except OSError:  # deleted or unreadable between the catalog lookup and the open
        raise NotFound(f"the {what} is no longer readable") from None
    return _harden(resp)


@bp.get("/thumbs/<int:clip_id>.jpg")
def thumbnail(clip_id: int):
    path = get_engine().thumbnail_file(clip_id)
    return _send(path, "image/jpeg", f"thumbnail of clip {clip_id}")


@bp.get("/videos/<int:video_id>")
def video(video_id: int):
    path = get_engine().video_file(video_id)
    return _send(path, _video_type(path), f"file of video {video_id}")
