"""Text-search latency over HTTP against its in-process parts, and QPS with 1 vs 8 clients, in one run.

    .venv/bin/python benchmarks/query_latency.py [--clips 400] [--long 8] [--queries 200]
        [--home EXISTING_HOME] [--model viclip-tiny-synth] [--threads 8] [--rerank-k 64] [--k 20]

1. Builds the demo library (synthetic clips + long multi-event videos, `vtr demo`'s pipeline) in a
   temporary folder, or uses ``--home``.
2. Starts `vtr serve` on a free port (a real waitress server in its own process; rate limit off).
3. Sends the same unique queries (no cache hits) over HTTP, one at a time: p50/p99 of the round trip.
4. Runs the same queries in this process through the engine's parts: text encode, FAISS search,
   catalog lookup, re-rank of the top ``rerank_k`` with the matching head; and the engine's whole
   ``search_text``. Prints p50/p99 of each and the ratio HTTP / parts (goal: p50 <= 1.3).
5. QPS with 1 client and with 8 concurrent clients (goal: 8 clients >= 2x one), and how many text
   encodes the server batched together meanwhile.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_queries(home: Path, n: int) -> list[str]:
    """Unique queries in the library's vocabulary: its captions with a counter (defeats the query cache)."""
    from retrieval.catalog import Catalog
    from retrieval.home import DataHome

    cat = Catalog(DataHome(home).db_url(), create=False)
    texts = [t.text for t in cat.texts_by_ids(cat.all_text_ids())]
    cat.close()
    if not texts:
        texts = ["a red circle moves left", "a small green cross moving downward", "a yellow square grows"]
    return [f"{texts[i % len(texts)]} {i}" for i in range(n)]


def start_server(home: Path, args) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    cmd = [str(Path(sys.executable).with_name("vtr")), "serve", "--home", str(home), "--port", str(port),
           "--threads", str(args.threads), "--rerank-k", str(args.rerank_k)]  # fmt: skip
    if args.model:
        cmd += ["--model", args.model]
    env = {**os.environ, "VTR_RATE_LIMIT": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("vtr serve exited; run it by hand to see why: " + " ".join(cmd))
        try:
            if requests.get(base + "/api/v1/health", timeout=2).status_code == 200:
                return proc, base
        except requests.ConnectionError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("vtr serve did not come up in 120 s")


def http_latencies(base: str, queries: list[str], k: int) -> list[float]:
    import requests

    out = []
    with requests.Session() as s:
        for q in queries:
            t0 = time.perf_counter()
            r = s.get(base + "/api/v1/search", params={"q": q, "k": k, "rerank": 1})
            out.append(time.perf_counter() - t0)
            r.raise_for_status()
    return out


def component_latencies(home: Path, queries: list[str], args) -> dict[str, list[float]]:
    """The parts of a text search, each timed on its own, in this process."""
    import torch

    from retrieval.engine import SearchEngine
    from webapp.cli import set_torch_threads

    set_torch_threads(server=True)  # the same threads per model call as the server under test
    eng = SearchEngine(home, model=args.model, rerank_k=args.rerank_k).load()
    index = eng._clip_index()
    r = eng.rerank_k
    times: dict[str, list[float]] = {"encode": [], "ann": [], "catalog": [], "rerank": [], "parts": [], "engine": []}
    for q in queries:
        t0 = time.perf_counter()
        enc = eng._encode_text_batch([q])[0]
        t1 = time.perf_counter()
        scores, ids = index.search(enc.vector[None], max(args.k, r))
        t2 = time.perf_counter()
        recs = eng.catalog.clips_by_ids(ids[0][ids[0] >= 0].tolist())
        cands = list(zip(recs, scores[0].tolist(), strict=False))
        t3 = time.perf_counter()
        eng._rerank_clips_for_text(enc, cands[:r])
        t4 = time.perf_counter()
        for name, dt in (("encode", t1 - t0), ("ann", t2 - t1), ("catalog", t3 - t2), ("rerank", t4 - t3)):
            times[name].append(dt)
        times["parts"].append(t4 - t0)
    eng._cache.clear()
    for q in queries:
        t0 = time.perf_counter()
        eng.search_text(q + " again", k=args.k, rerank=True)
        times["engine"].append(time.perf_counter() - t0)
    print(f"in-process: torch threads {torch.get_num_threads()}, index {index.factory} with {index.ntotal} vectors")
    eng.close()
    return times


def qps(base: str, queries: list[str], clients: int, k: int) -> float:
    import requests

    chunks = [queries[i::clients] for i in range(clients)]
    errors = []

    def run(chunk):
        with requests.Session() as s:
            for q in chunk:
                r = s.get(base + "/api/v1/search", params={"q": q, "k": k, "rerank": 1})
                if r.status_code != 200:
                    errors.append(r.status_code)

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} failed requests: {sorted(set(errors))}")
    return len(queries) / elapsed


