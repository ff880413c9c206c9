"""clip-retrieval back-end protocol, so ``ClipClient`` and clip-retrieval's web front can search videos.

Mapping (see the protocol notes in README): ``modality: "image"`` searches clips, ``"text"`` searches
the caption corpus; the query is ``text``, or ``image`` (base64 of a file: an image or a short video),
or ``embedding_input`` (a vector in the model's space). Each clip result carries its thumbnail in
``url`` (absolute, so a front on another origin can draw it) and the extra keys ``start``, ``end``,
``video_url``, ``video_id``. Bodies are JSON with or without a Content-Type header; the
near-duplicate, safety and aesthetic options ClipClient sends by default are accepted and ignored.
Errors use the same JSON error shape as the rest of the API instead of clip-retrieval's bare 500s.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import tempfile

from flask import Blueprint, current_app, jsonify, request

from retrieval.errors import InvalidInput, NotFound
from retrieval.query import MAX_K
from webapp.api import thumbnail_url, video_url
from webapp.guards import json_body, limit_rate, parse_int, parse_text
from webapp.state import get_engine

bp = Blueprint("compat", __name__)
bp.before_request(limit_rate)

INDEX_NAME = "vtr"
MAX_METADATA_IDS = 10_000
MAX_RESULT_IDS = 100_000  # num_result_ids accepted (and capped at MAX_K); larger is refused as nonsense
MODALITIES = {"image": "clips", "text": "texts"}


@bp.after_request
def _cors(resp):
    resp.headers["Access-Control-Allow-Origin"] = "*"
    resp.headers["Access-Control-Allow-Headers"] = "Content-Type"
    resp.headers["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    return resp


def _check_index(body: dict) -> None:
    name = body.get("indice_name")
    if name is None:
        raise InvalidInput(f"indice_name is required (this server has: {INDEX_NAME})")
    if name != INDEX_NAME:
        raise NotFound(f"unknown indice_name {str(name)[:80]!r}; this server has: {INDEX_NAME}")


def _absolute(path: str) -> str:
    return request.host_url.rstrip("/") + path


def _clip_item(hit: dict, similarity: float) -> dict:
    return {
        "id": hit["clip_id"],
        "similarity": similarity,
        "url": _absolute(thumbnail_url(hit["clip_id"])),
        "caption": f"{os.path.basename(hit['video_path'])} {hit['start']:.1f}-{hit['end']:.1f}s",
        "video_id": hit["video_id"],
        "video_path": hit["video_path"],
        "start": hit["start"],
        "end": hit["end"],
        "video_url": _absolute(video_url(hit["video_id"], hit["start"], hit["end"])),
    }


def _text_item(hit: dict, similarity: float) -> dict:
    return {"id": hit["text_id"], "similarity": similarity, "caption": hit["text"]}


def _embedding(raw) -> list[float]:
    if not isinstance(raw, list) or not raw:
        raise InvalidInput("embedding_input must be a non-empty list of numbers")
    try:
        vec = [float(x) for x in raw]
    except (TypeError, ValueError):
        raise InvalidInput("embedding_input must contain only numbers") from None
    if not all(math.isfinite(x) for x in vec):
        raise InvalidInput("embedding_input must contain only finite numbers")
    return vec


def _decode_upload(raw) -> bytes:
    if not isinstance(raw, str):
        raise InvalidInput("image must be a base64 string")
    if raw.startswith("data:"):
        raw = raw.partition(",")[2]
    try:
        data = base64.b64decode("".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("image is not valid base64") from None
    if not data:
        raise InvalidInput("image is empty")
    return data


@bp.get("/indices-list")
def indices_list():
    return jsonify([INDEX_NAME])


@bp.get("/config.json")
def front_config():
    return jsonify({"defaultBackend": request.host_url.rstrip("/"), "defaultIndex": INDEX_NAME, "urlColumn": "url"})


@bp.post("/knn-service")
def knn_service():
    body = json_body()
    _check_index(body)
    modality = body.get("modality")
    if not isinstance(modality, str) or modality not in MODALITIES:
        raise InvalidInput('modality is required: "image" (search clips) or "text" (search captions)')
    target = MODALITIES[modality]
    num_images = parse_int("num_images", body.get("num_images"), None, 0, MAX_K)
    if num_images is None:
        raise InvalidInput("num_images is required")
    # clip-front asks for 3000 ids (10000 for a download) by default: serve the first MAX_K of them
    num_ids = min(MAX_K, parse_int("num_result_ids", body.get("num_result_ids"), num_images, 0, MAX_RESULT_IDS))
    total = max(num_images, num_ids)
    if total == 0:
        return jsonify([])
    max_chars = current_app.config["MAX_QUERY_CHARS"]
    text = parse_text("text", body.get("text"), required=False, max_chars=max_chars)
    engine = get_engine()
    opts = {"k": total, "offset": 0, "rerank": None}
    if text:
        if target == "texts":  # text -> captions: embedding similarity between texts
            result = engine.search_embedding(engine.embed_text(text), target="texts", k=total)
        else:
            result = engine.search_text(text, **opts)
    elif body.get("image"):
        data = _decode_upload(body["image"])
        fd, tmp = tempfile.mkstemp(prefix="vtr-knn-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            result = engine.search_video(path=tmp, target=target, display_name="image", **opts)
        finally:
            os.unlink(tmp)
    elif body.get("image_url"):
        raise InvalidInput("image_url is not supported (the server never fetches URLs); send the file in 'image'")
    elif body.get("embedding_input") is not None:
        result = engine.search_embedding(_embedding(body["embedding_input"]), target=target, k=total)
    else:
        raise InvalidInput("send one of text, image or embedding_input")
    out = []
    for i, hit in enumerate(result["results"]):
        sim = float(hit["score"])
        if i >= num_images:
            out.append({"id": hit["clip_id"] if target == "clips" else hit["text_id"], "similarity": sim})
        else:
            out.append(_clip_item(hit, sim) if target == "clips" else _text_item(hit, sim))
    return jsonify(out)


@bp.post("/metadata")
def metadata():
    body = json_body()
    _check_index(body)
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise InvalidInput("ids must be a list of integers")
    if len(ids) > MAX_METADATA_IDS:
        raise InvalidInput(f"at most {MAX_METADATA_IDS} ids per request")
    clean = [parse_int(f"ids[{i}]", x, None, 0, 2**63 - 1) for i, x in enumerate(ids)]
    found = get_engine().get_clips([i for i in clean if i is not None])
    out = []
    for cid in clean:
        hit = found.get(cid)
        meta = _clip_item(hit, 0.0) if hit else {}
        meta.pop("similarity", None)
        meta.pop("id", None)
        out.append({"id": cid, "metadata": meta})
    return jsonify(out)
