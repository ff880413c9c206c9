"""The browser UI: one server-rendered page; everything dynamic is plain JS against API v1."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from retrieval.query import MAX_K

bp = Blueprint("pages", __name__)  # templates/ and static/ are the app's own folders


@bp.get("/")
def index():
    return render_template(
        "index.html",
        max_query_chars=current_app.config["MAX_QUERY_CHARS"],
        max_upload_mb=current_app.config["MAX_UPLOAD_MB"],
        max_k=MAX_K,
    )


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
