"""`vtr index` against a full ffmpeg decode of the same files, whole-process wall times, in one run.

    .venv/bin/python benchmarks/index_vs_ffmpeg.py [--files 12] [--seconds 30] [--size 1280x720] [--fps 30]
        [--tolerance 0.1] [--rounds 1] [--dir DIR]

1. Generates camera-like H.264 files (ffmpeg testsrc2 with temporal noise, x264 veryfast, B-frames on:
   what cameras and phones write), 12 x 30 s = 6 minutes of 720p30 by default (kept in ``--dir``).
2. Times, interleaved (``--rounds`` times; the median of each counts) and each as whole processes
   from start to exit:
   - ``ffmpeg -i FILE -f null -`` over every file, one after the other (ffmpeg's own threads: all cores);
   - ``vtr index DIR`` into a fresh home, exact frames (``--frame-tolerance 0``);
   - ``vtr index DIR --frame-tolerance T`` (reference frames only).
3. Prints the ratios ffmpeg time / vtr index time (goal >= 1.5 with the tolerance) and writes
   ``benchmarks/results/index_vs_ffmpeg.json`` with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "index_vs_ffmpeg.json"


def machine(load_start: tuple[float, ...]) -> dict:
    """Cores and load averages at the start and now: what says how busy the shared machine was."""
    return {
        "cpus": os.cpu_count(),
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in os.getloadavg()],
    }


def timed(cmd: list[str], **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--tolerance", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; each figure is the median")
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "vtr-bench-720p")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()

    lib = args.dir / f"{args.files}x{args.seconds:g}s-{args.size}-{args.fps}"
    lib.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from index_throughput import make_camera_like  # the same camera-like files as the throughput benchmark

    files = [lib / f"cam{i:02d}.mp4" for i in range(args.files)]
    for i, f in enumerate(files):
        if not f.exists():
            make_camera_like(f, args.seconds, args.size, args.fps, i)
    vtr = str(Path(sys.executable).with_name("vtr"))
    load0 = os.getloadavg()

    def ffmpeg() -> float:
        return sum(timed(["ffmpeg", "-hide_banner", "-nostats", "-i", str(f), "-f", "null", "-"]) for f in files)

    def index(tolerance: float) -> float:
        home = Path(tempfile.mkdtemp(prefix="vtr-bench-home-"))
        try:
            env = {**os.environ, "VTR_THUMBNAIL_SIZE": os.environ.get("VTR_THUMBNAIL_SIZE", "320")}
            return timed([vtr, "index", str(lib), "--home", str(home), "--quiet", "--frame-tolerance", str(tolerance)], env=env)  # fmt: skip
        finally:
            shutil.rmtree(home, ignore_errors=True)

    order = [("ffmpeg_full_decode", ffmpeg), ("vtr_index_exact", lambda: index(0.0)),
             (f"vtr_index_tolerance_{args.tolerance:g}", lambda: index(args.tolerance))]  # fmt: skip
    runs: dict[str, list[float]] = {name: [] for name, _ in order}
    for _ in range(max(1, args.rounds)):
        for name, fn in order:
            runs[name].append(round(fn(), 2))
            print(f"{name:<28}{runs[name][-1]:>8.1f} s   (load {', '.join(f'{x:.1f}' for x in os.getloadavg())})")
    times = {name: round(statistics.median(v), 2) for name, v in runs.items()}
    base = times["ffmpeg_full_decode"]
    ratios = {k: round(base / v, 2) for k, v in times.items() if k != "ffmpeg_full_decode"}
    for k, r in ratios.items():
        print(f"ffmpeg full decode / {k} = {r}  (goal >= 1.5 for the tolerance run)")
    video_seconds = args.files * args.seconds
    result = {
        "machine": machine(load0),
        "library": {
            "files": args.files,
            "seconds_each": args.seconds,
            "size": args.size,
            "fps": args.fps,
            "video_seconds": video_seconds,
        },  # fmt: skip
        "seconds": times,
        "runs": runs,
        "ratio_ffmpeg_over_index": ratios,
        "tolerance": args.tolerance,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results in {args.output}")


if __name__ == "__main__":
    main()
