"""Search at scale: build homes of 10k, 100k, 1M (10M with --big) clips through the project's own
write path, then measure build time, peak memory, disk, recall@20 and search p50, in one run.

    .venv/bin/python benchmarks/scale.py [--sizes 10000,100000,1000000] [--big] [--sets clustered,demo]
        [--dim 512] [--queries 300] [--workdir DIR] [--json benchmarks/results/scale.json]

Vector sets:
- ``clustered``: 512-d unit vectors shaped like real embeddings (``embedding_like``): a shared mean
  direction, Zipf-sized clusters, low-rank spread inside a cluster plus isotropic noise; queries are
  held-out points of the same distribution.
- ``demo``: 128-d video embeddings of the shipped demo model (``viclip-tiny-synth``) for the first
  ``--real`` clips of the decoded training-set frame cache (``data/synth-train/cache``; the
  model's own preprocessing of 8 of the 16 cached frames). Sizes above that are made by
  augmentation: copy ``i`` of real vector ``i mod R`` gets Gaussian noise whose norm is half the
  median distance between a real vector and its nearest real neighbour, then is re-normalised.
  Queries are the text embeddings of the 1,000-clip test split's captions (text->video search).

Each (set, size) runs in a child process (so its peak RSS is its own):
1. ``ClipSink`` (catalog + token store + FAISS, the code `vtr index` uses) commits the vectors as
   videos of 100 clips, 50 videos per transaction, then ``finish()`` picks the index type (``auto``),
   builds, measures recall and tunes ``nprobe`` (retrieval.index). Build time = all of that.
2. ``SearchEngine`` on the home: p50 of ``search_embedding`` (the engine's search without
   re-ranking: FAISS + catalog lookup + result views), of the FAISS search alone, and for ``demo``
   of ``search_text(rerank=False)`` (adds the text encoder).
3. recall@20 of the engine's results on the held-out queries against exact search (``faiss.knn``).
Ratios are p50 at each size over p50 at the smallest size, measured in the same run.
The token store holds a 1x8 placeholder token set per clip (re-ranking is not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_MODEL = "viclip-tiny-synth"
CLIPS_PER_VIDEO = 100
VIDEOS_PER_COMMIT = 50


# ------------------------------------------------------------------------------------------ data
def embedding_like(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors: mean direction + Zipf cluster sizes + low-rank and isotropic spread."""
    rng = np.random.default_rng(seed)
    nc = max(8, n // 200)
    mean = rng.standard_normal(d).astype(np.float32)
    mean /= np.linalg.norm(mean)
    centers = rng.standard_normal((nc, d)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    centers += 0.5 * mean  # embeddings share a direction: random pairs have cosine ~0.25, not 0
    p = 1.0 / np.arange(1, nc + 1) ** 0.8
    p /= p.sum()
    rank = 16
    basis = rng.standard_normal((nc % 97 + 1, rank, d)).astype(np.float32) / np.sqrt(d)
    out = np.empty((n, d), np.float32)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        lab = rng.choice(nc, e - s, p=p)
        coef = rng.standard_normal((e - s, rank)).astype(np.float32)
        low = np.empty((e - s, d), np.float32)
        for b in range(len(basis)):  # each cluster spreads along one of a few low-rank subspaces
            m = lab % len(basis) == b
            low[m] = coef[m] @ basis[b]
        iso = rng.standard_normal((e - s, d)).astype(np.float32) / np.sqrt(d)
        x = centers[lab] + 0.2 * low + 0.1 * iso
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def demo_real_vectors(workdir: Path, count: int) -> np.ndarray:
    """Video embeddings of the demo model for ``count`` cached training clips (cached in workdir)."""
    out = workdir / f"demo_real_{count}.npy"
    if out.exists():
        return np.load(out)
    import torch

    from retrieval import create_model_and_transforms

    caches = sorted((ROOT / "data" / "synth-train" / "cache").glob("frames_64x16_*.npy"))
    if not caches:
        raise SystemExit(
            "no frame cache: run `vtr train --prepare-only --config retrieval/train_configs/viclip-tiny-synth.json`"
        )
    frames = np.load(caches[0], mmap_mode="r")
    count = min(count, len(frames))
    model, pre, _ = create_model_and_transforms(DEMO_MODEL)
    model.eval()
    vecs = []
    with torch.no_grad():
        for s in range(0, count, 256):
            clip = np.asarray(frames[s : min(count, s + 256), 1::2])  # the middle frame of 8 equal segments
            vecs.append(model.encode_video(torch.stack([pre(f) for f in clip]), normalize=True).numpy())
            print(f"  demo vectors {s + len(clip)}/{count}", file=sys.stderr, flush=True)
    x = np.concatenate(vecs).astype(np.float32)
    np.save(out, x)
    return x


def augment(real: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """``n`` vectors: the real ones, then noisy copies (noise norm = half the median real 1-NN distance)."""
    import faiss

    if n <= len(real):
        return real[:n].copy(), 0.0
    sims, _ = faiss.knn(real, real, 2, faiss.METRIC_INNER_PRODUCT)
    nn_dist = float(np.median(np.sqrt(np.maximum(0.0, 2 - 2 * sims[:, 1]))))
    sigma = 0.5 * nn_dist / np.sqrt(real.shape[1])
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), np.float32)
    out[: len(real)] = real
    for s in range(len(real), n, 100_000):
        e = min(n, s + 100_000)
        x = real[np.arange(s, e) % len(real)] + sigma * rng.standard_normal((e - s, real.shape[1])).astype(np.float32)
        out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, 0.5 * nn_dist


def demo_queries(limit: int) -> list[str]:
    caps = ROOT / "data" / "synth-test-s11" / "captions.jsonl"  # the test split `make model` evaluates on
    if not caps.exists():
        raise SystemExit(f"{caps} missing: vtr synth data/synth-test-s11 --count 1000 --seed 11 --split test")
    texts = [json.loads(line)["caption"] for line in caps.read_text().splitlines() if line.strip()]
    return list(dict.fromkeys(texts))[:limit]


def vectors_for(kind: str, n: int, dim: int, workdir: Path, real: int) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """(vectors to index, query vectors or None (text queries), facts about how they were made)."""
    if kind == "clustered":
        x = embedding_like(n + 1000, dim, seed=0)
        return x[:n], x[n:], {"dim": dim, "queries": "1,000 held-out points of the same distribution"}
    r = demo_real_vectors(workdir, real)
    x, noise = augment(r, n)
    facts = {"dim": r.shape[1], "real": min(n, len(r)), "augmented": max(0, n - len(r)), "noise_norm": round(noise, 4)}
    return x, None, {**facts, "queries": "captions of the 1,000-clip test split (text->video)"}


def build_home(home_dir: Path, x: np.ndarray, model: str) -> dict:
    """Commit ``x`` as clips through ClipSink (catalog, token store, FAISS) and finish (auto index)."""
    from retrieval.catalog import Catalog, ClipSpan, VideoMeta
    from retrieval.clip_writer import ClipSink, PendingVideo
    from retrieval.home import DataHome
    from retrieval.token_store import StoreLayout

    home = DataHome(home_dir).ensure()
    catalog = Catalog(home.db_url())
    layout = StoreLayout(model, 1, 8, x.shape[1])
    t0 = time.perf_counter()
    sink = ClipSink(home, catalog, model_name=model, layout=layout, factory="auto", save_interval=1e9)
    spans = [ClipSpan(i, 4.0 * i, 4.0 * i + 4, 120 * i, 120 * i + 119) for i in range(CLIPS_PER_VIDEO)]
    tokens = np.zeros((CLIPS_PER_VIDEO, 1, 8), np.float16)
    batch = []
    for v, s in enumerate(range(0, len(x), CLIPS_PER_VIDEO)):
        vec = x[s : s + CLIPS_PER_VIDEO]
        meta = VideoMeta(root="/bench", path=f"/bench/v{v:07d}.mp4", size=1, mtime_ns=0, fingerprint=str(v),
                         duration=4.0 * len(vec), fps=30.0, model=model)  # fmt: skip
        batch.append(PendingVideo(meta, spans[: len(vec)], vec, tokens[: len(vec)], [None] * len(vec)))
        if len(batch) == VIDEOS_PER_COMMIT:
            sink.write(batch)
            batch = []
    if batch:
        sink.write(batch)
    t_write = time.perf_counter() - t0
    sink.finish()
    t_total = time.perf_counter() - t0
    index = sink.index
    out = {
        "write_s": round(t_write, 1),
        "index_build_s": round(t_total - t_write, 1),
        "build_s": round(t_total, 1),
        "factory": index.factory,
        "search": index.search_params(),
        "self_recall": index.recall,
        "index_bytes": home.clip_index_path.stat().st_size,
    }
    catalog.close()
    return out


def p50_ms(fn, items) -> float:
    times = []
    for it in items:
        t = time.perf_counter()
        fn(it)
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1000, 3)


