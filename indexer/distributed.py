"""`vtr index --executor ray`: decoding and embedding on Ray Data, committing on the driver as the local path does.

The driver (this process) scans, plans and holds the home lock exactly as the local executor does
(:func:`indexer.pipeline.run_index`); only the middle of the run moves to Ray:

    files (one row each) --map_batches(decode_files, TaskPoolStrategy)--> clip rows + one summary row per file
        --map_batches(EmbedActor, ActorPoolStrategy)--> embedded clip rows --> driver: IndexRun -> ClipSink

* **Decode tasks** read files *by path* (every node must see the library at the same path: a shared
  filesystem; :func:`_local_path` is where object-store URIs would be fetched). Each Ray worker that
  runs them keeps one decoder child process (:class:`indexer.pool._Worker`, the local executor's
  worker), so a file that hangs the decoder is timed out after ``--file-timeout`` seconds without
  progress and a decoder crash is isolated exactly as on one machine; a file that crashes its decoder
  twice is recorded as failed. A Ray worker or node that dies has its task retried once by Ray; a
  file whose task is lost twice is recorded as failed (its block is dropped, ``max_errored_blocks``).
* **Embedding actors** load the model once: one per GPU when the cluster has GPUs, else one CPU
  actor per node (half a CPU, one torch thread, as the local parent embeds). Ray restarts a killed
  actor and retries its batches.
* **Results** stream back to the driver in any order; a video is committed, through the same
  :class:`~indexer.pipeline.IndexRun` and :class:`~retrieval.clip_writer.ClipSink` as the local path
  (group commits, FAISS checkpoints), once its summary row and every clip it announced have arrived.
  Only the driver writes, so SQLite works; PostgreSQL is the catalog to use on a cluster.

Rows are ``{job, kind, idx, data, secs}``: ``kind`` is ``clip`` (``data`` = pickled pixels and
thumbnails, after embedding: vector, tokens, thumbnails), ``done`` (info, fingerprint, clip plans,
clip count, warning, frame offset) or ``error`` (reason, info, fingerprint); ``secs`` carries busy time for the
per-stage throughput. Pickled payloads keep one schema for rows of different kinds.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import time
import uuid
import warnings
from contextlib import contextmanager

import numpy as np

from retrieval.crashpoints import crash_point
from retrieval.errors import ConfigError, VTRError

log = logging.getLogger(__name__)

RAY_EXTRA = "pip install 'video-text-retrieval[distributed]'"  # or: pip install -e '.[distributed]'
# Ray renices its workers by +15 so its own daemons stay responsive; here the workers *are* the work (the
# local executor does not renice its decoders), and on a busy machine nice 15-19 starves the run.
# Clusters started with `ray start` take RAY_worker_niceness=0 in their environment.
LOCAL_SYSTEM_CONFIG = {"worker_niceness": 0}
ACTOR_CPUS = 0.5  # CPU share of an embedding actor; decode tasks get the rest of each node
_STARTUP_LIMIT = 120.0  # seconds a fresh decoder process may take before its first message
# Ray Data settings of the run's dataset: a file whose task is lost twice is dropped (and reported by the
# driver) instead of failing the run; the driver shows the one progress bar the local path shows.
_CONTEXT = {
    "max_errored_blocks": -1,
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    "enable_auto_log_stats": False,
}


class RayError(VTRError):
    """The Ray pipeline itself failed (cluster gone, actors unable to start)."""

    status = 500
    code = "ray_error"


def require_ray():
    """The ``ray`` module, or a :class:`ConfigError` naming the extra that installs it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--executor ray needs Ray Data, which is not installed ({exc.name}): {RAY_EXTRA}") from exc
    return ray


@contextmanager
def ray_runtime(address: str | None):
    """Connect to ``address`` (or ``RAY_ADDRESS``), or start a local runtime sized to this machine.

    A runtime this process already joined (``ray.init`` by the caller) is used as it is and left running.
    """
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False, "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:  # "local": a new runtime, never a stray cluster found in /tmp/ray
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                object_store_memory=_local_object_store(),
                _system_config=LOCAL_SYSTEM_CONFIG,
                **quiet,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray runtime"
        raise RayError(f"cannot start or join {where}: {exc}") from exc
    try:
        yield ray
    finally:
        ray.shutdown()


