"""Query latency and throughput of `vtr serve`, and where a re-ranked query's time goes, in one run.

    .venv/bin/python benchmarks/query_latency.py [--clips 400] [--long 8] [--home EXISTING_HOME]
        [--pairs 100] [--seconds 8] [--threads 8] [--workers 1 2] [--rerank-k 64] [--k 20]

1. Builds the demo library (synthetic clips + long multi-event videos, `vtr demo`'s pipeline) in a
   temporary folder, or uses ``--home``.
2. In process, on the same queries and candidates: the re-rank step as it was before issue 11
   (two token-store lookups, an fp16->fp32 copy, the head's forward over every (query, candidate)
   pair) against the path the engine takes now (one lookup; :meth:`MatchHead.score`, which computes
   the text side once per query and only the end-of-text row in the last block), and the other
   parts of a text search (encode, candidates); the head in fp32 against bf16; a torch profile of
   both re-rank paths (top operators by self time).
3. Starts `vtr serve` (rate limit off) and sends unique text queries alternating re-rank on / off
   (interleaved, same server): p50/p99 of each and their ratio (goal <= 1.5).
4. QPS of every search route with 1 client and with 8 concurrent clients, each for ``--seconds``
   (in ``--rounds`` alternating rounds, so load from other jobs hits both alike):
   text search with and without re-ranking, ``/knn-service`` with an embedding, video search by
   clip id; once per ``--workers`` value (a server with that many processes). Goal: 8 clients >= 1x
   one client on every route, >= 1.8x for text search with re-ranking; 0 errors.
Everything is printed and written to ``benchmarks/results/query_latency.json`` with the machine's
load average (the 2-core machine is shared: compare ratios from one run, not absolute figures).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "query_latency.json"


def ms(values, q: float) -> float:
    return round(float(np.percentile(np.asarray(values) * 1000.0, q)), 2) if len(values) else float("nan")


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Queries:
    """Unique queries in the library's vocabulary (its captions with a counter: no cache hits)."""

    def __init__(self, home: Path):
        from retrieval.catalog import Catalog
        from retrieval.home import DataHome

        cat = Catalog(DataHome(home).db_url(), create=False)
        self.texts = [t.text for t in cat.texts_by_ids(cat.all_text_ids())] or ["a red circle moves left"]
        self.clip_ids = cat.clip_ids()
        cat.close()
        self.n = 0
        self.lock = threading.Lock()

    def next(self) -> str:
        with self.lock:
            self.n += 1
            return f"{self.texts[self.n % len(self.texts)]} {self.n}"


# ---------------------------------------------------------------------------------------------
# in process


def legacy_rerank(eng, enc, cands) -> np.ndarray:
    """The re-rank step before issue 11: contains() + get_tokens(), astype(float32), head forward per pair."""
    import torch

    ids = np.asarray([r.id for r, _ in cands], np.int64)
    store = eng._tokens.get()
    mask = store.contains(ids)
    toks = np.asarray(store.get_tokens(ids[mask]))
    n = int(mask.sum())
    video = torch.from_numpy(toks.astype(np.float32))
    model = eng.bundle[0]
    length = int(enc.ids.argmax()) + 1
    with torch.inference_mode():
        return model.match_logits(
            enc.tokens[None, :length].expand(n, -1, -1), enc.ids[None, :length].expand(n, -1), video
        ).numpy()


def op_profile(fn, reps: int) -> list[dict]:
    from torch.profiler import profile

    with profile() as prof:
        for _ in range(reps):
            fn()
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]
    total = sum(e.self_cpu_time_total for e in prof.key_averages()) or 1
    return [
        {
            "op": e.key,
            "ms_per_query": round(e.self_cpu_time_total / 1000 / reps, 3),
            "share": round(e.self_cpu_time_total / total, 3),
            "calls_per_query": e.count // reps,
        }  # fmt: skip
        for e in rows
    ]


