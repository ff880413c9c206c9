"""The decoder processes of `vtr index`: one file per worker, each isolated from the others.

Why processes with their own pipes: a worker that hangs (per-file timeout, measured as time without
progress) or crashes (a decoder segfault) is killed and replaced without disturbing the others, and
its file is recorded as failed. Each worker has a small send buffer, so it keeps decoding while the
parent embeds, and memory stays bounded when the model is the slower side.

:func:`run_pool` drives the workers for a run (:class:`indexer.pipeline.IndexRun`), handing each
message to ``run.handle`` and letting the run embed and commit between polls; the messages are
described in :mod:`indexer.worker`.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
from collections import deque
from multiprocessing.connection import wait as wait_connections

from indexer.scan import FoundFile
from indexer.worker import Job, WorkerConfig, process_file

_STARTUP_LIMIT = 120.0  # seconds a fresh decoder process may take to pick up its first file
_SEND_BUFFER = 8  # messages a worker may have queued before it waits for the parent


def _child_main(task_conn, result_conn, cfg: WorkerConfig | bytes) -> None:
    """Worker process: read jobs from ``task_conn``; a sender thread ships results back.

    ``cfg`` may come pickled (bytes), so a parent that only supervises (a Ray decode task) need not
    import what unpickling it imports. The worker never imports torch (the transform is numpy):
    that import alone would cost each worker seconds of start-up; should a transform need torch,
    it runs on one thread, as the parent's model does.
    """
    import os
    import pickle
    import signal

    os.environ["OMP_NUM_THREADS"] = "1"  # read by torch when (if ever) it is imported here
    if isinstance(cfg, bytes):
        cfg = pickle.loads(cfg)

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us

    outbox: queue.Queue = queue.Queue(maxsize=_SEND_BUFFER)

    def sender() -> None:
        while True:
            msg = outbox.get()
            if msg is None:
                return
            try:
                result_conn.send(msg)
            except (BrokenPipeError, OSError):
                return

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    try:
        while True:
            try:
                job = task_conn.recv()
            except EOFError:
                break
            if job is None:
                break
            outbox.put(("start", job.job_id))  # the per-file clock starts now, not at process start-up
            process_file(job, cfg, outbox.put)
    finally:
        outbox.put(None)
        t.join()


class _Worker:
    def __init__(self, ctx, cfg: WorkerConfig | bytes, number: int):
        self.number = number
        task_r, self.task_w = ctx.Pipe(duplex=False)
        self.result_r, result_w = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(
            target=_child_main, args=(task_r, result_w, cfg), daemon=True, name=f"vtr-decode-{number}"
        )
        self.proc.start()
        task_r.close()
        result_w.close()  # only the child holds the write end: its death reads as EOF here
        self.job: Job | None = None
        self.started = False
        self.last_seen = time.monotonic()

    def assign(self, job: Job) -> None:
        self.job = job
        self.started = False
        self.last_seen = time.monotonic()
        self.task_w.send(job)

    def stop(self) -> None:
        try:
            self.task_w.send(None)
        except (BrokenPipeError, OSError):
            pass

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        for c in (self.task_w, self.result_r):
            try:
                c.close()
            except OSError:
                pass


def _mp_context():
    """forkserver where available: workers fork from a clean process that imported torch and the
    decoders once (fast starts, no inherited threads or CUDA state); spawn elsewhere."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["indexer.pool", "indexer.worker", "retrieval.decode", "retrieval.frames"])
        return ctx
    return mp.get_context("spawn")


def run_pool(run, todo: list[FoundFile]) -> None:
    """Decode ``todo`` in ``run.opts.workers`` processes, feeding ``run`` until every file is done."""
    opts = run.opts
    ctx = _mp_context()
    pending = deque(enumerate(todo))
    workers = [_Worker(ctx, run.cfg, i) for i in range(min(opts.workers, max(1, len(todo))))]
    try:
        while pending or run.jobs or run.embed_queue or run.ready:
            for w in workers:
                if w.job is None and pending:
                    job_id, f = pending.popleft()
                    run.start(job_id, f, w)
                    w.assign(Job(job_id, f.path, f.size))
            busy = [w for w in workers if w.job is not None]
            if run.backlogged():  # the model is still loading and enough clips wait: the decoders wait too
                now = time.monotonic()
                for w in busy:
                    w.last_seen = now  # the pause is ours, not a stalled decoder's (per-file timeout)
                time.sleep(0.05)
                readable = []
            else:
                readable = wait_connections([w.result_r for w in busy], timeout=0.05) if busy else []
            by_conn = {w.result_r: w for w in busy}
            received = 0
            for conn in readable:
                w = by_conn[conn]
                # drain this worker's buffer (bounded), so the embed batch fills quickly
                for _ in range(_SEND_BUFFER):
                    try:
                        msg = conn.recv()
                    except (EOFError, OSError):
                        _replace(run, workers, w, ctx, "the decoder process crashed on this file")
                        break
                    w.last_seen = time.monotonic()
                    received += 1
                    if msg[0] == "start":
                        w.started = True
                        continue
                    run.handle(msg)
                    if w.job is None or not conn.poll():
                        break
            now = time.monotonic()
            quiet = set(readable)
            for w in list(workers):
                if w.job is None or w.result_r in quiet:
                    continue
                if not w.proc.is_alive():
                    code = w.proc.exitcode
                    _replace(run, workers, w, ctx, f"the decoder process died (exit code {code}) on this file")
                elif now - w.last_seen > (opts.file_timeout if w.started else max(_STARTUP_LIMIT, opts.file_timeout)):
                    _replace(run, workers, w, ctx, f"timed out: no decoding progress for {opts.file_timeout:g} s")
            idle = not readable and not received
            decoded = not (pending or any(w.job for w in workers))
            run.embed_some(force=idle or decoded, wait=decoded)
            run.commit(force=not (pending or run.jobs))
    except BaseException:  # interrupted or failed: do not wait for the decoders to finish their files
        for w in workers:
            w.kill()
        raise
    for w in workers:
        w.stop()
    deadline = time.monotonic() + 5
    for w in workers:
        w.proc.join(timeout=max(0.1, deadline - time.monotonic()))
        w.kill()


def _replace(run, workers: list[_Worker], w: _Worker, ctx, reason: str) -> None:
    job = w.job
    w.kill()
    i = workers.index(w)
    workers[i] = _Worker(ctx, run.cfg, w.number)
    if job is not None and job.job_id in run.jobs:
        run.jobs[job.job_id].worker = None
        run.fail(job.job_id, reason)