def _local_object_store() -> int:
    """Object store of a local runtime: a fifth of memory, 256 MiB to 2 GiB (clips stream through it)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        total = 8 << 30
    return int(min(2 << 30, max(256 << 20, total // 5)))


# ---------------------------------------------------------------------------------------------
# sizing


def plan_resources(ray, device: str | None) -> dict:
    """Actors and decode-task CPU shares for the cluster Ray reports.

    One embedding actor per GPU (``device`` unset or ``cuda``), else one CPU actor per node. A decode
    task asks for ``(C - a) / C`` CPUs, C the smallest node's CPUs and a the CPUs its actors take, so
    each node runs about one decoder per core with its actor beside them (the local executor's
    "decoders on every core, the model in the gaps"); whole CPUs would leave a 2-core node one decoder.
    """
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    cpus = [r.get("CPU", 0.0) for r in nodes if r.get("CPU", 0.0) > 0] or [1.0]
    gpus = [r.get("GPU", 0.0) for r in nodes]
    use_gpu = sum(gpus) >= 1 and (device is None or str(device).startswith("cuda"))
    actors = int(sum(gpus)) if use_gpu else len(cpus)
    per_node = max(1, int(max(gpus))) if use_gpu else 1
    smallest = min(cpus)
    decode_cpus = max(0.25, (smallest - per_node * ACTOR_CPUS) / smallest)
    return {
        "actors": max(1, actors),
        "actor_gpus": 1 if use_gpu else 0,
        "device": device or ("cuda" if use_gpu else "cpu"),
        "decode_cpus": round(decode_cpus, 4),
        "cpus": sum(cpus),
        "nodes": len(nodes),
        "decoders": max(1, sum(int((c - per_node * ACTOR_CPUS) / decode_cpus + 1e-6) for c in cpus)),
    }


# ---------------------------------------------------------------------------------------------
# decode tasks (run in Ray workers)

_decoder = None  # (run id, indexer.pool._Worker): this Ray worker's decoder child process


def _local_path(path: str) -> str:
    """Where this node reads ``path``; the place to fetch object-store URIs (s3://...) to a local file."""
    if path.startswith("file://"):
        return path[len("file://") :]
    if "://" in path:
        raise ValueError(f"unsupported URI {path!r}: paths must be on a filesystem every node sees")
    return path


def _get_decoder(cfg, run_id: str, fresh: bool = False):
    global _decoder
    from indexer.pool import _mp_context, _Worker

    if _decoder is not None and (fresh or _decoder[0] != run_id or not _decoder[1].proc.is_alive()):
        _decoder[1].kill()
        _decoder = None
    if _decoder is None:
        _decoder = (run_id, _Worker(_mp_context(), cfg, 0))
    return _decoder[1]


def _supervise(job, cfg, file_timeout: float, run_id: str):
    """Yield the decoder's messages for ``job`` ("start" excluded), timing it out and retrying one crash.

    The same rules as :func:`indexer.pool.run_pool`: a file may go ``file_timeout`` seconds without a
    message (``_STARTUP_LIMIT`` before a fresh process's first one), then it fails as timed out.
    """
    crash = None
    for attempt in (1, 2):
        w = _get_decoder(cfg, run_id, fresh=attempt > 1)
        try:
            w.assign(job)
        except OSError:  # it died between files
            crash = "the decoder process crashed on this file"
            continue
        while True:
            limit = file_timeout if w.started else max(_STARTUP_LIMIT, file_timeout)
            wait = min(1.0, max(0.01, w.last_seen + limit - time.monotonic()))
            if w.result_r.poll(wait):
                try:
                    msg = w.result_r.recv()
                except (EOFError, OSError):
                    crash = "the decoder process crashed on this file"
                    break
                w.last_seen = time.monotonic()
                if msg[0] == "start":
                    w.started = True
                    continue
                if msg[0] in ("done", "error"):
                    w.job = None
                yield msg
                if w.job is None:
                    return
                w.last_seen = time.monotonic()  # time spent handing rows to Ray is not the file's
            elif not w.proc.is_alive():
                crash = f"the decoder process died (exit code {w.proc.exitcode}) on this file"
                break
            elif time.monotonic() - w.last_seen > limit:
                _get_decoder(cfg, run_id, fresh=True)  # kill the stuck decoder; the next file gets a new one
                yield ("error", job.job_id, f"timed out: no decoding progress for {file_timeout:g} s")
                return
    _get_decoder(cfg, run_id, fresh=True)  # the next file gets a live decoder
    yield ("error", job.job_id, f"{crash} (twice)")


def _row(job: int, kind: str, idx: int, payload, secs: float = 0.0) -> dict:
    data = np.empty(1, dtype=object)
    data[0] = pickle.dumps(payload, protocol=5)
    return {
        "job": np.array([job], dtype=np.int64),
        "kind": np.array([kind]),
        "idx": np.array([idx], dtype=np.int64),
        "data": data,
        "secs": np.array([secs], dtype=np.float64),
    }


def decode_files(batch: dict, cfg: bytes, file_timeout: float, run_id: str):
    """Ray Data UDF: one row per file in, its clip rows and one summary row out (a generator: streams).

    ``cfg`` is the pickled :class:`~indexer.worker.WorkerConfig`, unpickled only in the decoder process:
    this Ray worker supervises and ships rows, and never imports torch.
    """
    from indexer.worker import Job

    for job_id, path, size in zip(batch["job"], batch["path"], batch["size"], strict=True):
        job_id, path = int(job_id), str(path)
        crash_point("ray-task:" + os.path.basename(path))  # test hook: this file kills its Ray worker
        try:
            local = _local_path(path)
        except ValueError as exc:
            yield _row(job_id, "error", -1, (str(exc), None, None))
            continue
        if not os.path.lexists(local):
            reason = f"not found on Ray node {socket.gethostname()}: every node must see the library at the same path"
            yield _row(job_id, "error", -1, (reason, None, None))
            continue
        info = fp = plans = None
        clips = set()  # a retried decoder sends its clips again: the summary counts each once
        for msg in _supervise(Job(job_id, local, int(size)), cfg, file_timeout, run_id):
            kind = msg[0]
            if kind == "info":
                _, _, info, fp, plans = msg
            elif kind == "clip":
                _, _, idx, pixels, thumb = msg
                clips.add(idx)
                yield _row(job_id, "clip", idx, (pixels, thumb))
            elif kind == "done":
                _, _, warning, secs, offset = msg
                yield _row(job_id, "done", -1, (info, fp, plans, len(clips), warning, offset), secs)
            elif kind == "error":
                yield _row(job_id, "error", -1, (msg[2], info, fp))


# ---------------------------------------------------------------------------------------------
# embedding actors


class EmbedActor:
    """Ray Data actor UDF: loads the model once, embeds the clip rows of each batch, passes the others on."""

    def __init__(self, model: str | None, checkpoint: str | None, device: str, threads: int = 1, batch_size: int = 32):
        import torch

        from indexer.embedding import Embedder
        from retrieval.factory import load_model

        if device == "cpu":
            torch.set_num_threads(max(1, threads))
        m, _, _ = load_model(model, checkpoint, device)
        self.embed = Embedder(m)
        self.batch_size = max(1, int(batch_size))

    def __call__(self, batch: dict) -> dict:
        crash_point("ray-embed")  # test hook: the actor dies holding a batch
        t0 = time.monotonic()
        rows = np.flatnonzero(batch["kind"] == "clip")
        data = batch["data"].copy()
        secs = np.asarray(batch["secs"], dtype=np.float64).copy()
        if len(rows):
            payloads = [pickle.loads(data[i]) for i in rows]
            parts = [
                self.embed([p[0] for p in payloads[k : k + self.batch_size]])
                for k in range(0, len(payloads), self.batch_size)
            ]  # forward passes of at most --batch-size clips, whatever the block size
            vecs = np.concatenate([v for v, _ in parts])
            toks = np.concatenate([t for _, t in parts])
            share = (time.monotonic() - t0) / len(rows)
            for k, i in enumerate(rows):
                data[i] = pickle.dumps((vecs[k], toks[k], payloads[k][1]), protocol=5)
                secs[i] = share
        return {"job": batch["job"], "kind": batch["kind"], "idx": batch["idx"], "data": data, "secs": secs}


# ---------------------------------------------------------------------------------------------
# the driver


def build_dataset(ray, todo, cfg, opts, res: dict):
    """The Ray Data pipeline for ``todo`` (files, as :class:`indexer.scan.FoundFile`)."""
    from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

    ctx = DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in _CONTEXT}
    for k, v in _CONTEXT.items():
        setattr(ctx, k, v)
    try:
        items = [{"job": i, "path": f.path, "size": int(f.size)} for i, f in enumerate(todo)]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        env = {k: v for k, v in os.environ.items() if k == "VTR_TEST_CRASH_AT"}
        remote = {"runtime_env": {"env_vars": env}} if env else {}
        ds = ds.map_batches(
            decode_files,
            batch_size=1,
            batch_format="numpy",
            fn_kwargs={"cfg": pickle.dumps(cfg), "file_timeout": opts.file_timeout, "run_id": uuid.uuid4().hex},
            compute=TaskPoolStrategy() if opts.workers_auto else TaskPoolStrategy(size=opts.workers),
            num_cpus=res["decode_cpus"],
            **remote,
            # a dead Ray worker is retried once; lost twice, the file is reported failed (Ray's default:
            # forever). A remote arg: deprecated in 2.60, removed in 2.64, hence the extra's pin.
            max_retries=1,
        )
        ds = ds.map_batches(
            EmbedActor,
            # whole blocks (one decoded file, or a part of a long one) as they come: a fixed batch size
            # would hold finished files back until enough clips of other files arrived, and the driver
            # could commit nothing until the end of a small run
            batch_size=None,
            batch_format="numpy",
            fn_constructor_kwargs={
                "model": opts.model,
                "checkpoint": os.path.abspath(opts.checkpoint) if opts.checkpoint else None,
                "device": res["device"],
                "threads": 1,
                "batch_size": opts.batch_size,
            },
            compute=ActorPoolStrategy(size=res["actors"]),
            num_cpus=ACTOR_CPUS,
            num_gpus=res["actor_gpus"],
            **remote,  # Ray Data's actor defaults: restarted when killed, batches retried, spread over nodes
        )
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
    for k, v in _CONTEXT.items():
        setattr(ds.context, k, v)
    return ds