def in_process(home: Path, queries: Queries, args) -> dict:
    import torch

    from retrieval import rerank as rescore
    from retrieval.engine import SearchEngine
    from webapp.cli import set_torch_threads

    set_torch_threads(server=True)  # the same threads per model call as the server under test
    eng = SearchEngine(home, rerank_k=args.rerank_k).load()
    r = eng.rerank_k
    texts = [queries.next() for _ in range(args.pairs)]
    t: dict[str, list[float]] = {k: [] for k in ("encode", "candidates", "gather", "rerank_before", "rerank_after")}
    jobs = []
    for q in texts:
        t0 = time.perf_counter()
        enc = eng.encoder._encode_text_batch([q])[0]
        t1 = time.perf_counter()
        cands = eng._clip_candidates(enc.vector, max(args.k, r), None, False)[:r]
        t2 = time.perf_counter()
        eng._tokens.tokens([c.id for c, _ in cands])
        t3 = time.perf_counter()
        t["encode"].append(t1 - t0)
        t["candidates"].append(t2 - t1)
        t["gather"].append(t3 - t2)
        jobs.append((enc, cands))
    worst = 0.0
    for enc, cands in jobs:  # interleaved, so load changes hit both alike
        t0 = time.perf_counter()
        before = legacy_rerank(eng, enc, cands)
        t1 = time.perf_counter()
        after = rescore.clips_for_text(eng.encoder, eng._tokens, enc, cands)
        t2 = time.perf_counter()
        t["rerank_before"].append(t1 - t0)
        t["rerank_after"].append(t2 - t1)
        worst = max(worst, float(np.abs(before - np.stack([after[c.id] for c, _ in cands])).max()))
    # dtype: the head pass in fp32 (as served) and in bf16, on the same pairs
    enc, cands = jobs[0]
    toks, _ = eng._tokens.tokens([c.id for c, _ in cands])
    head = eng.bundle[0].match_head
    length = int(enc.ids.argmax()) + 1
    qo = torch.zeros(len(toks), dtype=torch.long)
    dtypes = {}
    for name, dt in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        h = head if dt == torch.float32 else __import__("copy").deepcopy(head).to(dt)
        text, ids, video = enc.tokens[None, :length].to(dt), enc.ids[None, :length], torch.from_numpy(toks)
        with torch.inference_mode():
            h.score(text, ids, video, qo)
            t0 = time.perf_counter()
            for _ in range(20):
                h.score(text, ids, video, qo)
        dtypes[name] = round((time.perf_counter() - t0) / 20 * 1000, 2)
    reps = min(20, len(jobs))
    profile = {
        "before": op_profile(lambda: [legacy_rerank(eng, e, c) for e, c in jobs[:reps]], 1),
        "after": op_profile(
            lambda: [rescore.clips_for_text(eng.encoder, eng._tokens, e, c) for e, c in jobs[:reps]], 1
        ),
    }
    for rows in profile.values():
        for row in rows:
            row["ms_per_query"] = round(row["ms_per_query"] / reps, 3)
            row["calls_per_query"] = round(row["calls_per_query"] / reps, 1)
    eng.close()
    out = {k: {"p50_ms": ms(v, 50), "p99_ms": ms(v, 99)} for k, v in t.items()}
    out["rerank_speedup_p50"] = round(ms(t["rerank_before"], 50) / ms(t["rerank_after"], 50), 2)
    out["max_abs_logit_difference"] = worst
    out["head_ms_by_dtype"] = dtypes
    out["profile"] = profile
    out["torch_threads"] = torch.get_num_threads()
    return out


# ---------------------------------------------------------------------------------------------
# over HTTP


