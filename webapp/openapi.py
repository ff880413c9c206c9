"""The OpenAPI 3.1 description of API v1, served at ``/api/v1/openapi.json``.

Written by hand next to the routes (a test checks that every ``/api/v1`` route of the app appears
here and nothing else), so it documents intent, not whatever a generator guessed.
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from retrieval.query import MAX_K, MAX_OFFSET, TARGETS

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
    405: "Method not allowed for this URL",
    413: "Upload larger than the limit",
    422: "Invalid parameter or undecodable video",
    429: "Rate limited; see Retry-After",
    503: "Catalog or index unavailable",
}


# every /api/v1 route is rate limited, and anything may find the catalog unreachable
_ALWAYS = (405, 429, 503)
_MAX_ID = 2**63 - 1  # ids are 64-bit keys; a longer number matches no route
_MAX_DURATION = 1e9  # seconds; what the server's duration filters accept
_ID = {"type": "integer", "minimum": 0, "maximum": _MAX_ID}
_NO_NUL = "^[^\\x00]*$"  # text parameters may not contain NUL characters
_WORDS = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"  # ... and a required text must have a non-blank character


def _errors(*statuses: int) -> dict:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in sorted({*statuses, *_ALWAYS})}


def _path_id(name: str) -> dict:
    """The integer id in a route's path, e.g. ``clip_id`` in ``/api/v1/clips/{clip_id}``."""
    return {"name": name, "in": "path", "required": True, "schema": _ID}