def encoder_counts(base: str) -> tuple[int, int]:
    import requests

    te = requests.get(base + "/api/v1/stats").json()["text_encoder"]
    return te["queries"], te["batches"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="search this existing data home instead of building one")
    ap.add_argument("--clips", type=int, default=400, help="short clips in the generated library")
    ap.add_argument("--long", type=int, default=8, help="long multi-event videos in the generated library")
    ap.add_argument("--queries", type=int, default=200, help="queries per measurement")
    ap.add_argument("--model", default=None, help="model (default: the one the index was built with)")
    ap.add_argument("--threads", type=int, default=8, help="server threads")
    ap.add_argument("--rerank-k", type=int, default=64)
    ap.add_argument("-k", "--k", type=int, default=20, help="results per query")
    args = ap.parse_args()

    tmp = None
    if args.home is None:
        from webapp.cli import build_demo

        tmp = Path(tempfile.mkdtemp(prefix="vtr-bench-"))
        t0 = time.perf_counter()
        built = build_demo(tmp, args.clips, args.long, 0, args.model, None)
        home = built["home"]
        print(f"built library: {built['stats']['clips']} clips in {time.perf_counter() - t0:.0f} s")
    else:
        home = args.home
    queries = make_queries(home, args.queries * 4 + 20)
    warm, seq, par1, par8 = (queries[:20], queries[20 : 20 + args.queries],
                             queries[20 + args.queries : 20 + 2 * args.queries], queries[20 + 2 * args.queries :])  # fmt: skip
    proc, base = start_server(home, args)
    try:
        http_latencies(base, warm, args.k)
        http = http_latencies(base, seq, args.k)
        parts = component_latencies(home, seq, args)
        q1 = qps(base, par1, 1, args.k)
        n0, b0 = encoder_counts(base)
        q8 = qps(base, par8, 8, args.k)
        n1, b1 = encoder_counts(base)
    finally:
        proc.terminate()
        proc.wait(10)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{len(seq)} unique text queries, k={args.k}, re-rank top {args.rerank_k}, cpu cores {os.cpu_count()}, "
          f"load average {load} (other processes share these cores)")  # fmt: skip
    print(f"{'':<28}{'p50 ms':>9}{'p99 ms':>9}")
    rows = [("HTTP round trip", http)] + [
        (f"in process: {n}", parts[n]) for n in ("encode", "ann", "catalog", "rerank")
    ]
    rows += [("in process: sum of parts", parts["parts"]), ("in process: engine.search_text", parts["engine"])]
    for name, vals in rows:
        print(f"{name:<28}{pct(vals, 50):>9.2f}{pct(vals, 99):>9.2f}")
    ratio = pct(http, 50) / pct(parts["parts"], 50)
    print(f"HTTP p50 / parts p50 = {ratio:.2f}  (goal <= 1.3)")
    print(f"HTTP p50 / engine p50 = {pct(http, 50) / pct(parts['engine'], 50):.2f}")
    print(f"\nQPS 1 client: {q1:.1f}   8 clients: {q8:.1f}   ratio {q8 / q1:.2f}  (goal >= 2)")
    batched = (n1 - n0) / max(1, b1 - b0)
    print(f"8 clients: {n1 - n0} text encodes in {b1 - b0} batches (mean batch {batched:.2f})")
    print(f"mean HTTP latency {statistics.mean(http) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
