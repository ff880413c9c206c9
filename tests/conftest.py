"""Shared fixtures: expensive objects (the tiny model) are session-scoped; storage is per test."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny():
    """(model, preprocess, tokenizer) of the registered tiny test architecture, random init, seeded."""
    from retrieval import create_model_and_transforms

    torch.manual_seed(0)
    return create_model_and_transforms("viclip-tiny-test", pretrained="random")


@pytest.fixture(scope="session")
def search_home(tmp_path_factory, tiny):
    """The indexed home with its caption corpus (read-only for tests: copy it before writing).

    Here, not in a test module: a fixture imported into several modules is registered (and, being
    session-scoped, built) once per importing module; in conftest it is built once per session.
    """
    from retrieval.engine import SearchEngine
    from tests.home import build_home

    built = build_home(tmp_path_factory.mktemp("search"))
    eng = SearchEngine(built["home"], bundle=tiny)
    built["text_ids"] = eng.add_texts(built["texts"], source="captions")
    eng.close()
    return built


@pytest.fixture(scope="session")
def engine(search_home, tiny):
    """A SearchEngine over ``search_home`` sharing the session's tiny model (the indexer's weights)."""
    from tests.home import make_engine

    eng = make_engine(search_home, tiny)
    yield eng
    eng.close()


@pytest.fixture(scope="session")
def postgres_server():
    """A running throwaway PostgreSQL server for the whole session (skipped with a reason when unavailable)."""
    import shutil
    import subprocess

    from tests.pg import PostgresServer, find_bindir

    if find_bindir() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed: apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg not installed: pip install 'psycopg[binary]'")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot start PostgreSQL as the postgres user")
    server = PostgresServer()
    try:
        server.start()
    except (RuntimeError, subprocess.TimeoutExpired, KeyError, LookupError) as exc:
        server.stop()
        pytest.skip(f"could not start a throwaway PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server, request):
    """A fresh, empty database on the session's server for each test."""
    import time

    name = (
        "t_"
        + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
        + f"_{os.getpid()}_{time.monotonic_ns() % 100000}"
    )
    return postgres_server.create_database(name)
