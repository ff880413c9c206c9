"""`vtr index` as a library function: scan -> decode (worker processes) -> embed (batches) -> write.

Why this shape (clip-retrieval's streaming runner, with failure isolation added):

* decoding runs in worker processes, one file each (:mod:`indexer.pool`), so a file that hangs or
  crashes its decoder fails alone;
* the parent embeds clips from all files in fixed-size batches on the model's device, and commits
  finished videos in groups through :class:`retrieval.clip_writer.ClipSink` (see there for crash
  safety; the same write path serves the server's deletes);
* ``--executor ray`` replaces the first two with Ray Data (:mod:`indexer.distributed`): decode tasks
  and an embedding actor pool on a cluster, results streamed back here and committed through the
  same :class:`IndexRun` and sink, so the crash-safety rules are the same;
* unchanged files are skipped by (size, mtime), or by size + head/tail hash when only the mtime
  moved; files indexed with another clip length, stride or model are indexed again.

The result is an :class:`~indexer.options.IndexReport`; its ``exit_code`` is 0 when every file is
indexed or unchanged and 1 when some failed (the others are committed either way). Options are
:class:`~indexer.options.IndexOptions`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from indexer.embedding import Embedder, LoadingEmbedder, token_layout
from indexer.fingerprint import fingerprint
from indexer.options import IndexOptions, IndexReport, check_model_name
from indexer.pool import run_pool
from indexer.scan import FoundFile, scan, under_roots
from indexer.worker import WorkerConfig
from retrieval.catalog import STATUS_INDEXED, Catalog, ClipSpan, VideoMeta
from retrieval.clip_writer import ClipSink, PendingVideo
from retrieval.crashpoints import crash_point
from retrieval.frames import VideoTransform
from retrieval.home import DataHome
from retrieval.lock import HomeLock
from retrieval.model_spec import model_config, token_shape
from retrieval.token_store import StoreLayout

__all__ = ["IndexOptions", "IndexReport", "check_model_name", "plan_work", "run_index", "token_layout"]

log = logging.getLogger(__name__)

_COMMIT_EVERY_S = 1.0  # finished videos wait at most this long for a group commit (work lost to a crash)
_COMMIT_GROUP = 16
# decoded clips that may wait for a model still loading; past this the decoders wait too (at 224 px and
# 8 frames a clip is 4.8 MB: ~50 clips; the tiny model's 64 px clips: ~650)
_BACKLOG_BYTES = 256 << 20


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


@dataclass
class _JobState:
    found: FoundFile
    worker: object | None = None  # the indexer.pool worker decoding it
    info: dict | None = None
    fingerprint: str | None = None
    plans: list = field(default_factory=list)
    thumbs: dict[int, bytes | None] = field(default_factory=dict)
    embedded: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    waiting: int = 0  # clips received but not embedded yet
    expected: int | None = None  # clips the decoder made, when results may arrive out of order (Ray)
    done: bool = False
    warning: str | None = None
    frame_offset: float | None = None  # seconds; the decoder's largest sampled-frame substitution


def _meta(
    f: FoundFile,
    fp: str | None,
    info: dict | None,
    opts: IndexOptions,
    model_name: str,
    error=None,
    frame_offset: float | None = None,
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
        frame_offset=frame_offset,
        error=error,
    )


class IndexRun:
    """State of one indexing run over the files to (re)index (driven by :func:`indexer.pool.run_pool`)."""

    def __init__(
        self,
        opts: IndexOptions,
        sink: ClipSink,
        embedder: Embedder | LoadingEmbedder | None,
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
        # per stage: clips through it and busy seconds summed over its workers (IndexReport.stages)
        self.stages = {name: {"clips": 0, "seconds": 0.0, "workers": 1} for name in ("decode", "embed", "write")}
        self.stages["decode"]["workers"] = opts.workers
        report.stages = self.stages

    # -- messages from workers
    def start(self, job_id: int, found: FoundFile, worker) -> None:
        """A worker took ``found``: track it until it is committed or failed."""
        self.jobs[job_id] = _JobState(found=found, worker=worker)

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
            _, _, st.warning, seconds, st.frame_offset = msg
            st.done = True
            self._decoded(st, seconds)
            self._release(st)
            self._maybe_finish(job_id)
        elif kind == "error":
            self._release(st)
            self.fail(job_id, msg[2])

    def _decoded(self, st: _JobState, seconds: float) -> None:
        dec = self.stages["decode"]
        dec["clips"] += len(st.thumbs) if st.expected is None else st.expected
        dec["seconds"] += seconds

    # -- results that arrive embedded (the Ray executor), in any order
    def add_embedded(self, job_id: int, idx: int, vector: np.ndarray, tokens: np.ndarray, thumb, seconds: float):
        """One clip, embedded elsewhere; its video is queued for commit once all its clips are here."""
        st = self.jobs.get(job_id)
        if st is None:  # its file failed, or a retried task sent it twice after the commit
            return
        if idx not in st.embedded:
            emb = self.stages["embed"]
            emb["clips"] += 1
            emb["seconds"] += seconds
        st.embedded[idx] = (vector, tokens)
        st.thumbs[idx] = thumb
        self._maybe_finish(job_id)

    def finish_decoded(
        self,
        job_id: int,
        info: dict,
        fp: str,
        plans: list,
        clips: int,
        warning,
        seconds: float,
        frame_offset: float | None = None,
    ):
        """The decoder's summary of one file (the Ray executor): its clips may still be on their way."""
        st = self.jobs.get(job_id)
        if st is None or st.done:
            return
        st.info, st.fingerprint, st.plans = info, fp, plans
        st.expected, st.done, st.warning, st.frame_offset = clips, True, warning, frame_offset
        self._decoded(st, seconds)
        self._maybe_finish(job_id)

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

    def backlogged(self) -> bool:
        """Whether the decoders should wait: the model is still loading and enough clips wait for it."""
        if self.embed is None or self.embed.ready or not self.embed_queue:
            return False
        return len(self.embed_queue) * self.embed_queue[0][2].nbytes >= _BACKLOG_BYTES

    # -- embedding and committing
    def embed_some(self, force: bool = False, wait: bool = False) -> None:
        """Embed a full batch (``force``: whatever is queued); ``wait``: block until the model has loaded."""
        if not wait and self.embed is not None and not self.embed.ready:
            return  # the model is still loading: keep decoding, the queue waits
        bs = self.opts.batch_size
        while len(self.embed_queue) >= bs or (force and self.embed_queue):
            batch = [self.embed_queue.popleft() for _ in range(min(bs, len(self.embed_queue)))]
            t0 = time.monotonic()
            vecs, toks = self.embed([b[2] for b in batch])
            self.stages["embed"]["clips"] += len(batch)
            self.stages["embed"]["seconds"] += time.monotonic() - t0
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
            crash_point("embedded")  # test hook: clips embedded, their videos not committed yet
            if not force:
                break
            self.commit()  # draining a backlog: finished videos are committed as they come (group rules)

    def _maybe_finish(self, job_id: int) -> None:
        st = self.jobs.get(job_id)
        if st is None or not st.done or st.waiting:
            return
        if st.expected is not None and len(st.embedded) < st.expected:
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
        meta = _meta(st.found, st.fingerprint, st.info, self.opts, self.model_name, st.warning, st.frame_offset)
        self.ready.append(PendingVideo(meta, spans, vectors, tokens, [st.thumbs.get(i) for i in order]))
        if st.warning:
            self.report.warnings.append({"path": st.found.path, "warning": st.warning})

    def commit(self, force: bool = False) -> None:
        """Commit finished videos in groups of at most ``_COMMIT_GROUP``: one group per call, all with ``force``.

        Bounded groups matter when a backlog builds up (clips decoded while the model was loading):
        it is committed step by step, so progress shows as it goes and the run loop keeps turning.
        """
        while self.ready:
            if not force and len(self.ready) < _COMMIT_GROUP and time.monotonic() - self.last_commit < _COMMIT_EVERY_S:
                return
            batch, self.ready = self.ready[:_COMMIT_GROUP], self.ready[_COMMIT_GROUP:]
            t0 = time.monotonic()
            new_ids = self.sink.write(batch)
            self.stages["write"]["seconds"] += time.monotonic() - t0
            self.stages["write"]["clips"] += sum(len(ids) for ids in new_ids)
            crash_point("commit")  # test hook: a group of videos committed, FAISS not saved yet
            for v, ids in zip(batch, new_ids, strict=True):
                self.report.indexed.append(v.meta.path)
                self.report.clips += len(ids)
                self._tick()
            self.last_commit = time.monotonic()
            self.sink.maybe_save()
            if not force:
                return

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(clips=self.report.clips, failed=len(self.report.failed), refresh=False)


