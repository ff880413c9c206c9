"""A throwaway PostgreSQL 15 server for tests: ``initdb`` + ``pg_ctl`` on 127.0.0.1 and a free port.

Runs the server as the ``postgres`` system user when the tests run as root (PostgreSQL refuses to
run as root), as the current user otherwise. Starts in about a second, listens only on loopback,
trusts local connections, and is deleted completely on ``stop()``.

The fixtures ``postgres_server`` (session-scoped; skips with the reason when PostgreSQL or psycopg
is missing) and ``postgres_url`` (a fresh database per test) are in ``conftest.py``::

    @pytest.mark.postgres
    def test_something(postgres_url): ...
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: $PG_BINDIR, Debian's /usr/lib/postgresql/<newest>/bin, or PATH."""
    candidates = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0
    )
    candidates += [Path(p) for p in reversed(versions)]
    if shutil.which("initdb"):
        candidates.append(Path(shutil.which("initdb")).parent)
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path | None = None, dbname: str = "vtr_test"):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
        self.dbname = dbname
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="vtr-pg-"))
        self.data = self.dir / "data"
        self.sockets = self.dir / "sock"
        self.user = "postgres" if os.geteuid() == 0 else None
        self.started = False

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stdout[-1500:]}{proc.stderr[-1500:]}"
            )
        return proc

    def start(self) -> PostgresServer:
        self.sockets.mkdir()
        if self.user:
            shutil.chown(self.dir, self.user)
            shutil.chown(self.sockets, self.user)
        self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")  # fmt: skip
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.sockets} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w",
                  "-t", "60", "start")  # fmt: skip
        self.started = True
        self.create_database(self.dbname)
        return self

    def url(self, dbname: str | None = None) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname or self.dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.started:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
            self.started = False
            for _ in range(50):  # the postmaster may take a moment to release the data dir
                if not (self.data / "postmaster.pid").exists():
                    break
                time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
