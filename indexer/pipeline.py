"""`vtr index` as a library function: scan -> decode (worker processes) -> embed (batches) -> write.

Why this shape (clip-retrieval's streaming runner, with failure isolation added):

* decoding runs in ``workers`` child processes, one file each, each with its own pipes so a worker
  that hangs (per-file timeout, measured as time without progress) or crashes (a decoder segfault)
  is killed and replaced without disturbing the others; its file is recorded as failed;
* each worker has a small send buffer, so it keeps decoding while the parent embeds, and memory
  stays bounded when the model is the slower side;
* the parent embeds clips from all files in fixed-size batches on the model's device, and commits
  finished videos in groups through :class:`indexer.sink.ClipSink` (see there for crash safety);
* unchanged files are skipped by (size, mtime), or by size + head/tail hash when only the mtime
  moved; files indexed with another clip length, stride or model are indexed again.

The result is an :class:`IndexReport`; its ``exit_code`` is 0 when every file is indexed or
unchanged and 1 when some failed (the others are committed either way).
"""

from __future__ import annotations

import fcntl
import logging
import multiprocessing as mp
import os
import queue
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_connections
from pathlib import Path

import numpy as np

from indexer.fingerprint import fingerprint
from indexer.scan import FoundFile, scan, under_roots
from indexer.sink import ClipSink, PendingVideo
from indexer.worker import Job, WorkerConfig, process_file
from retrieval.catalog import STATUS_INDEXED, Catalog, ClipSpan, VideoMeta
from retrieval.errors import ConfigError, InvalidInput, StoreError
from retrieval.home import DataHome
from retrieval.settings import resolve
from retrieval.token_store import StoreLayout

log = logging.getLogger(__name__)

_STARTUP_LIMIT = 120.0  # seconds a fresh decoder process may take to pick up its first file
_SEND_BUFFER = 8  # messages a worker may have queued before it waits for the parent
_COMMIT_EVERY_S = 1.0  # finished videos wait at most this long for a group commit (work lost to a crash)
_COMMIT_GROUP = 16


@dataclass
class IndexOptions:
    paths: list[str]
    home: str | None = None
    db: str | None = None
    model: str | None = None
    checkpoint: str | None = None
    clip_seconds: float | None = None
    stride: float | None = None
    workers: int | None = None
    batch_size: int | None = None
    prune: bool = False
    file_timeout: float | None = None
    index_factory: str | None = None
    thumbnail_size: int | None = None
    save_interval: float | None = None
    device: str | None = None
    progress: bool = True

    def resolved(self) -> IndexOptions:
        """Fill unset options from the settings table (flag > environment > default) and validate."""
        o = IndexOptions(**self.__dict__)
        o.checkpoint = resolve("checkpoint", o.checkpoint)
        o.model = default_model_name(o.model, o.checkpoint)
        o.clip_seconds = float(resolve("clip_seconds", o.clip_seconds))
        o.stride = float(resolve("clip_stride", o.stride) or o.clip_seconds)
        o.workers = int(resolve("index_workers", o.workers) or os.cpu_count() or 1)
        o.batch_size = int(resolve("index_batch_size", o.batch_size))
        o.file_timeout = float(resolve("file_timeout", o.file_timeout))
        o.index_factory = resolve("index_factory", o.index_factory) or "auto"
        o.thumbnail_size = int(resolve("thumbnail_size", o.thumbnail_size))
        o.save_interval = float(resolve("save_interval", o.save_interval))
        if not o.paths:
            raise InvalidInput("give at least one folder or file to index")
        if o.clip_seconds <= 0 or o.stride <= 0:
            raise InvalidInput("--clip-seconds and --stride must be positive")
        if o.workers < 1:
            raise InvalidInput("--workers must be at least 1")
        if o.batch_size < 1:
            raise InvalidInput("--batch-size must be at least 1")
        if o.file_timeout <= 0:
            raise InvalidInput("--file-timeout must be positive")
        return o


