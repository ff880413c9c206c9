"""The OpenAPI 3.1 description of API v1, served at ``/api/v1/openapi.json``.

Written by hand next to the routes (a test checks that every ``/api/v1`` route of the app appears
here and nothing else), so it documents intent, not whatever a generator guessed.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from retrieval.query import MAX_K, MAX_OFFSET

bp = Blueprint("openapi", __name__)


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR_RESPONSES = {
    400: "Malformed request",
    401: "Missing or wrong bearer token",
    403: "Admin API disabled, or path outside the allowed roots",
    404: "Not found",
    413: "Upload larger than the limit",
    422: "Invalid parameter or undecodable video",
    429: "Rate limited; see Retry-After",
    503: "Catalog or index unavailable",
}


def _errors(*statuses: int) -> dict:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _path_id(name: str) -> dict:
    """The integer id in a route's path, e.g. ``clip_id`` in ``/api/v1/clips/{clip_id}``."""
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}


def _json_body(required: list[str], properties: dict) -> dict:
    """A required request body: one JSON object with these properties."""
    schema = {"type": "object", "required": required, "properties": properties}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


_SEARCH_PARAMS = [
    {
        "name": "k",
        "in": "query",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 20},
        "description": "Results per page.",
    },
    {
        "name": "offset",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
        "description": "Results (or videos, with group_by_video) to skip.",
    },
    {
        "name": "rerank",
        "in": "query",
        "schema": {"type": "boolean"},
        "description": "Re-rank the top candidates with the matching head (default: when the model has a trained head).",
    },
    {
        "name": "library",
        "in": "query",
        "schema": {"type": "string"},
        "description": "Only videos of this library (id or root path).",
    },
    {
        "name": "path_prefix",
        "in": "query",
        "schema": {"type": "string"},
        "description": "Only videos whose absolute path starts with this prefix.",
    },
    {
        "name": "min_duration",
        "in": "query",
        "schema": {"type": "number", "minimum": 0},
        "description": "Only videos at least this long (seconds).",
    },
    {
        "name": "max_duration",
        "in": "query",
        "schema": {"type": "number", "minimum": 0},
        "description": "Only videos at most this long (seconds).",
    },
    {
        "name": "group_by_video",
        "in": "query",
        "schema": {"type": "boolean", "default": False},
        "description": "One result per video (its best moment) with its other matching moments under `moments`.",
    },
]

_SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "ClipHit": {
        "type": "object",
        "required": [
            "clip_id",
            "video_id",
            "video_path",
            "start",
            "end",
            "score",
            "itc_score",
            "match_score",
            "match_probability",
            "thumbnail_url",
            "video_url",
        ],
        "properties": {
            "clip_id": {"type": "integer"},
            "video_id": {"type": "integer"},
            "video_path": {"type": "string"},
            "start": {"type": "number", "description": "Seconds from the start of the video."},
            "end": {"type": "number"},
            "score": {
                "type": "number",
                "description": "What the result was ranked by: for the first `reranked` results the model's head "
                "score (the fitted fusion of itc_score and the head's margin, or match_score alone for a model without "
                "one), itc_score after them.",
            },
            "itc_score": {"type": "number", "description": "Cosine similarity of the embeddings."},
            "match_score": {"type": ["number", "null"], "description": "Matching-head logit; null when not re-ranked."},
            "match_probability": {
                "type": ["number", "null"],
                "minimum": 0,
                "maximum": 1,
                "description": "Calibrated probability that this result is right for the query (fitted on held-out "
                "data); one scale for re-ranked and plain hits. Null for video->video results and for a model "
                "without a calibration and no head score.",
            },
            "reranked": {"type": "boolean"},
            "rank": {"type": "integer", "description": "1-based position in the full ranking."},
            "thumbnail_url": {"type": "string"},
            "video_url": {"type": "string", "description": "Video URL with a #t=start,end media fragment."},
            "moments": {
                "type": "array",
                "items": _ref("ClipHit"),
                "description": "With group_by_video: the video's other matching clips, best first.",
            },
        },
    },
    "TextHit": {
        "type": "object",
        "required": ["text_id", "text", "score", "itc_score", "match_score", "match_probability"],
        "properties": {
            "text_id": {"type": "integer"},
            "text": {"type": "string"},
            "source": {"type": ["string", "null"]},
            "score": {"type": "number"},
            "itc_score": {"type": "number"},
            "match_score": {"type": ["number", "null"]},
            "match_probability": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "reranked": {"type": "boolean"},
            "rank": {"type": "integer"},
        },
    },
    "SearchResponse": {
        "type": "object",
        "required": ["query", "took_ms", "results"],
        "properties": {
            "query": {"description": "The text, or {clip_id} / {file} for video queries."},
            "target": {"type": "string", "enum": ["clips", "texts"]},
            "took_ms": {"type": "number"},
            "offset": {"type": "integer"},
            "k": {"type": "integer"},
            "reranked": {"type": "integer", "description": "How many top candidates the matching head re-scored."},
            "results": {"type": "array", "items": {"oneOf": [_ref("ClipHit"), _ref("TextHit")]}},
        },
    },
}