def measure(home_dir: Path, x: np.ndarray, qv: np.ndarray | None, texts: list[str] | None, model: str) -> dict:
    import faiss

    from retrieval.engine import SearchEngine
    from retrieval.index import VectorIndex

    out = {}
    if texts is not None:
        import torch

        torch.set_num_threads(1)  # one query, one thread: steadier on a shared machine
        engine = SearchEngine(home_dir, model=model, reload_interval=1e9)
        engine.load()
        for t in texts[:5]:  # warm up: model, catalog, page cache (other texts: no cache hits below)
            engine.search_text(t + " warm", rerank=False)
        out["text_search_p50_ms"] = p50_ms(lambda t: engine.search_text(t, k=20, rerank=False), texts)
        qv = np.stack([np.asarray(engine.embed_text(t), np.float32) for t in texts])
    else:
        engine = SearchEngine(home_dir, model=model, checkpoint="random", reload_interval=1e9)
    for v in qv[:5]:
        engine.search_embedding(v, k=20)
    out["search_p50_ms"] = p50_ms(lambda v: engine.search_embedding(v, k=20), qv)
    res = [engine.search_embedding(v, k=20)["results"] for v in qv]
    got = [[r["clip_id"] if "clip_id" in r else r["id"] for r in rs] for rs in res]
    index = VectorIndex.load(engine.home.clip_index_path)
    out["ann_p50_ms"] = p50_ms(lambda v: index.search(v[None], 20), qv)
    ids = index.ids()  # clip ids in catalog order == vector order (committed in order)
    _, exact = faiss.knn(qv, x, 20, faiss.METRIC_INNER_PRODUCT)
    truth = ids[exact]
    out["recall_at_20"] = round(float(np.mean([len(set(g) & set(t)) / 20 for g, t in zip(got, truth, strict=True)])), 4)
    out["queries"] = len(qv)
    engine.close()
    return out


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run_one(kind: str, n: int, args) -> dict:
    """One (set, size): generate, build the home, measure; runs in its own process."""
    workdir = Path(args.workdir)
    home = workdir / f"home-{kind}-{n}"
    shutil.rmtree(home, ignore_errors=True)
    t0 = time.perf_counter()
    x, qv, facts = vectors_for(kind, n, args.dim, workdir, args.real)
    gen_s = time.perf_counter() - t0
    # a registered model of that width, so the engine can open the home (its weights are not used)
    model = DEMO_MODEL if kind == "demo" else {512: "viclip-B-16", 768: "viclip-L-14"}[x.shape[1]]
    texts = demo_queries(args.queries) if kind == "demo" else None
    if qv is not None:
        qv = qv[: args.queries]
    row = {"set": kind, "clips": n, **facts, "generate_s": round(gen_s, 1)}
    row.update(build_home(home, x, model))
    row["peak_rss_build_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    row["disk_bytes"] = du(home)
    row.update(measure(home, x, qv, texts, model))
    row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
    return row


def estimate_peak_gb(n: int, dim: int) -> dict:
    """Arithmetic for one build through ClipSink: source array, the exact index the sink fills while
    writing, the vectors gathered from the token store for the rebuild, and the IVF result (fp16
    codes, plus 4-bit PQ codes when ``auto`` picks fast-scan)."""
    from retrieval.index import choose_factory, ivf_nlist

    f32 = n * dim * 4
    pq = dim // 8 if "x4fs" in choose_factory(n, dim) else 0
    ivf = n * (2 * dim + pq + 8) + ivf_nlist(n) * dim * 4
    return {
        "source_gb": round(f32 / 1e9, 2),
        "flat_while_writing_gb": round(f32 / 1e9, 2),
        "gathered_for_rebuild_gb": round(f32 / 1e9, 2),
        "ivf_index_gb": round(ivf / 1e9, 2),
        "peak_gb": round((3 * f32 + ivf) / 1e9, 2),
        "serving_gb": round(ivf / 1e9, 2),
    }


def table(rows: list[dict]) -> str:
    head = ("set", "clips", "index", "nprobe", "build s", "idx build s", "peak RSS GB", "disk MB",
            "recall@20", "self recall", "search p50 ms", "x10k", "ANN p50 ms", "x10k", "text p50 ms", "x10k")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in (
            r["set"], f"{r['clips']:,}", r["factory"], r["search"].get("nprobe", "-"), r["build_s"], r["index_build_s"],
            r["peak_rss_gb"], round(r["disk_bytes"] / 1e6), r["recall_at_20"], (r["self_recall"] or {}).get("value", "-"),
            r["search_p50_ms"], r.get("search_ratio", "-"), r["ann_p50_ms"], r.get("ann_ratio", "-"),
            r.get("text_search_p50_ms", "-"), r.get("text_ratio", "-"))) + " |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument(
        "--big", action="store_true", help="also 10,000,000 clips (refused when the arithmetic says it cannot fit)"
    )
    ap.add_argument("--sets", default="clustered,demo")
    ap.add_argument("--dim", type=int, default=512, help="dimension of the clustered set")
    ap.add_argument("--real", type=int, default=4096, help="real demo-model vectors before augmentation")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep", action="store_true", help="keep the built homes")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    ap.add_argument("--one", nargs=2, metavar=("SET", "CLIPS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one[0], int(args.one[1]), args)), flush=True)
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="vtr-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")] + ([10_000_000] if args.big else [])
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9
    rows, skipped, failed = [], [], []
    for kind in args.sets.split(","):
        dim = args.dim if kind == "clustered" else 128
        for n in sizes:
            est = estimate_peak_gb(n, dim)
            if est["peak_gb"] > 0.8 * mem_gb:
                skipped.append({"set": kind, "clips": n, "dim": dim, "memory_gb": round(mem_gb, 1), **est})
                print(
                    f"{kind} {n:,}: skipped, estimated build peak {est['peak_gb']} GB > 80% of {mem_gb:.1f} GB",
                    flush=True,
                )
                continue
            cmd = [sys.executable, __file__, "--one", kind, str(n), "--dim", str(args.dim), "--real", str(args.real),
                   "--queries", str(args.queries), "--workdir", str(workdir)] + (["--keep"] if args.keep else [])  # fmt: skip
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not lines:  # keep going: the other sizes' figures still count
                failed.append({"set": kind, "clips": n, "error": (proc.stderr or proc.stdout)[-3000:]})
                print(f"{kind} {n:,}: failed\n{failed[-1]['error']}", flush=True)
                continue
            row = json.loads(lines[-1][7:])
            row["estimate"] = est
            rows.append(row)
            print(f"{kind} {n:,}: {row['factory']} build {row['build_s']} s, recall@20 {row['recall_at_20']}, "
                  f"search p50 {row['search_p50_ms']} ms ({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    for kind in {r["set"] for r in rows}:
        mine = [r for r in rows if r["set"] == kind]
        base = min(mine, key=lambda r: r["clips"])
        for r in mine:
            for key, name in (("search_p50_ms", "search_ratio"), ("ann_p50_ms", "ann_ratio"), ("text_search_p50_ms", "text_ratio")):  # fmt: skip
                if key in r and base.get(key):
                    r[name] = round(r[key] / base[key], 2)
    print(table(rows))
    for s in skipped:
        print(f"not built: {s}")
    report = {"machine": {"cpus": os.cpu_count(), "memory_gb": round(mem_gb, 1)}, "rows": rows, "skipped": skipped, "failed": failed,
              "estimate_10M_512d": estimate_peak_gb(10_000_000, 512), "estimate_10M_128d": estimate_peak_gb(10_000_000, 128)}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.json}")
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