def run_ray(run, todo) -> None:
    """Decode and embed ``todo`` on Ray, feeding ``run`` (:class:`indexer.pipeline.IndexRun`) until done."""
    opts = run.opts
    with ray_runtime(opts.ray_address) as ray, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated", category=Warning)
        # Ray Data's own progress lines and notices would interleave with the bar; its errors still show
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        res = plan_resources(ray, opts.device)
        run.stages["decode"]["workers"] = min(len(todo), res["decoders"] if opts.workers_auto else opts.workers)
        run.stages["embed"]["workers"] = res["actors"]
        log.info("Ray: %s", res)
        for i, f in enumerate(todo):
            run.start(i, f, None)
        ds = build_dataset(ray, todo, run.cfg, opts, res)
        # Blocks (whole Ray Data blocks: many rows) are handled as they arrive, here in the main thread:
        # a reader thread could outlive the run inside Ray Data and re-join a cluster after shutdown.
        # Group commits follow IndexRun.commit's rule (16 videos or 1 s) as each block arrives.
        batches = ds.iter_batches(batch_size=None, batch_format="numpy")
        try:
            for batch in batches:
                _handle(run, batch)
                run.commit()
        except (KeyboardInterrupt, VTRError):
            raise
        except Exception as exc:  # the pipeline itself failed: what was committed stays, the rest is redone
            raise RayError(f"the Ray pipeline failed: {type(exc).__name__}: {exc}") from exc
        _lost(run)
        run.commit(force=True)


