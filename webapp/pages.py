"""The browser UI: one server-rendered page; everything dynamic is plain JS against API v1."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template, send_from_directory

from retrieval.query import MAX_K
from webapp.state import get_engine

bp = Blueprint("pages", __name__)  # templates/ and static/ are the app's own folders
DEFAULT_PLACEHOLDER = "a red circle moves left"


@bp.get("/")
def index():
    verified = get_engine().home.read_examples()  # queries `vtr demo` checked to find a right clip first
    return render_template(
        "index.html",
        max_query_chars=current_app.config["MAX_QUERY_CHARS"],
        max_upload_mb=current_app.config["MAX_UPLOAD_MB"],
        max_k=MAX_K,
        placeholder=verified[0] if verified else DEFAULT_PLACEHOLDER,
    )


@bp.get("/favicon.ico")
def favicon():
    """The icon browsers ask for on every page (an SVG: every current browser takes one)."""
    resp = send_from_directory(current_app.static_folder, "favicon.svg", mimetype="image/svg+xml", max_age=86400)
    return resp


@bp.after_app_request
def _page_security_headers(resp):
    if resp.mimetype == "text/html":
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; script-src 'self'; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
        )
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
    return resp
