"""One JSON error shape for every failure: ``{"error": {"code": ..., "message": ...}}``, and the
web app's own members of the one exception family (:class:`retrieval.errors.VTRError`).

Clients (the UI, ``ClipClient``, curl users) should never have to parse an HTML error page or a
stack trace. Library errors (:class:`retrieval.errors.VTRError`) carry their own status and code;
Flask/werkzeug's own errors (unknown route, wrong method, body too large, bad Range) are mapped to
the same shape here; anything else is logged and answered with a bare 500 that leaks nothing.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app, jsonify
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from retrieval.errors import VTRError

log = logging.getLogger(__name__)


class Forbidden(VTRError):
    """The request is understood but not allowed here (a path outside the index roots)."""

    status = 403
    code = "forbidden"


class AdminDisabled(Forbidden):
    code = "admin_disabled"


class Unauthorized(VTRError):
    status = 401
    code = "unauthorized"


class RateLimited(VTRError):
    status = 429
    code = "rate_limited"


# werkzeug status -> stable machine-readable code (the message stays human-readable)
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "invalid_input",
    429: "rate_limited",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
    503: "unavailable",
}

# headers of an HTTPException worth keeping on the JSON response (405 Allow, 416 Content-Range, 401 ...)
_KEPT_HEADERS = {"allow", "content-range", "www-authenticate", "retry-after"}


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> Response:
    resp = jsonify({"error": {"code": code, "message": message}})
    resp.status_code = status
    for k, v in (headers or {}).items():
        resp.headers[k] = v
    return resp


def _from_vtr(exc: VTRError) -> Response:
    if exc.status >= 500:
        log.warning("service problem: %s", exc.message)
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _from_http(exc: HTTPException) -> Response:
    status = exc.code or 500
    message = exc.description or exc.name
    if status == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        message = "request body too large" + (f" (limit {limit // 2**20} MiB)" if limit else "")
    elif status == 404 and "requested URL was not found" in message:
        message = "no such page or API route"
    elif status == 405:
        message = "method not allowed for this URL"
    kept = {k: v for k, v in exc.get_headers() if k.lower() in _KEPT_HEADERS}
    return error_response(status, HTTP_CODES.get(status, f"http_{status}"), message, kept)


def _from_unexpected(exc: Exception) -> Response:
    if isinstance(exc, HTTPException):  # raised from deep inside werkzeug helpers
        return _from_http(exc)
    if isinstance(exc, SQLAlchemyError):  # a damaged, locked or unreachable catalog: the service, not the request
        log.exception("catalog database error while serving a request")
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        return error_response(503, "store_error", f"the catalog database failed: {reason}")
    log.exception("unhandled error while serving a request")
    return error_response(500, "internal_error", "internal server error (see the server log)")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(VTRError, _from_vtr)
    app.register_error_handler(HTTPException, _from_http)
    app.register_error_handler(Exception, _from_unexpected)
