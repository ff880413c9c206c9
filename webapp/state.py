"""The app's long-lived resources: the search engine and the indexing queue (flaskr's ``db.py`` pattern).

Why a module of its own: blueprints need :func:`get_engine` at request time; importing it from the
package's ``__init__`` (which imports the blueprints to register them) made an import loop that only
late imports inside ``create_app`` kept from breaking. Here the accessors depend on nothing else of
the web app. The engine is heavy (model, FAISS, catalog) and lives as long as the app, so it is built
on first use and closed by :func:`close_app` (``vtr serve`` calls it when the server stops; tests
that build their own app do too), not per request.
"""

from __future__ import annotations

import threading

from flask import Flask, current_app

_ENGINE = "vtr.engine"
_QUEUE = "vtr.index_queue"
_lock = threading.Lock()


def init_app(app: Flask) -> None:
    """Install an engine handed in as ``config["ENGINE"]`` (tests, ``vtr serve``, the demo)."""
    if app.config.get("ENGINE") is not None:
        app.extensions[_ENGINE] = app.config["ENGINE"]


def get_engine():
    """The app's SearchEngine, built on first use (loading the model takes seconds, not every request)."""
    app = current_app
    engine = app.extensions.get(_ENGINE)
    if engine is None:
        with _lock:
            engine = app.extensions.get(_ENGINE)
            if engine is None:
                from retrieval.engine import SearchEngine

                c = app.config
                engine = SearchEngine(
                    home=c["HOME"], db=c["DB"], model=c["MODEL"], checkpoint=c["CHECKPOINT"], rerank_k=c["RERANK_K"],
                    min_match_probability=c.get("MIN_MATCH_PROBABILITY"),
                )  # fmt: skip
                app.extensions[_ENGINE] = engine
    return engine


def get_index_queue():
    """The app's indexing queue (``POST /api/v1/index``), created on first use."""
    app = current_app
    queue = app.extensions.get(_QUEUE)
    if queue is None:
        engine = get_engine()
        with _lock:
            queue = app.extensions.get(_QUEUE)
            if queue is None:
                from webapp.guards import index_roots
                from webapp.jobs import IndexQueue

                # index with exactly the model and into the home the engine searches
                queue = IndexQueue(
                    str(engine.home.root),
                    db=engine.db_url,
                    model=engine.model_name,
                    checkpoint=engine.checkpoint,
                    within=index_roots(),
                )
                app.extensions[_QUEUE] = queue
    return queue


def close_app(app: Flask) -> None:
    """Release the app's engine (its catalog connections); a later request builds a new one."""
    engine = app.extensions.pop(_ENGINE, None)
    if engine is not None:
        engine.close()
