"""The decode worker: runs in its own process, turns one file at a time into model-ready clips.

Why processes: decoding is the indexing bottleneck for small models and holds the GIL in places,
and a pathological file can hang or crash a decoder; in a child process the parent can time it
out or survive its segfault and carry on with the next file.

Protocol (messages on the worker's result pipe, all tagged with the job id):
    ("start", job)                          the worker took the job (starts the per-file clock)
    ("info",  job, info: dict, fingerprint, plans: list[ClipPlan])
    ("clip",  job, clip_idx, pixels float32 [T,3,S,S], (thumbnail JPEG, filmstrip JPEG) | None)
    ("done",  job, warning | None, seconds spent decoding (not waiting for the parent),
              largest |sampled frame - target| in seconds (0: exact frames))
    ("error", job, reason)
Every message doubles as a heartbeat for the parent's per-file timeout.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerConfig:
    clip_seconds: float
    stride: float
    num_frames: int
    preprocess: object  # retrieval.frames.VideoTransform from the model's factory
    thumbnail_size: int  # longest side; 0 = none
    decode_threads: int = 1
    frame_tolerance: float = 0.0  # seconds; > 0: decode reference frames only (retrieval.decode.Video)


@dataclass(frozen=True)
class Job:
    job_id: int
    path: str
    size: int


def process_file(job: Job, cfg: WorkerConfig, emit) -> None:
    """Decode ``job.path`` and ``emit`` its messages; errors become an ("error", ...) message."""
    from indexer.clips import plan_clips
    from indexer.fingerprint import fingerprint
    from retrieval.crashpoints import crash_point
    from retrieval.decode import Video
    from retrieval.errors import VTRError
    from retrieval.thumbnails import filmstrip_jpeg, thumbnail_jpeg

    t0 = time.monotonic()
    blocked = 0.0  # time spent handing messages over (the parent's backpressure), not decoding
    send = emit

    def emit(msg) -> None:
        nonlocal blocked
        t = time.monotonic()
        send(msg)
        blocked += time.monotonic() - t

    crash_point("decoder:" + os.path.basename(job.path))  # test hook: this file kills its decoder
    try:
        fp = fingerprint(job.path, job.size)
        with Video(job.path, threads=cfg.decode_threads, frame_tolerance=cfg.frame_tolerance) as video:
            info = video.info
            plans = plan_clips(video.frame_times(), info.duration, cfg.clip_seconds, cfg.stride, cfg.num_frames)
            emit(("info", job.job_id, info.to_dict(), fp, plans))
            got = 0
            for w, frames in video.iter_windows([p.indices for p in plans]):
                pixels = cfg.preprocess.array(frames)
                thumb = None
                if cfg.thumbnail_size > 0:  # the middle frame, and every sampled frame as a filmstrip
                    thumb = (thumbnail_jpeg(frames[len(frames) // 2], cfg.thumbnail_size), filmstrip_jpeg(frames))
                emit(("clip", job.job_id, w, pixels, thumb))
                got += 1
            decoded = video.frames_decoded
            incomplete = video.incomplete_windows
            offset = round(float(video.max_frame_offset), 6)
        if got == 0:
            emit(("error", job.job_id, f"{os.path.basename(job.path)}: no frame could be decoded (corrupt file)"))
            return
        warning = None
        if video.declared_frames > info.num_frames and not (got < len(plans) or incomplete):
            warning = (
                f"truncated file: {info.num_frames} of {video.declared_frames} frames present "
                f"({info.duration:.1f} s indexed)"
            )
        if got < len(plans) or incomplete:
            warning = (
                f"partly readable: decoding stopped at frame {decoded} of {info.num_frames}; "
                f"{got - incomplete} of {len(plans)} clips complete (truncated or damaged file)"
            )
        emit(("done", job.job_id, warning, time.monotonic() - t0 - blocked, offset))
    except VTRError as exc:
        emit(("error", job.job_id, exc.message))
    except MemoryError:
        emit(("error", job.job_id, "out of memory while decoding"))
    except OSError as exc:
        emit(("error", job.job_id, f"cannot read file: {exc.strerror or exc}"))
    except Exception as exc:  # a decoder bug on one file must not end the run
        log.exception("unexpected error on %s", job.path)
        emit(("error", job.job_id, f"unexpected {type(exc).__name__}: {exc}"))