@dataclass
class IndexReport:
    indexed: list[str] = field(default_factory=list)
    unchanged: int = 0
    failed: list[dict] = field(default_factory=list)  # {path, reason}
    warnings: list[dict] = field(default_factory=list)  # {path, warning}: indexed, but partly readable
    pruned: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # gone from disk, kept because --prune was not given
    requeued: list[str] = field(default_factory=list)  # re-indexed because their stored vectors were lost
    clips: int = 0
    seconds: float = 0.0
    model: str = ""
    index_factory: str = ""
    vectors: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    @property
    def clips_per_second(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict:
        return {
            "indexed": len(self.indexed),
            "unchanged": self.unchanged,
            "failed": self.failed,
            "warnings": self.warnings,
            "pruned": len(self.pruned),
            "missing": self.missing,
            "clips": self.clips,
            "seconds": round(self.seconds, 3),
            "clips_per_second": round(self.clips_per_second, 2),
            "model": self.model,
            "index_factory": self.index_factory,
            "vectors": self.vectors,
        }


# ---------------------------------------------------------------------------------------------
# one writer per data home


class HomeLock:
    """An exclusive lock on the data home, so two `vtr index` runs cannot interleave their writes."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = None

    def __enter__(self) -> HomeLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+")
        try:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.seek(0)
            holder = self._fh.read().strip() or "another process"
            self._fh.close()
            raise StoreError(
                f"the data home {self.path.parent} is being written by {holder}; wait for it to finish"
            ) from None
        self._fh.seek(0)
        self._fh.truncate()
        self._fh.write(f"vtr index (pid {os.getpid()})")
        self._fh.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()


# ---------------------------------------------------------------------------------------------
# model


def default_model_name(model: str | None, checkpoint: str | None) -> str | None:
    """``--model``, else none for a self-describing project checkpoint, else the ``model`` setting."""
    if model:
        return model
    if checkpoint and str(checkpoint).endswith(".safetensors"):
        return None  # the checkpoint names its architecture
    return resolve("model")


def load_model(name: str | None, checkpoint: str | None, device: str | None):
    """(model, preprocess, tokenizer) on ``device`` (CUDA when available and not overridden)."""
    import torch

    from retrieval.factory import create_model_and_transforms

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    # Seed the init so a model without shipped weights (the test model) embeds the same way in
    # every process; real weights overwrite it.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model, preprocess, tokenizer = create_model_and_transforms(name, pretrained=checkpoint, device=device)
    model.eval()
    return model, preprocess, tokenizer


def token_layout(model) -> StoreLayout:
    """Shape of the model's per-clip token set, from one forward pass on a black clip."""
    import torch

    device = next(model.parameters()).device
    x = torch.zeros(1, model.num_frames, 3, model.image_size, model.image_size, device=device)
    with torch.inference_mode():
        emb, tokens = model.encode_video(x, normalize=True, return_tokens=True)
    return StoreLayout(model.name, int(tokens.shape[1]), int(tokens.shape[2]), int(emb.shape[1]))


class Embedder:
    def __init__(self, model):
        import torch

        self.torch = torch
        self.model = model
        self.device = next(model.parameters()).device

    def __call__(self, pixels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        torch = self.torch
        x = torch.from_numpy(np.stack(pixels)).to(self.device)
        with torch.inference_mode():
            emb, tokens = self.model.encode_video(x, normalize=True, return_tokens=True)
        return emb.float().cpu().numpy(), tokens.to(torch.float16).cpu().numpy()


@contextmanager
def _model_threads(model, workers: int):
    """CPU threads for the model while decoders run: the cores the decoders leave free, at least one.

    Why: with every core busy decoding, a multi-threaded forward pass waits at each parallel region
    for a descheduled thread (measured here: a 2 ms batch took 300 ms), and indexing fell to 0.6x the
    decode-only bound. One thread keeps it at ~1x for small models; for a large model on the CPU, give
    it cores by using fewer ``--workers``.
    """
    import torch

    device = next(model.parameters()).device
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# deciding what to do


def _same(a, b) -> bool:
    return a is not None and b is not None and abs(float(a) - float(b)) < 1e-6


def plan_work(
    catalog: Catalog, found: list[FoundFile], model_name: str, clip_seconds: float, stride: float
) -> tuple[list[FoundFile], int]:
    """Split scanned files into (to index, number unchanged)."""
    states = catalog.video_states([f.path for f in found])
    todo, unchanged = [], 0
    for f in found:
        st = states.get(f.path)
        if (
            st is None
            or st["status"] != STATUS_INDEXED
            or st["size"] != f.size
            or st["model"] != model_name
            or not _same(st["clip_seconds"], clip_seconds)
            or not _same(st["stride"], stride)
        ):
            todo.append(f)
            continue
        if st["mtime_ns"] == f.mtime_ns:
            unchanged += 1
            continue
        try:
            same_content = fingerprint(f.path, f.size) == st["fingerprint"]
        except OSError:
            same_content = False
        if same_content:  # touched or copied with a new mtime: nothing to re-embed
            catalog.touch_video(st["id"], f.mtime_ns)
            unchanged += 1
        else:
            todo.append(f)
    return todo, unchanged


# ---------------------------------------------------------------------------------------------
# worker processes


def _child_main(task_conn, result_conn, cfg: WorkerConfig) -> None:
    """Worker process: read jobs from ``task_conn``; a sender thread ships results back."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us

    torch.set_num_threads(1)
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
    def __init__(self, ctx, cfg: WorkerConfig, number: int):
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


# ---------------------------------------------------------------------------------------------


@dataclass
class _JobState:
    found: FoundFile
    worker: _Worker | None = None
    info: dict | None = None
    fingerprint: str | None = None
    plans: list = field(default_factory=list)
    thumbs: dict[int, bytes | None] = field(default_factory=dict)
    embedded: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    waiting: int = 0  # clips received but not embedded yet
    done: bool = False
    warning: str | None = None


def _meta(
    f: FoundFile, fp: str | None, info: dict | None, opts: IndexOptions, model_name: str, error=None
) -> VideoMeta:
    info = info or {}
    return VideoMeta(
        root=f.root,
        path=f.path,
        size=f.size,
        mtime_ns=f.mtime_ns,
        fingerprint=fp or "",
        duration=info.get("duration"),
        fps=info.get("fps"),
        num_frames=info.get("num_frames"),
        width=info.get("width"),
        height=info.get("height"),
        codec=info.get("codec"),
        rotation=info.get("rotation"),
        model=model_name,
        clip_seconds=opts.clip_seconds,
        stride=opts.stride,
        error=error,
    )


class _Run:
    """State of one indexing run over the files to (re)index."""

    def __init__(
        self,
        opts: IndexOptions,
        sink: ClipSink,
        embedder: Embedder,
        model_name: str,
        cfg: WorkerConfig,
        report: IndexReport,
        bar,
    ):
        self.opts = opts
        self.sink = sink
        self.embed = embedder
        self.model_name = model_name
        self.cfg = cfg
        self.report = report
        self.bar = bar
        self.jobs: dict[int, _JobState] = {}
        self.embed_queue: deque[tuple[int, int, np.ndarray]] = deque()
        self.ready: list[PendingVideo] = []
        self.last_commit = time.monotonic()

    # -- messages from workers
    def handle(self, msg) -> None:
        kind, job_id = msg[0], msg[1]
        st = self.jobs.get(job_id)
        if st is None:
            return
        if kind == "info":
            _, _, st.info, st.fingerprint, st.plans = msg
        elif kind == "clip":
            _, _, idx, pixels, thumb = msg
            st.thumbs[idx] = thumb
            st.waiting += 1
            self.embed_queue.append((job_id, idx, pixels))
        elif kind == "done":
            st.done, st.warning = True, msg[2]
            self._release(st)
            self._maybe_finish(job_id)
        elif kind == "error":
            self._release(st)
            self.fail(job_id, msg[2])

    def _release(self, st: _JobState) -> None:
        if st.worker is not None:
            st.worker.job = None
            st.worker = None

    def fail(self, job_id: int, reason: str) -> None:
        st = self.jobs.pop(job_id)
        prefix = os.path.basename(st.found.path) + ": "
        if reason.startswith(prefix):  # the report names the file already
            reason = reason[len(prefix) :]
        self.embed_queue = deque(e for e in self.embed_queue if e[0] != job_id)
        f = st.found
        fp = st.fingerprint
        if fp is None:
            try:
                fp = fingerprint(f.path, f.size)
            except OSError:
                fp = ""
        self.sink.fail(_meta(f, fp, st.info, self.opts, self.model_name), reason)
        self.report.failed.append({"path": f.path, "reason": reason})
        self._tick()

    # -- embedding and committing
    def embed_some(self, force: bool = False) -> None:
        bs = self.opts.batch_size
        while len(self.embed_queue) >= bs or (force and self.embed_queue):
            batch = [self.embed_queue.popleft() for _ in range(min(bs, len(self.embed_queue)))]
            vecs, toks = self.embed([b[2] for b in batch])
            touched = set()
            for (job_id, idx, _), v, t in zip(batch, vecs, toks, strict=True):
                st = self.jobs.get(job_id)
                if st is None:
                    continue
                st.embedded[idx] = (v, t)
                st.waiting -= 1
                touched.add(job_id)
            for job_id in touched:
                self._maybe_finish(job_id)
            if not force:
                break

    def _maybe_finish(self, job_id: int) -> None:
        st = self.jobs.get(job_id)
        if st is None or not st.done or st.waiting:
            return
        del self.jobs[job_id]
        order = sorted(st.embedded)
        plans = {p.idx: p for p in st.plans}
        spans = [
            ClipSpan(
                i, plans[i].start, plans[i].end, plans[i].start_frame, plans[i].end_frame, st.thumbs.get(i) is not None
            )
            for i in order
        ]
        vectors = np.stack([st.embedded[i][0] for i in order])
        tokens = np.stack([st.embedded[i][1] for i in order])
        meta = _meta(st.found, st.fingerprint, st.info, self.opts, self.model_name, error=st.warning)
        self.ready.append(PendingVideo(meta, spans, vectors, tokens, [st.thumbs.get(i) for i in order]))
        if st.warning:
            self.report.warnings.append({"path": st.found.path, "warning": st.warning})

    def commit(self, force: bool = False) -> None:
        if not self.ready:
            return
        if not force and len(self.ready) < _COMMIT_GROUP and time.monotonic() - self.last_commit < _COMMIT_EVERY_S:
            return
        batch, self.ready = self.ready, []
        new_ids = self.sink.write(batch)
        for v, ids in zip(batch, new_ids, strict=True):
            self.report.indexed.append(v.meta.path)
            self.report.clips += len(ids)
            self._tick()
        self.last_commit = time.monotonic()
        self.sink.maybe_save()

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(clips=self.report.clips, failed=len(self.report.failed), refresh=False)


def _mp_context():
    """forkserver where available: workers fork from a clean process that imported torch and the
    decoders once (fast starts, no inherited threads or CUDA state); spawn elsewhere."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["indexer.pipeline", "indexer.worker", "retrieval.decode", "retrieval.frames"])
        return ctx
    return mp.get_context("spawn")


def _run_pool(run: _Run, todo: list[FoundFile]) -> None:
    opts = run.opts
    ctx = _mp_context()
    pending = deque(enumerate(todo))
    workers = [_Worker(ctx, run.cfg, i) for i in range(min(opts.workers, max(1, len(todo))))]
    try:
        while pending or run.jobs or run.embed_queue or run.ready:
            for w in workers:
                if w.job is None and pending:
                    job_id, f = pending.popleft()
                    run.jobs[job_id] = _JobState(found=f)
                    job = Job(job_id, f.path, f.size)
                    run.jobs[job_id].worker = w
                    w.assign(job)
            busy = [w for w in workers if w.job is not None]
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
            run.embed_some(force=idle or not (pending or any(w.job for w in workers)))
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


def _replace(run: _Run, workers: list[_Worker], w: _Worker, ctx, reason: str) -> None:
    job = w.job
    w.kill()
    i = workers.index(w)
    workers[i] = _Worker(ctx, run.cfg, w.number)
    if job is not None and job.job_id in run.jobs:
        run.jobs[job.job_id].worker = None
        run.fail(job.job_id, reason)


# ---------------------------------------------------------------------------------------------


def run_index(opts: IndexOptions) -> IndexReport:
    """Index ``opts.paths`` into the data home; see the module docstring.

    Decoders are started with multiprocessing's forkserver (spawn off Linux), which re-imports the
    calling script in each worker: call this under ``if __name__ == "__main__":`` in scripts.
    """
    import migrations

    t0 = time.monotonic()
    opts = opts.resolved()
    home = DataHome(opts.home).ensure()
    report = IndexReport()
    with HomeLock(home.lock_path):
        url = home.db_url(opts.db)
        migrations.upgrade(url)
        catalog = Catalog(url)
        try:
            model, preprocess, _ = load_model(opts.model, opts.checkpoint, opts.device)
            layout = token_layout(model)
            report.model = model.name
            sink = ClipSink(
                home,
                catalog,
                model_name=model.name,
                layout=layout,
                factory=opts.index_factory,
                save_interval=opts.save_interval,
            )
            rec = sink.reconcile()
            report.requeued = rec.videos_requeued

            found = scan(opts.paths, exclude=[home.root])
            for path, reason in found.errors:
                report.failed.append({"path": path, "reason": reason})
            todo, report.unchanged = plan_work(catalog, found.files, model.name, opts.clip_seconds, opts.stride)

            seen = {f.path for f in found.files} | {p for p, _ in found.errors}
            gone = [
                (vid, path)
                for path, vid in ((s_path, s["id"]) for s_path, s in catalog.video_states().items())
                if path not in seen and found.covers(path) and not under_roots(path, found.unreadable)
            ]
            if opts.prune and gone:
                sink.remove_videos([vid for vid, _ in gone])
                report.pruned = [p for _, p in gone]
            else:
                report.missing = [p for _, p in gone]

            cfg = WorkerConfig(
                clip_seconds=opts.clip_seconds,
                stride=opts.stride,
                num_frames=model.num_frames,
                preprocess=preprocess,
                thumbnail_size=opts.thumbnail_size,
                decode_threads=1,
            )
            bar = None
            if opts.progress and todo:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), unit="file", desc="indexing", dynamic_ncols=True, smoothing=0.1)
            run = _Run(opts, sink, Embedder(model), model.name, cfg, report, bar)
            try:
                if todo:
                    with _model_threads(model, opts.workers):
                        _run_pool(run, todo)
            finally:
                if bar is not None:
                    bar.close()
                try:  # interrupted (Ctrl-C): keep the videos that were completely embedded
                    run.commit(force=True)
                finally:
                    sink.finish()
            report.vectors = sink.index.ntotal
            report.index_factory = sink.index.factory
        finally:
            catalog.close()
    report.seconds = time.monotonic() - t0
    return report


def check_model_name(name: str | None, checkpoint: str | None) -> None:
    """Fail early, with the list of known models, on a misspelt ``--model``."""
    from retrieval import list_models

    if name and not checkpoint and name not in list_models():
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
