"""The data home's writer lock: one process at a time rewrites its indexes.

Why one class for two users: ``vtr index`` must refuse at once when another writer holds the home
(a second run would interleave its writes), while the server's admin routes (add captions, delete a
video) should wait a little for a running indexer to finish its current save. Both take the same
``flock`` on ``indexer.lock`` and write their name into it, so the one refused can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from retrieval.errors import StoreError


class HomeLock:
    """An exclusive ``flock`` on ``path``, held as ``holder`` (``"vtr index"``, ``"vtr serve"``).

    ``timeout=0`` fails at once with :class:`StoreError` naming the holder; a positive ``timeout``
    retries for that many seconds, then fails with ``busy`` (or the holder message).
    """

    def __init__(
        self, path: str | os.PathLike, *, holder: str = "vtr index", timeout: float = 0.0, busy: str | None = None
    ):
        self.path = Path(path)
        self.holder = holder
        self.timeout = float(timeout)
        self.busy = busy
        self._fh = None

    def __enter__(self) -> HomeLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                fh.seek(0)
                who = fh.read().strip() or "another process"
                fh.close()
                raise StoreError(
                    self.busy or f"the data home {self.path.parent} is being written by {who}; wait for it to finish"
                ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{self.holder} (pid {os.getpid()})")  # what a refused writer reports as the holder
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
