"""The indexing queue behind ``POST /api/v1/index``: one ``vtr index`` child process at a time.

Why a child process: indexing is the indexer's job and its CLI is its public interface (the web app
never imports it); a crash or a runaway decode in a child cannot take the server down, and
``vtr index`` already takes the home's lock, resumes, and records failures. The running engine picks
the new clips up by itself (it watches the index files), so nothing has to be signalled back.
Jobs live in memory: the queue is a convenience for admins, the catalog is the record.
"""

from __future__ import annotations

import collections
import itertools
import logging
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

MAX_JOBS_KEPT = 200
OUTPUT_TAIL = 4000


def vtr_command() -> list[str]:
    """How to run the `vtr` CLI in a child process."""
    exe = Path(sys.executable).with_name("vtr")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("vtr")
    if found:
        return [found]
    return [sys.executable, "-c", "from indexer.cli import main; main()"]


class IndexQueue:
    """FIFO of paths to index into one home, worked by one thread that exists only while there is work."""

    def __init__(
        self,
        home: str,
        db: str | None = None,
        model: str | None = None,
        checkpoint: str | None = None,
        within: list[str] | None = None,
    ):
        self.args = ["--home", str(home)]
        for flag, value in (("--db", db), ("--model", model), ("--checkpoint", checkpoint)):
            if value:
                self.args += [flag, str(value)]
        for root in within or ():  # the scan checks every folder and file it enters against the roots
            self.args += ["--within", str(root)]
        self._jobs: collections.OrderedDict[int, dict] = collections.OrderedDict()
        self._todo: collections.deque[int] = collections.deque()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def submit(self, path: str) -> dict:
        with self._lock:
            job_id = next(self._ids)
            job = {"job_id": job_id, "path": path, "status": "queued", "queued_at": time.time()}
            self._jobs[job_id] = job
            self._todo.append(job_id)
            while len(self._jobs) > MAX_JOBS_KEPT:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest]["status"] in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="vtr-index-queue", daemon=True)
                self._worker.start()
            return dict(job)

    def get(self, job_id: int) -> dict | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return dict(job) if job else None

    def list(self) -> list[dict]:
        with self._lock:
            return [dict(j) for j in reversed(self._jobs.values())]

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty (tests, shutdown); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                worker = self._worker
            if worker is None:
                return True
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            worker.join(remaining)
            if worker.is_alive():
                return False

    def _work(self) -> None:
        while True:
            with self._lock:
                if not self._todo:
                    self._worker = None
                    return
                job = self._jobs[self._todo.popleft()]
                job.update(status="running", started_at=time.time())
            cmd = [*vtr_command(), "index", job["path"], *self.args]
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
                status = "done" if proc.returncode == 0 else "failed"
                out = (proc.stdout + proc.stderr)[-OUTPUT_TAIL:]
                code = proc.returncode
            except OSError as exc:
                status, out, code = "failed", str(exc), None
            log.info("index job %s (%s): %s", job["job_id"], job["path"], status)
            with self._lock:
                job.update(status=status, exit_code=code, output=out, finished_at=time.time())