def run_index(opts: IndexOptions) -> IndexReport:
    """Index ``opts.paths`` into the data home; see the module docstring.

    Decoders are started with multiprocessing's forkserver (spawn off Linux), which re-imports the
    calling script in each worker: call this under ``if __name__ == "__main__":`` in scripts.
    """
    import migrations

    t0 = time.monotonic()
    opts = opts.resolved()
    if opts.executor == "ray":  # before anything is opened: a missing extra is a one-line error
        from indexer.distributed import require_ray

        require_ray()
    home = DataHome(opts.home).ensure()
    report = IndexReport(executor=opts.executor)
    with HomeLock(home.lock_path, holder="vtr index"):
        url = home.db_url(opts.db)
        migrations.upgrade(url)
        catalog = Catalog(url)
        try:
            mcfg = model_config(opts.model, opts.checkpoint)  # the model itself loads once decoding runs
            layout = StoreLayout(mcfg.name, *token_shape(mcfg))
            report.model = mcfg.name
            sink = ClipSink(
                home,
                catalog,
                model_name=mcfg.name,
                layout=layout,
                factory=opts.index_factory,
                save_interval=opts.save_interval,
            )
            rec = sink.reconcile()
            report.requeued = rec.videos_requeued

            found = scan(opts.paths, exclude=[home.root], confine=opts.within)
            for path, reason in found.errors:
                report.failed.append({"path": path, "reason": reason})
            report.skipped = [{"path": path, "reason": reason} for path, reason in found.skipped]
            todo, report.unchanged = plan_work(catalog, found.files, mcfg.name, opts.clip_seconds, opts.stride)

            seen = {f.path for f in found.files} | {p for p, _ in found.errors} | {p for p, _ in found.skipped}
            kept_out = found.unreadable + [p for p, _ in found.skipped]  # not looked at: absence proves nothing
            gone = [
                (vid, path)
                for path, vid in ((s_path, s["id"]) for s_path, s in catalog.video_states().items())
                if path not in seen and found.covers(path) and not under_roots(path, kept_out)
            ]
            if opts.prune and gone:
                sink.remove_videos([vid for vid, _ in gone])
                report.pruned = [p for _, p in gone]
            else:
                report.missing = [p for _, p in gone]

            cfg = WorkerConfig(
                clip_seconds=opts.clip_seconds,
                stride=opts.stride,
                num_frames=mcfg.vision.num_frames,
                preprocess=VideoTransform(mcfg.vision.image_size, mcfg.preprocess),
                thumbnail_size=opts.thumbnail_size,
                decode_threads=1,
                frame_tolerance=opts.frame_tolerance,
            )
            bar = None
            if opts.progress and todo:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), unit="file", desc="indexing", dynamic_ncols=True, smoothing=0.1)
            local = bool(todo) and opts.executor != "ray"  # Ray embeds in its actors
            embedder = LoadingEmbedder(opts, layout) if local else None
            run = IndexRun(opts, sink, embedder, mcfg.name, cfg, report, bar)
            try:
                if todo and opts.executor == "ray":
                    from indexer.distributed import run_ray

                    run_ray(run, todo)
                elif todo:
                    run_pool(run, todo)
            finally:
                if bar is not None:
                    bar.close()
                try:  # interrupted (Ctrl-C): keep the videos that were completely embedded
                    run.commit(force=True)
                finally:
                    sink.finish()
                    if embedder is not None:
                        embedder.close()
            report.vectors = sink.index.ntotal
            report.index_factory = sink.index.factory
        finally:
            catalog.close()
    report.seconds = time.monotonic() - t0
    return report
