"""Request guards shared by the blueprints: per-client rate limit, admin bearer token, argument parsing.

Argument parsers raise :class:`retrieval.errors.InvalidInput` naming the parameter and the accepted
range, so every bad query string becomes a 422 in the one error shape, never a 500.
"""

from __future__ import annotations

import hmac
import math
import os

from flask import current_app, request

from retrieval.errors import InvalidInput
from retrieval.utf8 import is_utf8_encodable
from webapp.errors import AdminDisabled, RateLimited, Unauthorized

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def client_address() -> str:
    return request.remote_addr or "unknown"


def limit_rate() -> None:
    """``before_request`` hook: one token per request from this client, or 429 with Retry-After."""
    limiter = current_app.extensions["vtr.ratelimit"]
    wait = limiter.acquire(client_address())
    if wait > 0:
        raise RateLimited(
            f"too many requests from {client_address()}: limit {limiter.per_minute} per minute",
            headers={"Retry-After": limiter.retry_after(wait)},
        )


def require_admin() -> None:
    """Admin routes need ``Authorization: Bearer <VTR_ADMIN_TOKEN>``; with no token configured they are off."""
    token = current_app.config.get("ADMIN_TOKEN")
    if not token:
        raise AdminDisabled("the admin API is disabled; set VTR_ADMIN_TOKEN on the server to enable it")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized(
            "admin route: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="vtr-admin"'},
        )
    if not hmac.compare_digest(given.strip().encode(), str(token).encode()):
        raise Unauthorized(
            "admin route: wrong bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="vtr-admin", error="invalid_token"'},
        )


def index_roots() -> list[str]:
    """The real paths of ``VTR_INDEX_ROOTS`` (empty when unset)."""
    raw = current_app.config.get("INDEX_ROOTS") or ""
    return [os.path.realpath(r) for r in raw.split(os.pathsep) if r.strip()]


def inside_index_roots(path: str | os.PathLike, roots: list[str]) -> bool:
    """Whether ``path``'s real path (every link resolved, now) lies inside one of ``roots``."""
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


# -- parsing


# The query parameters openapi.json types as integer, number or boolean (tests/test_api_errors.py keeps
# this in step with webapp/openapi.py); in a query string an empty value for one of them is an error.
TYPED_QUERY_PARAMS = frozenset({"k", "offset", "rerank", "min_duration", "max_duration", "group_by_video", "n"})


def check_query_args() -> None:
    """Reject a query string that repeats a parameter or leaves a typed one empty.

    Why: every parameter takes one value, and reading only the first of several (``n=&n=7``) would
    answer a request other than the one sent; an empty number (``min_duration=``) is not a number.
    JSON and form bodies keep their own rules (an empty field there means "not given").
    """
    for name in request.args:
        values = request.args.getlist(name)
        if len(values) > 1:
            raise InvalidInput(f"query parameter {name!r} is given {len(values)} times; give it once")
        if name in TYPED_QUERY_PARAMS and values[0].strip() == "":
            raise InvalidInput(f"query parameter {name!r} is empty; give a value or leave it out")


def parse_int(name: str, raw, default: int | None, lo: int, hi: int) -> int | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return default
    if isinstance(raw, bool):
        raise InvalidInput(f"{name} must be an integer, not a boolean")
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    try:
        value = int(raw) if isinstance(raw, int) else int(str(raw).strip(), 10)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be an integer between {lo} and {hi}, not {str(raw)[:40]!r}") from None
    if not lo <= value <= hi:
        raise InvalidInput(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def parse_float(name: str, raw, lo: float = 0.0, hi: float = 1e9) -> float | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return None
    if isinstance(raw, bool):
        raise InvalidInput(f"{name} must be a number, not a boolean")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number, not {str(raw)[:40]!r}") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise InvalidInput(f"{name} must be a number between {lo:g} and {hi:g}")
    return value


def parse_bool(name: str, raw, default: bool | None) -> bool | None:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return default
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInput(f"{name} must be true or false (1/0, yes/no, on/off), not {str(raw)[:40]!r}")


def parse_text(name: str, raw, *, required: bool, max_chars: int) -> str | None:
    if raw is None:
        if required:
            raise InvalidInput(f"{name} is required")
        return None
    if not isinstance(raw, str):
        raise InvalidInput(f"{name} must be a string")
    text = raw.strip()
    if not text:
        if required:
            raise InvalidInput(f"{name} must not be empty")
        return None
    if len(text) > max_chars:
        raise InvalidInput(f"{name} is too long: {len(text)} characters (limit {max_chars})")
    if "\x00" in text:
        raise InvalidInput(f"{name} must not contain NUL characters")
    if not is_utf8_encodable(text):
        raise InvalidInput(f"{name} is not valid Unicode (it contains a lone surrogate)")
    return text


def json_body() -> dict:
    """The request body as a JSON object, whatever the Content-Type (clients often send none)."""
    try:
        data = request.get_json(force=True, silent=True)
    except RecursionError:  # json.loads gives up on deeply nested arrays; not a ValueError, so not silent
        raise InvalidInput("the request body is nested too deeply") from None
    if not isinstance(data, dict):
        raise InvalidInput("the request body must be a JSON object")
    return data
