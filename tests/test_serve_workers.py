"""``vtr serve --workers N``: N processes serve one socket, a dead worker is replaced, SIGTERM stops all."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.live import LiveServer

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="--workers needs fork")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _wait(cond, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def test_workers_share_the_socket_and_are_replaced(search_home, tmp_path):
    with LiveServer(
        search_home["home"], model="viclip-tiny-test", args=["--workers", "2"], log=tmp_path / "log"
    ) as srv:
        _wait(lambda: len(_children(srv.pid)) == 2)
        q = urllib.parse.urlencode({"q": "a red circle moves left", "k": 5})
        want = [h["clip_id"] for h in srv.get(f"/api/v1/search?{q}")["results"]]
        assert len(want) == 5
        got, errors = [], []

        def client():
            try:
                for _ in range(4):
                    got.append([h["clip_id"] for h in srv.get(f"/api/v1/search?{q}", timeout=120)["results"]])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not errors and len(got) == 24 and all(ids == want for ids in got)

        victim = _children(srv.pid)[0]
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: victim not in _children(srv.pid) and len(_children(srv.pid)) == 2)
        for _ in range(4):  # whichever worker answers, it answers the same
            assert [h["clip_id"] for h in srv.get(f"/api/v1/search?{q}", timeout=120)["results"]] == want
        workers = _children(srv.pid)
        srv.proc.terminate()
        srv.proc.wait(30)
        assert srv.proc.returncode == 0
        assert not any(Path(f"/proc/{w}").exists() for w in workers)  # stopped and reaped by the parent
    log = (tmp_path / "log").read_text()
    assert "2 worker processes" in log and "starting it again" in log
