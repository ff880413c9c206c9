"""Soak: N clients query a live `vtr serve` on loopback while `vtr index` adds videos to the same home.

Prints requests, errors (any non-200 or connection error), latency p50/p99, the server's RSS before and
after, and the indexed clips the server saw appear. Stops by itself after ``--seconds``.

    .venv/bin/python -m benchmarks.soak --clients 8 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

QUERIES = ["a red circle moves left", "a blue square grows", "first a green cross, then a yellow triangle",
           "something rotates clockwise", "a large purple circle on a white background", "x", "é 日本 🙂"]  # fmt: skip


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _request(url: str, i: int, rng: random.Random) -> tuple[int, float]:
    kind = i % 5
    if kind == 4:
        path = "/api/v1/stats"
    else:
        q = {"q": rng.choice(QUERIES), "k": rng.choice([5, 20, 50]), "rerank": rng.choice(["1", "0"])}
        if kind == 3:
            q["group_by_video"] = "1"
        path = "/api/v1/search?" + urllib.parse.urlencode(q)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url + path, timeout=60) as resp:
            resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0
    return status, (time.perf_counter() - t0) * 1000


def load(url: str, clients: int, seconds: float, seed: int = 0) -> dict:
    """``clients`` threads send requests back to back for ``seconds``; returns the figures."""
    lat: list[float] = []
    errors: list[int] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(n: int) -> None:
        rng = random.Random(seed * 1000 + n)
        i = n
        while time.monotonic() < stop:
            status, ms = _request(url, i, rng)
            with lock:
                lat.append(ms)
                if status != 200:
                    errors.append(status)
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()

    def pct(q: float) -> float:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else float("nan")

    return {"requests": len(lat), "errors": len(errors), "error_statuses": sorted(set(errors)),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99)}  # fmt: skip


def soak(home: Path, new_videos: Path | None, *, model: str, clients: int, seconds: float) -> dict:
    """Serve ``home``; load it for ``seconds`` (indexing ``new_videos`` meanwhile); the figures."""
    from tests.live import LiveServer, vtr_exe

    with LiveServer(home, model=model, threads=8) as srv:
        for _ in range(20):  # warm up
            _request(srv.url, 0, random.Random(0))
        clips_before = srv.get("/api/v1/health")["clips"]
        rss_before = rss_mb(srv.pid)
        indexer = None
        if new_videos is not None:
            cmd = [vtr_exe(), "index", str(new_videos), "--home", str(home), "--model", model, "--workers", "1",
                   "--clip-seconds", "1", "-q"]  # fmt: skip
            indexer = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        figures = load(srv.url, clients, seconds)
        if indexer is not None:
            _, err = indexer.communicate(timeout=600)
            figures["index_exit_code"] = indexer.returncode
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the server picks new clips up by itself
            clips_after = srv.get("/api/v1/health")["clips"]
            if new_videos is None or clips_after > clips_before:
                break
            time.sleep(0.5)
        figures.update(
            clients=clients, seconds=seconds, clips_before=clips_before, clips_after=clips_after,
            rss_before_mb=round(rss_before, 1), rss_after_mb=round(rss_mb(srv.pid), 1),
        )  # fmt: skip
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--new-videos", type=int, default=6, help="videos indexed while serving (0: none)")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.home import MODEL, build_home
    from tests.videos import make_library

    tmp = Path(tempfile.mkdtemp(prefix="vtr-soak-"))
    try:
        built = build_home(tmp)
        new = None
        if args.new_videos:
            new = tmp / "new"
            make_library(new, count=args.new_videos, seconds=4, fps=10)
        figures = soak(built["home"].root, new, model=MODEL, clients=args.clients, seconds=args.seconds)
        print(json.dumps(figures, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