def _text(max_chars: int, *, required: bool = False) -> dict:
    """A text field as the server's ``parse_text`` accepts it (surrounding whitespace is stripped)."""
    schema = {"type": "string", "maxLength": max_chars, "pattern": _WORDS if required else _NO_NUL}
    if required:
        schema["minLength"] = 1
    return schema


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
        "schema": _text(4096),
        "description": "Only videos of this library (id or root path); an unknown library is a 404.",
    },
    {
        "name": "path_prefix",
        "in": "query",
        "schema": _text(4096),
        "description": "Only videos whose absolute path starts with this prefix.",
    },
    {
        "name": "min_duration",
        "in": "query",
        "schema": {"type": "number", "minimum": 0, "maximum": _MAX_DURATION},
        "description": "Only videos at least this long (seconds). Above max_duration nothing matches.",
    },
    {
        "name": "max_duration",
        "in": "query",
        "schema": {"type": "number", "minimum": 0, "maximum": _MAX_DURATION},
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
    "Clip": {
        "type": "object",
        "required": ["clip_id", "video_id", "video_path", "start", "end", "thumbnail_url", "video_url"],
        "properties": {
            "clip_id": {"type": "integer"},
            "video_id": {"type": "integer"},
            "video_path": {"type": "string"},
            "library": {"type": "string", "description": "Root folder of the video's library."},
            "index": {"type": "integer", "description": "Position of the clip in its video, from 0."},
            "start": {"type": "number", "description": "Seconds from the start of the video."},
            "end": {"type": "number"},
            "video_duration": {"type": ["number", "null"]},
            "thumbnail_url": {"type": "string"},
            "video_url": {"type": "string", "description": "Video URL with a #t=start,end media fragment."},
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
                "score (the fitted fusion of itc_score and the head's margin, with each candidate's cosine lowered by "
                "its similarity to the home's query bank when the model fitted a bank mix; match_score alone for a "
                "model without one), itc_score after them.",
            },
            "itc_score": {"type": "number", "description": "Cosine similarity of the embeddings."},
            "match_score": {
                "type": ["number", "null"],
                "description": "Matching-head logit; null when not re-ranked, or when the model's fitted ranking gives the head no "
                "weight (it is then not run).",
            },
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


def _body_fields() -> dict:
    """Keys of ``POST /api/v1/search/video``'s JSON or form body that the schema types.

    The search options (k, offset, rerank, filters, group_by_video) may also be sent as body keys, spelled
    as their query parameters (the web UI sends form strings); they are described, not typed, here.
    """
    return {"target": {"type": "string", "enum": list(TARGETS), "default": "clips"}}


def build_document(max_query_chars: int = 1000) -> dict:
    """The document; ``max_query_chars`` is the server's VTR_MAX_QUERY_CHARS."""
    err = {f"E{s}": _json(_ref("Error"), d) for s, d in _ERROR_RESPONSES.items()}
    admin = [{"bearer": []}]
    obj = {"type": "object"}
    fields = _body_fields()
    paths = {
        "/api/v1/search": {
            "get": {
                "summary": "Text to video moments",
                "description": "Embedding (ITC) candidates from FAISS; the top `rerank_k` are re-scored by the "
                "matching head and ordered by the model's default ranking (the checkpoint's fitted fusion of cosine and "
                "head margin, else the match logit); the rest follow in ITC order.",
                "parameters": [
                    {
                        "name": "q",
                        "in": "query",
                        "required": True,
                        "schema": _text(max_query_chars, required=True),
                        "description": "The text query (at least one non-blank character).",
                    },
                    *_SEARCH_PARAMS,
                ],
                "responses": {"200": _json(_ref("SearchResponse"), "Ranked clips"), **_errors(404, 422)},
            }
        },
        "/api/v1/search/video": {
            "post": {
                "summary": "Video to texts or clips (query by example)",
                "description": "The search options may come as query parameters and as form fields or JSON keys "
                "(spelled as the query parameters); each given value must be valid, and the body's wins.",
                "parameters": [
                    {"name": "target", "in": "query", "schema": fields["target"]},
                    *_SEARCH_PARAMS,
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "required": ["file"],
                                "properties": {"file": {"type": "string", "format": "binary"}, **fields},
                            }
                        },
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["clip_id"],
                                "properties": {"clip_id": _ID, **fields},
                            }
                        },
                    },
                },
                "responses": {
                    "200": _json(_ref("SearchResponse"), "Ranked clips or texts"),
                    **_errors(404, 413, 422),
                },
            }
        },
        "/api/v1/clips/{clip_id}": {
            "get": {
                "summary": "One clip",
                "parameters": [_path_id("clip_id")],
                "responses": {"200": _json(_ref("Clip"), "The clip"), **_errors(404)},
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
        "/api/v1/stats": {
            "get": {"summary": "Counts and index facts", "responses": {"200": _json(obj, "Stats"), **_errors()}}
        },
        "/api/v1/suggestions": {
            "get": {
                "summary": "Example queries from the caption corpus and the model's card (for a home page)",
                "parameters": [
                    {
                        "name": "n",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 50, "default": 6},
                    }
                ],
                "responses": {"200": _json(obj, "Examples and model card"), **_errors(422)},
            }
        },
        "/api/v1/health": {
            "get": {"summary": "Liveness and readiness", "responses": {"200": _json(obj, "Healthy"), **_errors()}}
        },
        "/api/v1/texts": {
            "post": {
                "summary": "Add captions to the text corpus (admin)",
                "security": admin,
                "requestBody": _json_body(
                    ["texts"],
                    {
                        "texts": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 10_000,
                            "items": _text(max_query_chars, required=True),
                        },
                        "source": {**_text(200), "type": ["string", "null"]},
                    },
                ),
                "responses": {"201": _json(obj, "Ids of the texts"), **_errors(401, 403, 422)},
            }
        },
        "/api/v1/index": {
            "post": {
                "summary": "Queue a file or folder for indexing (admin; under VTR_INDEX_ROOTS only)",
                "security": admin,
                "requestBody": _json_body(["path"], {"path": _text(4096, required=True)}),
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
        "/api/v1/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json(obj, "OpenAPI"), **_errors()}}
        },
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
    return jsonify(build_document(current_app.config.get("MAX_QUERY_CHARS", 1000)))