def build_document() -> dict:
    err = {f"E{s}": _json(_ref("Error"), d) for s, d in _ERROR_RESPONSES.items()}
    admin = [{"bearer": []}]
    obj = {"type": "object"}
    paths = {
        "/api/v1/search": {
            "get": {
                "summary": "Text to video moments",
                "description": "Embedding (ITC) candidates from FAISS; the top `rerank_k` are re-scored by the "
                "matching head and sorted by match logit; the rest follow in ITC order.",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": "The text query.",
                    },
                    *_SEARCH_PARAMS,
                ],
                "responses": {"200": _json(_ref("SearchResponse"), "Ranked clips"), **_errors(422, 429, 503)},
            }
        },
        "/api/v1/search/video": {
            "post": {
                "summary": "Video to texts or clips (query by example)",
                "parameters": [
                    {
                        "name": "target",
                        "in": "query",
                        "schema": {"type": "string", "enum": ["clips", "texts"], "default": "clips"},
                    },
                    *_SEARCH_PARAMS,
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {
                                    "file": {"type": "string", "format": "binary"},
                                    "target": {"type": "string"},
                                },
                            }
                        },
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["clip_id"],
                                "properties": {
                                    "clip_id": {"type": "integer"},
                                    "target": {"type": "string"},
                                    "k": {"type": "integer"},
                                },
                            }
                        },
                    },
                },
                "responses": {
                    "200": _json(_ref("SearchResponse"), "Ranked clips or texts"),
                    **_errors(404, 413, 422, 429, 503),
                },
            }
        },
        "/api/v1/clips/{clip_id}": {
            "get": {
                "summary": "One clip",
                "parameters": [_path_id("clip_id")],
                "responses": {"200": _json(_ref("ClipHit"), "The clip"), **_errors(404)},
            }
        },
        "/api/v1/videos/{video_id}": {
            "get": {
                "summary": "One video with its clips",
                "parameters": [_path_id("video_id")],
                "responses": {"200": _json(obj, "The video"), **_errors(404)},
            },
            "delete": {
                "summary": "Remove a video from the index (admin)",
                "security": admin,
                "parameters": [_path_id("video_id")],
                "responses": {"200": _json(obj, "Removed"), **_errors(401, 403, 404)},
            },
        },
        "/api/v1/stats": {"get": {"summary": "Counts and index facts", "responses": {"200": _json(obj, "Stats")}}},
        "/api/v1/health": {
            "get": {"summary": "Liveness and readiness", "responses": {"200": _json(obj, "Healthy"), **_errors(503)}}
        },
        "/api/v1/texts": {
            "post": {
                "summary": "Add captions to the text corpus (admin)",
                "security": admin,
                "requestBody": _json_body(
                    ["texts"], {"texts": {"type": "array", "items": {"type": "string"}}, "source": {"type": "string"}}
                ),
                "responses": {"201": _json(obj, "Ids of the texts"), **_errors(401, 403, 422)},
            }
        },
        "/api/v1/index": {
            "post": {
                "summary": "Queue a file or folder for indexing (admin; under VTR_INDEX_ROOTS only)",
                "security": admin,
                "requestBody": _json_body(["path"], {"path": {"type": "string"}}),
                "responses": {"202": _json(obj, "Queued"), **_errors(401, 403, 404, 422)},
            }
        },
        "/api/v1/index/jobs": {
            "get": {
                "summary": "Indexing jobs queued since the server started, newest first (admin)",
                "security": admin,
                "responses": {"200": _json(obj, "Jobs"), **_errors(401, 403)},
            }
        },
        "/api/v1/index/jobs/{job_id}": {
            "get": {
                "summary": "One indexing job: queued, running, done or failed, with the tail of its output (admin)",
                "security": admin,
                "parameters": [_path_id("job_id")],
                "responses": {"200": _json(obj, "The job"), **_errors(401, 403, 404)},
            }
        },
        "/api/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json(obj, "OpenAPI")}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "vtr video-text retrieval API",
            "version": "1",
            "description": 'Errors always have the shape {"error": {"code", "message"}}.',
        },
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "responses": err,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "The server's VTR_ADMIN_TOKEN"}
            },
        },
    }


@bp.get("/api/v1/openapi.json")
def openapi_json():
    return jsonify(build_document())
