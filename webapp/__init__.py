"""The web app: JSON API v1, clip-retrieval compatible routes, media with Range, and the browser UI.

``create_app(config)`` builds a Flask app; every setting comes from ``config`` (keys are the upper-case
setting names of :mod:`retrieval.settings`, e.g. ``{"HOME": "/data/vtr", "RERANK_K": 32}``), else from
the environment, else from the default. The search engine (model + index + catalog) is heavy, so it is
built on first use through :func:`webapp.state.get_engine`; tests inject a ready one as ``config["ENGINE"]``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from werkzeug.routing import IntegerConverter

from retrieval.settings import get_setting, resolve
from webapp import api, compat, media, openapi, pages, state
from webapp.errors import register_error_handlers
from webapp.ratelimit import RateLimiter

# settings the web app reads (names in retrieval/settings.py); app.config keys are their upper-case forms
WEB_SETTINGS = (
    "home",
    "db",
    "model",
    "checkpoint",
    "rerank_k",
    "admin_token",
    "index_roots",
    "max_upload_mb",
    "max_query_chars",
    "rate_limit",
    "trust_proxy",
    "min_match_probability",
    "relative_paths",
)
_MULTIPART_SLACK = 64 * 1024  # form boundaries and headers around an upload of the maximum size


class _RowIdConverter(IntegerConverter):
    """``<int:...>`` in this app's routes: ids are 64-bit keys, so a longer number matches no route (404).

    Why: SQLite raises OverflowError on an int past 64 bits, which would surface as a 500.
    """

    def __init__(self, map, fixed_digits=0, min=None, max=2**63 - 1, signed=False):  # noqa: A002
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


# left unset unless given: the engine then uses the model recorded in the index (see SearchEngine)
_ENGINE_CHOOSES = ("model",)


def _resolved_settings(config: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name in WEB_SETTINGS:
        key = name.upper()
        given = config.get(key, config.get(name))
        if name in _ENGINE_CHOOSES:
            env = get_setting(name).env
            out[key] = given if given is not None else (os.environ.get(env) or None)
        else:
            out[key] = resolve(name, given)
    for key in ("TRUST_PROXY", "RELATIVE_PATHS"):
        if isinstance(out[key], str):
            out[key] = out[key].lower() in ("1", "true", "yes", "on")
    out["MIN_MATCH_PROBABILITY"] = float(out["MIN_MATCH_PROBABILITY"])
    for key in ("RERANK_K", "MAX_UPLOAD_MB", "MAX_QUERY_CHARS", "RATE_LIMIT"):
        out[key] = int(out[key])
    return out


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` overrides settings and may carry ``ENGINE`` (a ready SearchEngine)."""
    config = dict(config or {})
    app = Flask(__name__)
    app.url_map.converters["int"] = _RowIdConverter
    app.config.update(_resolved_settings(config))
    app.config.update({k: v for k, v in config.items() if k.isupper() and k not in app.config})
    app.config["MAX_CONTENT_LENGTH"] = app.config["MAX_UPLOAD_MB"] * 2**20 + _MULTIPART_SLACK
    app.config["MAX_FORM_MEMORY_SIZE"] = app.config["MAX_CONTENT_LENGTH"]
    app.json.sort_keys = False  # keep result fields in the documented order
    if app.config["TRUST_PROXY"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)
    app.extensions["vtr.ratelimit"] = RateLimiter(app.config["RATE_LIMIT"])
    state.init_app(app)

    register_error_handlers(app)
    for bp in (api.bp, compat.bp, media.bp, openapi.bp, pages.bp):
        app.register_blueprint(bp)
    return app
