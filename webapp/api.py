"""JSON API v1: search (text and video), catalog lookups, stats, health, and the admin routes.

Routes only parse and validate arguments and shape responses; the work is done by
:class:`retrieval.engine.SearchEngine`. Every result gets ``thumbnail_url`` and ``video_url`` (the
video URL carries a media fragment ``#t=start,end`` so a player opens at the matched moment).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request

from retrieval.errors import InvalidInput, NotFound
from retrieval.query import MAX_K, MAX_OFFSET, check_target
from webapp.errors import Forbidden
from webapp.guards import (
    check_query_args,
    index_roots,
    inside_index_roots,
    json_body,
    limit_rate,
    parse_bool,
    parse_float,
    parse_int,
    parse_text,
    require_admin,
)
from webapp.state import get_engine, get_index_queue

bp = Blueprint("api", __name__, url_prefix="/api/v1")
bp.before_request(limit_rate)
bp.before_request(check_query_args)

DEFAULT_K = 20
MAX_TEXTS_PER_REQUEST = 10_000


def thumbnail_url(clip_id: int) -> str:
    return f"/media/thumbs/{int(clip_id)}.jpg"


def video_url(video_id: int, start: float | None = None, end: float | None = None) -> str:
    url = f"/media/videos/{int(video_id)}"
    if start is not None and end is not None:
        url += f"#t={start:.3f},{end:.3f}"
    return url


def filmstrip_url(clip_id: int) -> str:
    return f"/media/filmstrips/{int(clip_id)}.jpg"


def display_path(path: str | None) -> str | None:
    """``path`` as API clients see it: absolute, or relative to its library with VTR_RELATIVE_PATHS."""
    if not path or not current_app.config.get("RELATIVE_PATHS"):
        return path
    from flask import g

    roots = g.get("vtr_roots")
    if roots is None:
        roots = g.vtr_roots = sorted((lib["root"] for lib in get_engine().catalog.libraries()), key=len, reverse=True)
    for root in roots:
        if path == root:
            return os.path.basename(root.rstrip(os.sep))
        if path.startswith(root.rstrip(os.sep) + os.sep):
            return os.path.join(os.path.basename(root.rstrip(os.sep)), os.path.relpath(path, root))
    return os.path.basename(path)


def with_urls(hit: dict) -> dict:
    """Add the media URLs to a clip hit (and to the other moments of a grouped hit)."""
    if "clip_id" not in hit:
        return hit
    out = dict(hit)
    out["thumbnail_url"] = thumbnail_url(hit["clip_id"])
    out["filmstrip_url"] = filmstrip_url(hit["clip_id"])
    out["video_url"] = video_url(hit["video_id"], hit.get("start"), hit.get("end"))
    for key in ("video_path", "library"):
        if key in out:
            out[key] = display_path(out[key])
    if "moments" in hit:
        out["moments"] = [with_urls(m) for m in hit["moments"]]
    return out


def _args(source) -> dict:
    """Search options shared by text and video search, from query args, form fields or a JSON body."""
    from retrieval.engine import SearchFilters

    get = source.get
    min_d = parse_float("min_duration", get("min_duration"))
    max_d = parse_float("max_duration", get("max_duration"))  # min_d > max_d: an empty range, nothing matches
    library = get("library")
    if library is not None and not isinstance(library, (str, int)) or isinstance(library, bool):
        raise InvalidInput("library must be a library id or root path")
    if isinstance(library, str):
        library = parse_text("library", library, required=False, max_chars=4096)
    prefix = parse_text("path_prefix", get("path_prefix"), required=False, max_chars=4096)
    filters = SearchFilters(
        library=str(library).strip() or None if library is not None else None,
        path_prefix=prefix,
        min_duration=min_d,
        max_duration=max_d,
    )
    return {
        "k": parse_int("k", get("k"), DEFAULT_K, 1, MAX_K),
        "offset": parse_int("offset", get("offset"), 0, 0, MAX_OFFSET),
        "rerank": parse_bool("rerank", get("rerank"), None),
        "group_by_video": parse_bool("group_by_video", get("group_by_video"), False),
        "filters": filters,
    }


def _respond(result: dict):
    result = dict(result)
    result["results"] = [with_urls(h) for h in result["results"]]
    return jsonify(result)


@bp.get("/search")
def search_text():
    q = parse_text("q", request.args.get("q"), required=True, max_chars=current_app.config["MAX_QUERY_CHARS"])
    return _respond(get_engine().search_text(q, **_args(request.args)))


@bp.post("/search/video")
def search_video():
    """Query by example: an uploaded clip (multipart ``file``) or an indexed clip (``clip_id``)."""
    if request.files:
        upload = request.files.get("file")
        if upload is None:
            raise InvalidInput("upload the query clip in the multipart field 'file'")
        body = request.form.to_dict()
        if body.get("clip_id") not in (None, "") or request.args.get("clip_id") not in (None, ""):
            raise InvalidInput("send either a file or a clip_id, not both")
    elif request.mimetype == "multipart/form-data":
        raise InvalidInput("multipart request without a 'file' field")
    else:
        upload = None
        body = json_body() if request.get_data(cache=True) else {}
    query = request.args.to_dict()
    for source in (query, body):  # each given value must be valid, even where the body's overrides it
        if "target" in source:
            check_target(source["target"])
        _args(source)
    params = {**query, **body}
    target = check_target(params.get("target", "clips"))
    opts = _args(params)
    engine = get_engine()
    if upload is None:
        clip_id = parse_int("clip_id", params.get("clip_id"), None, 0, 2**63 - 1)
        if clip_id is None:
            raise InvalidInput("send a video file (multipart field 'file') or JSON {\"clip_id\": ...}")
        return _respond(engine.search_video(clip_id=clip_id, target=target, **opts))
    name = Path(upload.filename or "upload").name[:200]
    suffix = "".join(c for c in Path(name).suffix[:10] if c.isalnum() or c == ".") or ".bin"
    fd, tmp = tempfile.mkstemp(prefix="vtr-query-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            upload.save(fh)
        if os.path.getsize(tmp) == 0:
            raise InvalidInput(f"{name}: the uploaded file is empty")
        result = engine.search_video(path=tmp, target=target, display_name=name, **opts)
    finally:
        os.unlink(tmp)
    return _respond(result)


@bp.get("/clips/<int:clip_id>")
def clip(clip_id: int):
    return jsonify(with_urls(get_engine().get_clip(clip_id)))


@bp.get("/videos/<int:video_id>")
def video(video_id: int):
    info = dict(get_engine().get_video(video_id))
    info["path"], info["library"] = display_path(info["path"]), display_path(info["library"])
    info["video_url"] = video_url(video_id)
    info["clips"] = [with_urls(c) for c in info.get("clips", [])]
    return jsonify(info)


@bp.get("/stats")
def stats():
    out = get_engine().stats()
    if current_app.config.get("RELATIVE_PATHS"):
        out["libraries"] = [{**lib, "root": display_path(lib["root"])} for lib in out.get("libraries", [])]
    return jsonify(out)


@bp.get("/suggestions")
def suggestions():
    """Example queries from the caption corpus, and what the model understands (its card), for the home page."""
    n = parse_int("n", request.args.get("n"), 6, 1, 50)
    return jsonify(get_engine().suggestions(n))


@bp.get("/health")
def health():
    return jsonify(get_engine().health())


# -- admin


@bp.post("/texts")
def add_texts():
    """Add captions to the text corpus that video->text search ranks."""
    require_admin()
    body = json_body()
    texts = body.get("texts")
    if not isinstance(texts, list) or not texts:
        raise InvalidInput('send {"texts": ["a caption", ...]} with at least one text')
    if len(texts) > MAX_TEXTS_PER_REQUEST:
        raise InvalidInput(f"at most {MAX_TEXTS_PER_REQUEST} texts per request")
    limit = current_app.config["MAX_QUERY_CHARS"]
    clean = [parse_text(f"texts[{i}]", t, required=True, max_chars=limit) for i, t in enumerate(texts)]
    source = parse_text("source", body.get("source"), required=False, max_chars=200)
    ids = get_engine().add_texts(clean, source=source)
    return jsonify({"count": len(ids), "ids": ids}), 201


@bp.post("/index")
def queue_index():
    """Queue a file or folder for the indexer; only paths under VTR_INDEX_ROOTS are accepted."""
    require_admin()
    body = json_body()
    path = parse_text("path", body.get("path"), required=True, max_chars=4096)
    roots = index_roots()
    if not roots:
        raise Forbidden("no index roots are configured; set VTR_INDEX_ROOTS on the server")
    real = os.path.realpath(path)
    if not inside_index_roots(real, roots):
        raise Forbidden("path is not under a configured index root")
    if not os.path.exists(real):
        raise NotFound("path does not exist")
    job = get_index_queue().submit(real)
    job["status_url"] = f"/api/v1/index/jobs/{job['job_id']}"
    return jsonify(job), 202


@bp.get("/index/jobs")
def index_jobs():
    require_admin()
    return jsonify({"jobs": get_index_queue().list()})


@bp.get("/index/jobs/<int:job_id>")
def index_job(job_id: int):
    require_admin()
    job = get_index_queue().get(job_id)
    if job is None:
        raise NotFound(f"no index job {job_id} (jobs are kept in memory until the server restarts)")
    return jsonify(job)


@bp.delete("/videos/<int:video_id>")
def delete_video(video_id: int):
    require_admin()
    return jsonify(get_engine().delete_video(video_id))
