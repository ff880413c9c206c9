"""Real test videos, made with ffmpeg and PyAV, for every test that needs a file on disk.

Each frame carries its own index as a 10-bit barcode in a top strip (see :func:`frame_index`), so a
test can check *which* frames a decoder returned, not only how many, even after lossy coding.
The rest of the frame is a flat colour with a moving square, so clips differ in content and motion.

Import as ``from tests.videos import make_video, make_library, ...``. Nothing here needs a GPU or the
network; ffmpeg (Debian package) must be on PATH.
"""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

BITS = 10  # barcode bits: frame indices are encoded modulo 1024

# codec name -> (file extension, ffmpeg encoder arguments). Fast settings: tests encode many tiny files.
CODECS: dict[str, tuple[str, list[str]]] = {
    "h264": (".mp4", ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p"]),
    "h265": (
        ".mp4",
        [
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-crf",
            "18",
            "-pix_fmt",
            "yuv420p",
            "-tag:v",
            "hvc1",
            "-x265-params",
            "log-level=error",
        ],
    ),
    "vp9": (
        ".webm",
        [
            "-c:v",
            "libvpx-vp9",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-crf",
            "20",
            "-b:v",
            "0",
            "-pix_fmt",
            "yuv420p",
        ],
    ),
    "av1": (
        ".mp4",
        ["-c:v", "libaom-av1", "-usage", "realtime", "-cpu-used", "8", "-crf", "20", "-pix_fmt", "yuv420p"],
    ),
    "mpeg4": (".avi", ["-c:v", "mpeg4", "-q:v", "2", "-pix_fmt", "yuv420p"]),
    "mjpeg": (".avi", ["-c:v", "mjpeg", "-q:v", "2", "-pix_fmt", "yuvj420p"]),
}


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg is not installed (Debian: apt-get install ffmpeg)")
    return exe


def _run(args: list[str], stdin: bytes | None = None) -> None:
    proc = subprocess.run(
        [_ffmpeg(), "-y", "-hide_banner", "-loglevel", "error", *args], input=stdin, capture_output=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-2000:]}")


