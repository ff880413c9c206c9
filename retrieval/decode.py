"""Reading video files: the only module that imports a decoder (PyAV, and decord where it helps).

Why two decoders: decord's ``get_batch`` is convenient for a handful of random frames, but it cannot
open AV1 or truncated files, and on rotated files it returns a broken 4-channel image. PyAV opens
everything ffmpeg can, gives clean exceptions, and reads sequentially fastest (decord seeks to a
keyframe for every requested frame, ~3x slower than decoding in order for clip windows). So:

* :func:`probe` and the clip-window reader (:meth:`Video.iter_windows`) use PyAV, reading once,
  front to back, converting only the frames somebody asked for;
* :func:`read_frames` tries decord first and falls back to PyAV when decord fails or the file is one
  decord is known to get wrong (AV1, rotated, truncated).

Rotation metadata (phone videos) is applied on every path, so frames come out the way a player shows
them; ``VideoInfo.width/height`` are the displayed (rotated) size.

Every failure a user's file can cause is a :class:`~retrieval.errors.DecodeError` whose message says
what is wrong with the file ("empty file (0 bytes)", "no video stream (audio only)", ...).

Two pieces that need no decoder live next door, so this module keeps the reading itself: the checks
and messages about a file that will not decode (:mod:`retrieval.decode_errors`), and which decoded
frame fills which clip window, exact or within ``frame_tolerance`` (:mod:`retrieval.decode_windows`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from retrieval.decode_errors import check_deadline, check_file, open_error, reference_file
from retrieval.decode_windows import iter_windows_exact, iter_windows_reference
from retrieval.errors import DecodeError, InvalidInput

log = logging.getLogger(__name__)

MAX_PIXELS = 8192 * 4320  # largest frame accepted (8K UHD)

# Codecs decord 0.6 cannot decode (it aborts with a C++ check failure) -> straight to PyAV.
_DECORD_UNSUPPORTED = {"av1"}


@dataclass(frozen=True)
class VideoInfo:
    """What the catalog stores about a file and what sampling needs to know."""

    num_frames: int  # frames that can actually be decoded (index-based; truncated files count less)
    fps: float  # average frame rate (num_frames / duration for variable frame rate)
    duration: float  # seconds
    width: int  # displayed width (after rotation)
    height: int  # displayed height (after rotation)
    codec: str  # canonical codec name: h264, hevc, vp9, av1, mpeg4, mjpeg, ...
    rotation: int  # degrees counter-clockwise applied to stored pixels for display: 0, 90, 180, 270

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# PyAV helpers


def _av():
    import av

    # ffmpeg's own log lines would interleave with progress bars; errors reach us as exceptions.
    av.logging.set_level(av.logging.PANIC)
    return av


def _only_this_file(path: Path, opened: list):
    """An ffmpeg ``io_open`` that opens ``path`` and refuses every other file or URL.

    Why: playlists and manifests (HLS ``.m3u8``, DASH ``.mpd``, ``ffconcat``) are "videos" to ffmpeg
    that make it read other files or fetch URLs, so an uploaded query could make the server read
    its own files or connect anywhere (and wait on it). A query must be one self-contained file.
    """
    name = str(path)

    def io_open(url: str, flags: int, options: dict):
        if url != name:
            raise reference_file(path)
        fh = open(name, "rb")
        opened.append(fh)  # PyAV does not close what io_open returns: the caller does (Video.close)
        return fh

    return io_open


# demuxers whose "file" names other files or streams; concat opens them without going through io_open
_REFERENCE_FORMATS = frozenset({"concat", "hls", "dash", "sdp", "rtp", "rtsp", "tee"})


def _open_container(path: Path, self_contained: bool = False, opened: list | None = None):
    av = _av()
    extra = {"io_open": _only_this_file(path, opened if opened is not None else [])} if self_contained else {}
    try:
        container = av.open(str(path), metadata_errors="ignore", **extra)
    except (av.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise open_error(path, exc) from exc
    if self_contained and set(container.format.name.split(",")) & _REFERENCE_FORMATS:
        container.close()
        raise reference_file(path)
    return container


def _video_stream(container, path: Path):
    av = _av()
    attached = getattr(av.stream.Disposition, "attached_pic", 0)
    streams = [s for s in container.streams.video if not (attached and int(s.disposition) & int(attached))]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        what = "audio only" if kinds == ["audio"] else "contains " + ", ".join(kinds)
        raise DecodeError(f"{path.name}: no video stream ({what})")
    return max(streams, key=lambda s: (s.codec_context.width or 0) * (s.codec_context.height or 0))


def _codec_name(stream) -> str:
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


def _frame_rotation(frame) -> int:
    try:
        r = int(round(frame.rotation or 0))
    except (AttributeError, TypeError, ValueError):
        return 0
    return r % 360


def _index_times(stream, path: Path) -> list[float] | None:
    """Per-frame timestamps from the container index (MP4, AVI), without reading the file.

    Entries whose bytes lie beyond the end of the file are dropped: that is how a truncated MP4 with
    its index at the front still reports the frames it really has.
    """
    try:
        entries = stream.index_entries
        n = len(entries)
    except (AttributeError, TypeError):
        return None
    if n < 2 or (stream.frames and n != stream.frames):
        return None  # keyframe-only index (MKV cues) or none
    size = path.stat().st_size
    tb = float(stream.time_base)
    times = [e.timestamp * tb for e in entries if e.pos + e.size <= size and not e.is_discard]
    return sorted(times) if times else None


def _demux_times(container, stream, deadline: float | None = None, path: Path = Path("video")) -> list[float]:
    """Per-frame timestamps by reading packets (no decoding): for MKV/WebM and broken indexes."""
    av = _av()
    tb = float(stream.time_base) if stream.time_base else 0.0
    times: list[float] = []
    count = 0
    try:
        for pkt in container.demux(stream):
            if deadline is not None and count % 256 == 0:
                check_deadline(deadline, path)
            if pkt.size == 0:
                continue
            ts = pkt.pts if pkt.pts is not None else pkt.dts
            times.append(ts * tb if ts is not None and tb else float("nan"))
            count += 1
    except (av.FFmpegError, OSError) as exc:  # truncated container: keep what was readable
        log.debug("demux stopped early: %s", exc)
    if any(t != t for t in times):  # some packet had no timestamp: fall back to positions
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        return [i / rate for i in range(count)]
    return sorted(times)


class Video:
    """One open video file: its :class:`VideoInfo`, frame times, and readers.

    Use as a context manager. Opening decodes the first frame, so a file that opens is a file that
    decodes (at least at the start); everything else about the file comes from the container index
    or, failing that, from reading packets without decoding them.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        threads: int = 1,
        deadline: float | None = None,
        self_contained: bool = False,
        frame_tolerance: float = 0.0,
    ):
        self.path = Path(path)
        self.threads = max(0, int(threads))
        # seconds a sampled frame may be from its target when reading windows: > 0 decodes only
        # reference frames (see iter_windows); 0 decodes every frame (exact)
        self.frame_tolerance = max(0.0, float(frame_tolerance))
        self.max_frame_offset = 0.0  # the largest |substitute - target| time of the last iter_windows
        self.deadline = deadline  # time.monotonic() after which decoding stops with a DecodeError
        self.self_contained = self_contained  # refuse playlists that open other files/URLs (untrusted input)
        self._opened: list = []  # file objects handed to ffmpeg through io_open (self_contained only)
        check_file(self.path)
        self._container = None
        try:
            self._container = _open_container(self.path, self_contained, self._opened)
            self.info, self._times = self._probe()
        except BaseException:
            self.close()
            raise

    # -- lifecycle
    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        while self._opened:
            self._opened.pop().close()

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- probing
    def _probe(self) -> tuple[VideoInfo, np.ndarray]:
        av = _av()
        stream = _video_stream(self._container, self.path)
        codec = _codec_name(stream)
        first = None
        try:
            for packet in self._container.demux(stream):  # = container.decode(stream), with a deadline check
                check_deadline(self.deadline, self.path)
                frames = packet.decode()
                if frames:
                    first = frames[0]
                    break
        except (av.FFmpegError, OSError) as exc:
            raise DecodeError(f"{self.path.name}: {codec} video does not decode ({exc}); the file is corrupt") from exc
        if first is None:
            raise DecodeError(f"{self.path.name}: the {codec} stream has no decodable frames (corrupt or truncated)")
        self.declared_frames = int(stream.frames or 0)
        rotation = _frame_rotation(first)
        width, height = first.width, first.height
        if width * height > MAX_PIXELS:  # 8K: anything bigger is a decompression bomb or a mistake
            raise DecodeError(f"{self.path.name}: frames of {width}x{height} pixels are larger than 8K; refusing")
        if rotation in (90, 270):
            width, height = height, width

        # read what is needed from `stream` now: it belongs to the container closed below, and touching
        # a closed container's stream reads freed memory (a segfault with e.g. an ffconcat file)
        rate = float(stream.average_rate or stream.guessed_rate or 0) or None
        stream_seconds = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0.0
        times = _index_times(stream, self.path)
        if times is None:
            self._container.close()
            self._container = _open_container(self.path, self.self_contained, self._opened)
            times = _demux_times(self._container, _video_stream(self._container, self.path), self.deadline, self.path)
        if not times:
            times = [0.0]
        t = np.asarray(times, dtype=np.float64)
        self._time_origin = float(t[0])  # decoded frames' pts minus this = their place in frame_times()
        t -= t[0]
        if len(t) > 1:
            step = float(t[-1] - t[-2]) or (1.0 / rate if rate else 0.0)  # the last frame shows this long
            duration = float(t[-1] + step)
            fps = len(t) / duration if duration > 0 else (rate or 0.0)
        else:
            candidates = [
                stream_seconds,
                (self._container.duration or 0) / 1e6,
                1.0 / rate if rate else 0.0,
            ]
            duration = next((d for d in candidates if 0 < d < 1e7), 0.0)
            fps = rate if rate and 0 < rate < 1e4 else (1.0 / duration if duration else 0.0)
        info = VideoInfo(
            num_frames=len(t),
            fps=round(fps, 6),
            duration=round(duration, 6),
            width=int(width),
            height=int(height),
            codec=codec,
            rotation=rotation,
        )
        return info, t

    def frame_times(self) -> np.ndarray:
        """Presentation time (s, from the first frame) of every frame, in display order."""
        return self._times.copy()

    def index_at(self, seconds: float) -> int:
        """Index of the frame shown at ``seconds`` (the last frame starting at or before it)."""
        i = int(np.searchsorted(self._times, seconds + 1e-9, side="right")) - 1
        return max(0, min(len(self._times) - 1, i))

    # -- reading
    def _decoder(self, reference_only: bool = False):
        av = _av()
        self.close()
        self._container = _open_container(self.path, self.self_contained, self._opened)
        stream = _video_stream(self._container, self.path)
        self._time_base = float(stream.time_base) if stream.time_base else None
        if self.threads != 1:
            stream.thread_type = "AUTO"
            stream.codec_context.thread_count = self.threads
        if reference_only:
            # frames no other frame refers to (most B-frames) are not decoded at all, and the deblocking
            # filter is skipped: ~15% of H.264 decoding. Measured on 720p x264 files: it adds 0.01 to the
            # mean absolute change of the normalised model input that the frame substitution makes (0.11),
            # and clip embeddings keep cosine 0.9998 (mean; min 0.9989) to the exact decode either way.
            stream.codec_context.skip_frame = "NONREF"
            stream.codec_context.options = {"skip_loop_filter": "all"}
        errors = 0
        try:
            for packet in self._container.demux(stream):
                check_deadline(self.deadline, self.path)
                try:
                    frames = packet.decode()
                except av.FFmpegError:
                    errors += 1
                    if errors > 50:
                        raise
                    continue
                yield from frames
        except (av.FFmpegError, OSError) as exc:
            # The end of a truncated or damaged file: deliver what decoded; callers count frames.
            log.debug("%s: decoding stopped early: %s", self.path.name, exc)
        self.decode_errors = errors

    def iter_windows(self, windows: Sequence[Sequence[int]]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(window_number, frames uint8 [len(window),H,W,3])`` reading the file once in order.

        Each window is a list of frame indices (repeats allowed). Windows complete in the order of
        their last index. A window the file ends before (truncated file) is padded with its last
        decoded frame if it got any frame, and skipped otherwise; ``self.frames_decoded`` says how far
        decoding got.

        With ``frame_tolerance`` > 0 only reference frames are decoded, without the deblocking filter
        (the decoder skips frames no other frame refers to: most B-frames, ~40% of x264's output,
        decoding ~1.7-2× faster) and
        each wanted frame is served by the nearest decoded frame whose time is within the tolerance
        of its own (``max_frame_offset`` records the largest offset used). Window membership and
        frame times stay exact, so clip boundaries do not move; a window with a frame that no decoded
        frame is close enough to (or a stream without timestamps) is decoded exactly instead, and so is
        a file whose frames are further apart than the tolerance (see :meth:`frame_interval`).
        """
        self.max_frame_offset = 0.0
        if self.frame_tolerance > 0 and self.frame_interval() <= self.frame_tolerance + 1e-9:
            yield from iter_windows_reference(self, windows)
            return
        yield from iter_windows_exact(self, windows)

    def frame_interval(self) -> float:
        """Typical seconds between frames (the median step; inf for one frame).

        Reference-only decoding stands a neighbouring frame in for a skipped one; when even the
        nearest neighbour is further than ``frame_tolerance`` (8 fps footage at 0.1 s), it cannot
        serve anything and the file is decoded exactly from the start instead of twice.
        """
        return float(np.median(np.diff(self._times))) if len(self._times) > 1 else float("inf")

    def read(self, indices: Sequence[int]) -> np.ndarray:
        """Frames at ``indices`` (any order, repeats allowed) as uint8 [N,H,W,3], in request order."""
        if len(indices) == 0:
            raise InvalidInput("no frame indices requested")
        got = list(self.iter_windows([list(indices)]))
        if not got:
            raise DecodeError(f"{self.path.name}: none of the requested frames could be decoded")
        return got[0][1]


# ---------------------------------------------------------------------------------------------
# public functions


def probe(path: str | os.PathLike, *, deadline: float | None = None, self_contained: bool = False) -> VideoInfo:
    """Open ``path``, decode its first frame and describe it; raises DecodeError with the reason.

    ``deadline`` and ``self_contained``: see :func:`read_frames` (for files from untrusted users).
    """
    with Video(path, deadline=deadline, self_contained=self_contained) as video:
        return video.info


def open_video(path: str | os.PathLike, *, threads: int = 1) -> Video:
    return Video(path, threads=threads)


def _read_decord(path: Path, indices: Sequence[int], info: VideoInfo, threads: int) -> np.ndarray | None:
    try:
        import decord
    except ImportError:
        return None
    try:
        vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=max(1, threads))
        n = len(vr)
        if n <= 0:
            return None
        batch = vr.get_batch([min(int(i), n - 1) for i in indices]).asnumpy()
    except Exception as exc:  # decord raises bare DECORDError/RuntimeError for anything it dislikes
        log.debug("decord failed on %s, falling back to PyAV: %s", path, exc)
        return None
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.shape[1:3] != (info.height, info.width):
        return None
    return batch


def read_frames(
    path: str | os.PathLike,
    indices: Sequence[int],
    *,
    threads: int = 1,
    backend: str = "auto",
    deadline: float | None = None,
    self_contained: bool = False,
) -> np.ndarray:
    """Frames of ``path`` at ``indices`` as uint8 [N,H,W,3] (displayed orientation, request order).

    ``backend``: "auto" (decord, PyAV when decord fails or is known to be wrong for the file),
    "decord" or "pyav". Indices past the last decodable frame read the last decodable frame.
    ``deadline`` (a ``time.monotonic()`` value): past it, a DecodeError; "auto" then reads with PyAV,
    which checks it between packets (a decord call cannot be interrupted). ``self_contained``: refuse
    playlists and manifests (HLS, DASH, ffconcat) that would make ffmpeg open other files or URLs; "auto"
    then reads with PyAV too (decord opens files its own way).
    """
    if backend not in ("auto", "decord", "pyav"):
        raise InvalidInput(f"unknown decode backend {backend!r} (auto, decord or pyav)")
    indices = [int(i) for i in indices]
    if not indices:
        raise InvalidInput("no frame indices requested")
    if min(indices) < 0:
        raise InvalidInput("frame indices must be non-negative")
    if (deadline is not None or self_contained) and backend == "auto":
        backend = "pyav"
    with Video(path, threads=threads, deadline=deadline, self_contained=self_contained) as video:
        info = video.info
        clamped = [min(i, info.num_frames - 1) for i in indices]
        if backend != "pyav" and info.codec not in _DECORD_UNSUPPORTED and info.rotation == 0:
            if info.num_frames >= video.declared_frames:  # decord cannot open truncated files
                out = _read_decord(video.path, clamped, info, threads)
                if out is not None:
                    return out
        if backend == "decord":
            raise DecodeError(f"{video.path.name}: decord cannot read this file; use backend='pyav'")
        return video.read(clamped)
