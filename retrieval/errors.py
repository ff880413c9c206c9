"""One exception family for the whole engine.

Every error a user can cause (bad file, bad request, wrong checkpoint) is a ``VTRError``.
Each carries an HTTP status and a stable machine-readable ``code`` so that the CLI can print
``message`` and exit cleanly, and the web API can render one JSON shape
``{"error": {"code", "message"}}`` without knowing the individual error types.
"""

from __future__ import annotations


class VTRError(Exception):
    """Base class: a problem the user can fix, described in words they can act on."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.headers: dict[str, str] = dict(headers or {})  # sent with the HTTP error (Retry-After, ...)

    def to_dict(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class InvalidInput(VTRError):
    status = 422
    code = "invalid_input"


class NotFound(VTRError):
    status = 404
    code = "not_found"


class ConfigError(VTRError):
    """Unknown model name, malformed config file, bad setting."""

    status = 400
    code = "config_error"


class CheckpointError(VTRError):
    """A weights file that cannot be loaded exactly into the requested architecture."""

    status = 400
    code = "checkpoint_error"


class DecodeError(VTRError):
    """A video file that cannot be read (corrupt, truncated, no video stream, timeout)."""

    status = 422
    code = "decode_error"


class IndexMismatch(VTRError):
    """An on-disk index built by another model, dimension or metric than the one asked for."""

    status = 409
    code = "index_mismatch"


class StoreError(VTRError):
    """The catalog database is unreachable or its schema is not the one this code expects."""

    status = 503
    code = "store_error"
