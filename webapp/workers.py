"""``vtr serve --workers N``: N server processes sharing one listening socket (pre-fork).

Why: in one process, every request's Python work (routing, catalog reads, result views, JSON)
runs under one interpreter lock, so a second core helps only while a thread sits in torch or
FAISS. Several processes each run the whole request path on their own core. The parent binds
the socket, then forks the workers *before* anything heavy is loaded (no torch or OpenMP state
crosses a fork); each worker loads its own engine (model, FAISS index, catalog connection; the
token store is memory-mapped, so its pages are shared through the page cache) and serves the
inherited socket with waitress. The kernel hands each new connection to whichever worker accepts
first, which is the least busy one. A worker that dies is started again; SIGTERM or Ctrl-C
stops them all.

What is per worker: the micro-batching of text encodes and re-rankings (requests are batched
with the others of their worker), the rate limit (``VTR_RATE_LIMIT`` counts per worker), and the
admin indexing queue (a job is listed only by the worker that queued it): use one worker for the
admin indexing API.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0  # seconds before a crashed worker is started again (a crash loop stays slow)


def listen_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A bound, listening, non-blocking socket for ``host:port`` (what waitress would create)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def serve_workers(sock: socket.socket, workers: int, serve_one: Callable[[socket.socket], None]) -> int:
    """Fork ``workers`` processes that each run ``serve_one(sock)``; supervise them until stopped.

    Returns the exit status for the parent: 0 after SIGTERM/SIGINT.
    """
    if not hasattr(os, "fork"):
        raise OSError("--workers above 1 needs fork (Linux, macOS)")
    children: dict[int, int] = {}  # pid -> worker number
    stopping = False

    def start(n: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us with SIGTERM
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds: the app's engine is closed
            code = 0
            try:
                serve_one(sock)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 0
            except BaseException:
                log.exception("worker %d failed", n)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = n

    def stop(*_):
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for n in range(workers):
            start(n)
        while children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            n = children.pop(pid, None)
            if n is None or stopping:
                continue
            log.warning("worker %d (pid %d) exited with status %d; starting it again", n, pid, status)
            time.sleep(RESTART_DELAY)
            if not stopping:
                start(n)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        sock.close()
    return 0
