"""Alembic migrations of the catalog schema, runnable from code (``upgrade(url)``) or ``vtr db upgrade``.

The tables themselves live in :mod:`retrieval.catalog`; each revision here is a frozen snapshot of a
change to them, and ``tests/test_migrations.py`` checks that upgrading an empty database to head
yields exactly those tables.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def _config(url: str):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head() -> str:
    """The newest revision id in ``versions/``."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config("sqlite://")).get_current_head()


def current(url: str) -> str | None:
    """The revision the database at ``url`` is at (None for an empty or unversioned database)."""
    from alembic.runtime.migration import MigrationContext

    from retrieval.catalog import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> str:
    """Bring the catalog at ``url`` to ``revision``; returns the revision it is at afterwards.

    A database created by :class:`retrieval.catalog.Catalog` (tables + stamp) is already at head,
    so this is a no-op for it; an empty database gets every migration in order.
    """
    from alembic import command

    from retrieval.catalog import make_engine
    from retrieval.errors import StoreError

    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            cfg = _config(url)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
        return current(url) or ""
    except Exception as exc:  # alembic/SQLAlchemy errors -> one readable message
        if isinstance(exc, StoreError):
            raise
        raise StoreError(f"migrating the catalog failed: {exc}") from exc
    finally:
        engine.dispose()
