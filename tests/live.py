"""A real ``vtr serve`` in its own process on a free loopback port, for contract, soak and crash tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from retrieval.home import DataHome


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vtr_exe() -> str:
    return str(Path(sys.executable).with_name("vtr"))


class LiveServer:
    """``with LiveServer(home, model=..., env={...}) as srv:`` — ``srv.url``, ``srv.pid``; stopped on exit."""

    def __init__(self, home, *, model: str | None = None, threads: int = 4, env: dict | None = None, log=None, args=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            vtr_exe(),
            "serve",
            "--home",
            str(home.root if isinstance(home, DataHome) else home),  # a DataHome or a path (a Path has .root too)
            "--port",
            str(self.port),
            "--threads",
            str(threads),
        ]
        if model:
            cmd += ["--model", model]
        self.cmd = cmd + list(args)
        self.env = {**os.environ, "VTR_RATE_LIMIT": "0", **(env or {})}
        self.log = log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> LiveServer:
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL  # noqa: SIM115 - closed in __exit__
        self._out = out
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vtr serve exited with {self.proc.returncode}: {' '.join(self.cmd)}")
            try:
                self.get("/api/v1/health")
                return self
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError("vtr serve did not come up in 120 s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def get(self, path: str, timeout: float = 30):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=20)
        if self._out is not subprocess.DEVNULL:
            self._out.close()