def synth_frames(
    n: int, width: int = 64, height: int = 48, color: tuple[int, int, int] = (40, 90, 200), start: int = 0
) -> np.ndarray:
    """n RGB frames [n,H,W,3]: barcode of the frame index on top, coloured background, moving square."""
    if width < 2 * BITS or height < 8:
        raise ValueError("frames must be at least 20x8 pixels to carry the barcode")
    frames = np.empty((n, height, width, 3), np.uint8)
    frames[:] = np.asarray(color, np.uint8)
    strip = max(4, height // 4)
    cell = width // BITS
    side = max(4, min(width, height) // 4)
    for k in range(n):
        i = start + k
        f = frames[k]
        for b in range(BITS):
            f[:strip, b * cell : (b + 1) * cell] = 255 if (i >> b) & 1 else 0
        x = (i * 3) % max(1, width - side)
        y = strip + (i * 2) % max(1, height - strip - side)
        f[y : y + side, x : x + side] = (255 - color[0], 255 - color[1], 255 - color[2])
    return frames


def frame_index(frame: np.ndarray) -> int:
    """Recover the barcode index of a decoded (unrotated) frame made by :func:`synth_frames`."""
    h, w = frame.shape[:2]
    strip = max(4, h // 4)
    cell = w // BITS
    gray = frame[: strip - 1, :, :3].astype(np.float32).mean(axis=2)
    value = 0
    for b in range(BITS):
        block = gray[1:, b * cell + 1 : (b + 1) * cell - 1]
        if block.mean() > 127:
            value |= 1 << b
    return value


def make_video(
    path: str | Path,
    *,
    seconds: float = 2.0,
    fps: float = 10,
    size: tuple[int, int] = (64, 48),
    codec: str = "h264",
    rotation: int = 0,
    audio: bool = False,
    faststart: bool = False,
    gop: int | None = None,
    color: tuple[int, int, int] = (40, 90, 200),
) -> Path:
    """Encode a constant-frame-rate video of ``round(seconds*fps)`` barcoded frames.

    ``rotation`` (0/90/180/270) is written as display-matrix metadata the way phones do, so the
    stored pixels stay unrotated. ``faststart`` moves the moov atom to the front, which keeps a
    truncated copy openable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext, enc = CODECS[codec]
    n = max(1, round(seconds * fps))
    w, h = size
    frames = synth_frames(n, w, h, color)
    args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={n / fps}"]
    args += enc
    if gop:
        args += ["-g", str(gop)]
    if audio:
        args += ["-c:a", "aac", "-shortest"]
    if faststart and path.suffix.lower() in (".mp4", ".mov", ".m4v"):
        args += ["-movflags", "+faststart"]
    if rotation % 360:
        tmp = path.with_name(path.stem + ".unrotated" + (path.suffix or ext))
        _run(args + [str(tmp)], frames.tobytes())
        meta = ["-metadata:s:v:0", f"rotate={rotation % 360}"]
        extra = ["-movflags", "+faststart"] if faststart else []
        _run(["-i", str(tmp), "-map", "0", "-c", "copy", *meta, *extra, str(path)])
        tmp.unlink()
    else:
        _run(args + [str(path)], frames.tobytes())
    return path


def make_vfr_video(
    path: str | Path,
    *,
    segments: tuple[tuple[float, float], ...] = ((1.0, 25.0), (1.0, 5.0)),
    size: tuple[int, int] = (64, 48),
    color: tuple[int, int, int] = (200, 60, 60),
) -> Path:
    """Variable frame rate H.264 MP4: each (seconds, fps) segment at its own rate, barcodes continuous."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    times: list[float] = []
    t = 0.0
    for seconds, fps in segments:
        for _ in range(max(1, round(seconds * fps))):
            times.append(t)
            t += 1.0 / fps
    frames = synth_frames(len(times), w, h, color)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"preset": "ultrafast", "crf": "18"}
        for ts, arr in zip(times, frames, strict=True):
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = round(ts * 1000)
            frame.time_base = Fraction(1, 1000)
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


def vfr_times(segments: tuple[tuple[float, float], ...] = ((1.0, 25.0), (1.0, 5.0))) -> list[float]:
    """Presentation times (s) of the frames :func:`make_vfr_video` writes for the same segments."""
    times, t = [], 0.0
    for seconds, fps in segments:
        for _ in range(max(1, round(seconds * fps))):
            times.append(round(t, 3))
            t += 1.0 / fps
    return times


def make_one_frame_video(path: str | Path, size: tuple[int, int] = (64, 48)) -> Path:
    return make_video(path, seconds=1, fps=1, size=size)


def make_4k_video(path: str | Path, seconds: float = 0.5, fps: float = 4) -> Path:
    return make_video(path, seconds=seconds, fps=fps, size=(3840, 2160))


def make_many_frames(path: str | Path, frames: int = 20_000, size: tuple[int, int] = (64, 64)) -> Path:
    """A small file that is slow to decode: ``frames`` black frames after one keyframe (~15 bytes each).

    The hostile-upload shape: seeking cannot skip ahead, so reading a late frame decodes all before it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    _run(
        ["-f", "lavfi", "-i", f"color=black:s={w}x{h}:r=1000", "-frames:v", str(frames), "-c:v", "libx264",
         "-preset", "ultrafast", "-x264-params", "keyint=infinite:scenecut=0", "-pix_fmt", "yuv420p", str(path)]
    )  # fmt: skip
    return path


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """An AAC track in an .mp4 container: a real media file without a video stream."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run(["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", "-f", "mp4", str(path)])
    return path


def make_zero_byte(path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def make_text_as_video(path: str | Path) -> Path:
    """A text file renamed to .mp4 (what users' download folders are full of)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<html><body>404 Not Found</body></html>\n" * 20)
    return path


def make_corrupt(path: str | Path, seed: int = 0) -> Path:
    """A valid MP4 header followed by random bytes: opens as a container, decodes nothing."""
    path = make_video(path, seconds=2, fps=10, faststart=True)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    start = len(data) // 3
    data[start:] = rng.integers(0, 256, len(data) - start, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def make_truncated(
    path: str | Path, *, fraction: float = 0.5, faststart: bool = True, seconds: float = 4.0, fps: float = 10
) -> Path:
    """A video cut off after ``fraction`` of its bytes (an interrupted download or copy).

    With ``faststart`` the index (moov) survives, so the first part is still decodable; without it
    the file has no index at all and cannot be opened.
    """
    path = Path(path)
    full = make_video(path, seconds=seconds, fps=fps, faststart=faststart, gop=5)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_library(
    root: str | Path,
    *,
    count: int = 4,
    seconds: float = 3.0,
    fps: float = 10,
    size: tuple[int, int] = (64, 48),
    codec: str = "h264",
) -> list[Path]:
    """``count`` small good videos with distinct colours, one in a subfolder (for recursive scans)."""
    root = Path(root)
    palette = [
        (220, 40, 40),
        (40, 200, 60),
        (40, 70, 220),
        (230, 210, 40),
        (200, 60, 200),
        (60, 210, 210),
        (120, 120, 120),
        (250, 140, 30),
    ]
    paths = []
    for i in range(count):
        sub = root / "sub" if i % 3 == 2 else root
        ext = CODECS[codec][0]
        paths.append(
            make_video(
                sub / f"video_{i:03d}{ext}",
                seconds=seconds,
                fps=fps,
                size=size,
                codec=codec,
                color=palette[i % len(palette)],
            )
        )
    return paths


def make_bad_library(root: str | Path) -> dict[str, Path]:
    """One file of each awkward kind, keyed by kind; good ones and bad ones mixed in one folder."""
    root = Path(root)
    return {
        "zero_byte": make_zero_byte(root / "empty.mp4"),
        "text": make_text_as_video(root / "not a video.mp4"),
        "audio_only": make_audio_only(root / "audio only.mp4"),
        "truncated_no_index": make_truncated(root / "truncated_noindex.mp4", faststart=False),
        "truncated": make_truncated(root / "truncated.mp4", faststart=True),
        "one_frame": make_one_frame_video(root / "one_frame.mp4"),
        "rotated": make_video(root / "rotated.mp4", seconds=2, rotation=90),
        "vfr": make_vfr_video(root / "vfr.mp4"),
        "non_ascii": make_video(root / "vidéo été 日本 — ñ.mp4", seconds=2),
    }