def start_server(home: Path, args, workers: int) -> tuple[subprocess.Popen, str]:

    port = free_port()
    cmd = [str(Path(sys.executable).with_name("vtr")), "serve", "--home", str(home), "--port", str(port),
           "--threads", str(args.threads), "--rerank-k", str(args.rerank_k), "--workers", str(workers)]  # fmt: skip
    env = {**os.environ, "VTR_RATE_LIMIT": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        return proc, wait_ready(proc, base, workers, cmd)
    except BaseException:
        stop_server(proc)
        raise


def wait_ready(proc: subprocess.Popen, base: str, workers: int, cmd: list[str]) -> str:
    import requests

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("vtr serve exited; run it by hand to see why: " + " ".join(cmd))
        try:
            if requests.get(base + "/api/v1/health", timeout=10).status_code == 200:
                # every worker must be up: health answers from the first one ready
                for _ in range(4 * workers):
                    requests.get(base + "/api/v1/search", params={"q": "warm up", "k": 1}, timeout=60)
                return base
        except requests.RequestException:  # not listening yet, or still loading
            time.sleep(0.2)
    raise SystemExit("vtr serve did not come up in 180 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def route_calls(base: str, queries: Queries, args, vector: list[float]) -> dict:
    """route name -> function(session) making one request of that route (unique text each time)."""
    k = args.k
    clip_ids = queries.clip_ids

    def search(s, rerank):
        return s.get(base + "/api/v1/search", params={"q": queries.next(), "k": k, "rerank": rerank})

    def knn(s):
        return s.post(base + "/knn-service", json={"embedding_input": vector, "modality": "image", "num_images": k, "indice_name": "vtr"})  # fmt: skip

    def video(s):
        return s.post(base + "/api/v1/search/video", json={"clip_id": int(clip_ids[queries.n % len(clip_ids)]), "k": k})

    return {
        "search_rerank": lambda s: search(s, 1),
        "search_plain": lambda s: search(s, 0),
        "knn_embedding": knn,
        "video_by_clip": video,
    }


def interleaved(base: str, queries: Queries, pairs: int, k: int) -> dict:
    import requests

    lat = {1: [], 0: []}
    errors = 0
    with requests.Session() as s:
        for i in range(pairs):
            for rerank in (1, 0) if i % 2 == 0 else (0, 1):
                t0 = time.perf_counter()
                r = s.get(base + "/api/v1/search", params={"q": queries.next(), "k": k, "rerank": rerank})
                lat[rerank].append(time.perf_counter() - t0)
                errors += r.status_code != 200
    out = {
        "rerank": {"p50_ms": ms(lat[1], 50), "p99_ms": ms(lat[1], 99)},
        "plain": {"p50_ms": ms(lat[0], 50), "p99_ms": ms(lat[0], 99)},
        "errors": errors,
    }
    out["ratio_p50"] = round(out["rerank"]["p50_ms"] / out["plain"]["p50_ms"], 2)
    return out


def qps(call, clients: int, seconds: float) -> dict:
    import requests

    done, errors, lat = [0] * clients, [0] * clients, [[] for _ in range(clients)]
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def run(i):
        with requests.Session() as s:
            start.wait()
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                r = call(s)
                lat[i].append(time.perf_counter() - t0)
                done[i] += 1
                errors[i] += r.status_code != 200

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    all_lat = [x for row in lat for x in row]
    return {
        "qps": round(sum(done) / elapsed, 1),
        "requests": sum(done),
        "errors": sum(errors),
        "p50_ms": ms(all_lat, 50),
    }


def merge(rows: list[dict], seconds: float) -> dict:
    """Rounds of one measurement as one: total requests over total time; the median round's p50."""
    n = sum(r["requests"] for r in rows)
    return {
        "qps": round(n / seconds, 1),
        "requests": n,
        "errors": sum(r["errors"] for r in rows),
        "p50_ms": float(np.median([r["p50_ms"] for r in rows])),
        "rounds_qps": [r["qps"] for r in rows],
    }


def throughput(base: str, queries: Queries, args, vector: list[float]) -> dict:
    import requests

    out = {}
    for name, call in route_calls(base, queries, args, vector).items():
        # alternating short rounds of 1 and 8 clients, so load from other jobs hits both alike
        rounds = {1: [], 8: []}
        for r in range(args.rounds):
            for clients in (1, 8) if r % 2 == 0 else (8, 1):
                rounds[clients].append(qps(call, clients, args.seconds / args.rounds))
        one, eight = (merge(rounds[c], args.seconds) for c in (1, 8))
        out[name] = {"1": one, "8": eight, "ratio": round(eight["qps"] / max(one["qps"], 1e-9), 2), "load": load()}
    stats = requests.get(base + "/api/v1/stats").json()
    out["batching"] = {"text_encoder": stats.get("text_encoder"), "reranker": stats.get("reranker")}
    return out


def clip_vector(home: Path, clip_id: int) -> list[float]:
    """A stored clip embedding: the /knn-service query vector (a client searching with vectors)."""
    from retrieval.home import DataHome
    from retrieval.token_store import TokenStore

    vec = TokenStore(DataHome(home).tokens_dir, readonly=True).get_vectors([clip_id])[0]
    return (vec / np.linalg.norm(vec)).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", type=Path, help="search this existing data home instead of building one")
    ap.add_argument("--clips", type=int, default=400, help="short clips in the generated library")
    ap.add_argument("--long", type=int, default=8, help="long multi-event videos in the generated library")
    ap.add_argument("--pairs", type=int, default=100, help="queries per in-process and interleaved measurement")
    ap.add_argument("--seconds", type=float, default=9.0, help="seconds per QPS measurement (1 or 8 clients)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds the seconds are split into")
    ap.add_argument("--threads", type=int, default=8, help="server threads (per worker)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server processes to measure")
    ap.add_argument("--rerank-k", type=int, default=64)
    ap.add_argument("-k", "--k", type=int, default=20, help="results per query")
    ap.add_argument("--skip-in-process", action="store_true")
    ap.add_argument("--output", type=Path, default=RESULTS)
    args = ap.parse_args()

    tmp = None
    if args.home is None:
        from webapp.cli import build_demo

        tmp = Path(tempfile.mkdtemp(prefix="vtr-bench-"))
        built = build_demo(tmp, args.clips, args.long, 0, None, None)
        home = built["home"]
    else:
        home = args.home
    queries = Queries(home)
    result: dict = {"machine": {"cpus": os.cpu_count(), "load_start": load()}, "home_clips": len(queries.clip_ids),
                    "rerank_k": args.rerank_k, "k": args.k, "threads": args.threads}  # fmt: skip
    try:
        if not args.skip_in_process:
            result["in_process"] = p = in_process(home, queries, args)
            print(f"in process ({args.pairs} queries, torch threads {p['torch_threads']}), p50/p99 ms:")
            for name in ("encode", "candidates", "gather", "rerank_before", "rerank_after"):
                print(f"  {name:<16}{p[name]['p50_ms']:>9.2f}{p[name]['p99_ms']:>9.2f}")
            print(f"  re-rank before/after p50: {p['rerank_speedup_p50']}x   max |logit difference| {p['max_abs_logit_difference']:.2e}")  # fmt: skip
            print(f"  head pass ms by dtype: {p['head_ms_by_dtype']}")
            for when, rows in p["profile"].items():
                print(f"  profile {when}: " + ", ".join(f"{r['op']} {r['ms_per_query']} ms ({r['share']:.0%})" for r in rows[:5]))  # fmt: skip
        result["servers"] = {}
        for workers in args.workers:
            proc, base = start_server(home, args, workers)
            try:
                srv = {"interleaved": interleaved(base, queries, args.pairs, args.k), "load_after_interleaved": load()}
                srv["throughput"] = throughput(base, queries, args, clip_vector(home, queries.clip_ids[0]))
            finally:
                stop_server(proc)
            result["servers"][str(workers)] = srv
            il = srv["interleaved"]
            print(f"\nvtr serve --workers {workers} --threads {args.threads} (load {load()}):")
            print(f"  HTTP p50 re-rank top {args.rerank_k}: {il['rerank']['p50_ms']} ms, without: {il['plain']['p50_ms']} ms,"
                  f" ratio {il['ratio_p50']} (goal <= 1.5); errors {il['errors']}")  # fmt: skip
            for name, row in srv["throughput"].items():
                if name == "batching":
                    print(f"  batching: {row}")
                    continue
                print(f"  {name:<14} QPS 1 client {row['1']['qps']:>7.1f}  8 clients {row['8']['qps']:>7.1f}  ratio {row['ratio']:.2f}"
                      f"  p50@8 {row['8']['p50_ms']} ms  errors {row['1']['errors'] + row['8']['errors']}")  # fmt: skip
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    result["machine"]["load_end"] = load()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nload average start {result['machine']['load_start']}, end {result['machine']['load_end']} "
          f"(2 cores shared with other jobs); results in {args.output}")  # fmt: skip


if __name__ == "__main__":
    main()