def _handle(run, batch: dict) -> None:
    embedded = False
    for job, kind, idx, data, secs in zip(
        batch["job"], batch["kind"], batch["idx"], batch["data"], batch["secs"], strict=True
    ):
        job = int(job)
        if job not in run.jobs:
            continue
        payload = pickle.loads(data)
        if kind == "clip":
            vector, tokens, thumb = payload
            run.add_embedded(job, int(idx), vector, tokens, thumb, float(secs))
            embedded = True
        elif kind == "done":
            info, fp, plans, clips, warning, offset = payload
            run.finish_decoded(job, info, fp, plans, clips, warning, float(secs), offset)
        else:
            reason, info, fp = payload
            st = run.jobs[job]
            st.info, st.fingerprint = st.info or info, st.fingerprint or fp
            run.fail(job, reason)
    if embedded:
        crash_point("embedded")  # test hook: clips embedded, their videos not committed yet


def _lost(run) -> None:
    """Files Ray gave up on (their task or their clips' batch failed on every retry): failed, with why."""
    for job_id in list(run.jobs):
        st = run.jobs[job_id]
        if st.done:
            missing = st.expected - len(st.embedded)
            reason = f"{missing} of its {st.expected} clips were lost: the embedding actor failed on them every retry"
        else:
            reason = "the Ray worker decoding this file died twice (out of memory, or the node was lost)"
        run.fail(job_id, reason)
