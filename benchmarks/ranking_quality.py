"""Retrieval quality as a user of the service gets it: fresh splits, real `vtr index`, SearchEngine.

Prints (and stores as JSON) every figure issue 8 asks for, on splits generated with seeds the
model was neither trained nor tuned on:

* t2v / v2t R@1 on a ``--count`` clip test split, default ranking vs no re-ranking, by subset;
* the reversal probe: a library holding each time-dependent test clip *and* its exact time
  reversal; the share of temporal captions whose own clip ranks above its reversal;
* moments: long multi-event videos indexed in 2-second clips; the share of event captions whose
  top-1 clip overlaps the queried event.

    python benchmarks/ranking_quality.py --seed 11 --out runs/quality-seed11.json
    python benchmarks/ranking_quality.py --checkpoint runs/x.safetensors --count 300   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPORAL = ("direction", "order", "size_change", "visibility", "rotation")


def vtr(*args: str) -> None:
    cmd = [str(Path(sys.executable).with_name("vtr")), *args]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")


def index(home: Path, folder: Path, model_args: list[str], clip_seconds: float) -> None:
    vtr("index", str(folder), "--home", str(home), "--clip-seconds", str(clip_seconds), *model_args)


def engine_for(home: Path, model_args: list[str]):
    from retrieval.engine import SearchEngine

    ckpt = model_args[model_args.index("--checkpoint") + 1] if "--checkpoint" in model_args else None
    return SearchEngine(home, checkpoint=ckpt).load()


def write_reversals(split: Path, out: Path) -> list[dict]:
    """Time-reversed copies of the split's time-dependent clips (frames reversed, re-encoded alike)."""
    from retrieval.decode import probe, read_frames
    from retrieval.synth import read_captions
    from retrieval.synth.writer import write_mp4

    (out / "videos").mkdir(parents=True, exist_ok=True)
    pairs = []
    for r in read_captions(split):
        if r.get("subset") not in TEMPORAL:
            continue
        src = split / r["path"]
        frames = read_frames(src, list(range(probe(src).num_frames)))
        dst = out / "videos" / f"reversed_{src.name}"
        write_mp4(dst, frames[::-1].copy(), fps=int(r.get("fps", 8)))
        pairs.append({**r, "original": os.path.realpath(src), "reversed": os.path.realpath(dst)})
    return pairs


def reversal_probe(engine, pairs: list[dict], k: int) -> dict:
    wins, by_subset = [], {}
    for p in pairs:
        hits = engine.search_text(p["caption"], k=k)["results"]
        order = [os.path.realpath(h["video_path"]) for h in hits]
        rank = {path: i for i, path in reversed(list(enumerate(order)))}
        win = rank.get(p["original"], k + 1) < rank.get(p["reversed"], k + 2)
        wins.append(win)
        by_subset.setdefault(p["subset"], []).append(win)
    return {
        "queries": len(wins),
        "original_above_reversal_pct": round(100.0 * float(np.mean(wins)), 1) if wins else None,
        "by_subset": {s: round(100.0 * float(np.mean(v)), 1) for s, v in sorted(by_subset.items())},
    }


def moment_probe(engine, long_dir: Path) -> dict:
    from retrieval.synth import read_captions

    hits_right, n = 0, 0
    for r in read_captions(long_dir):
        real = os.path.realpath(long_dir / r["path"])
        for ev in r["events"]:
            res = engine.search_text(ev["caption"], k=1)["results"]
            n += 1
            if res and os.path.realpath(res[0]["video_path"]) == real:
                hits_right += res[0]["start"] < ev["end"] and res[0]["end"] > ev["start"]
    return {"event_queries": n, "top1_overlaps_event_pct": round(100.0 * hits_right / max(1, n), 1)}


def brief(results: dict) -> dict:
    return {
        d: {s: round(m["R@1"], 1) for s, m in by.items() if s in ("all", "direction", "order", "binding")}
        for d, by in results.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--seed", type=int, default=11, help="seed of the generated test splits (not 0: training, not 5: tuning)"
    )
    ap.add_argument("--count", type=int, default=1000, help="clips in the test split")
    ap.add_argument("--long-count", type=int, default=40, help="multi-event videos for the moment probe")
    ap.add_argument("--checkpoint", default=None, help="project .safetensors (default: the shipped model)")
    ap.add_argument("--k", type=int, default=100, help="hits fetched per query")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the generated data and homes here")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    args = ap.parse_args()

    from retrieval.engine_eval import evaluate_engine
    from retrieval.synth import generate

    work = args.workdir or Path(tempfile.mkdtemp(prefix="vtr-quality-"))
    model_args = ["--checkpoint", str(Path(args.checkpoint).resolve())] if args.checkpoint else []
    t0 = time.perf_counter()
    split, long_dir = work / "test", work / "long"
    if not (split / "captions.jsonl").is_file():
        generate(split, args.count, seed=args.seed, split="test")
    if not (long_dir / "captions.jsonl").is_file():
        generate(long_dir, args.long_count, seed=args.seed, long=True)
    report: dict = {"seed": args.seed, "count": args.count, "checkpoint": args.checkpoint or "shipped"}

    home = work / "home"
    index(home, split / "videos", model_args, clip_seconds=10.0)
    vtr("texts", "add", str(split / "captions.jsonl"), "--home", str(home), *model_args)
    engine = engine_for(home, model_args)
    report["default_ranking"] = engine.stats().get("ranking")
    for name, rerank in (("default", None), ("no_rerank", False)):
        report[name] = evaluate_engine(engine, split, k=args.k, rerank=rerank)["results"]
        print(f"{name:>10}: R@1 {json.dumps(brief(report[name]))}", flush=True)
    report["gain_r1"] = {
        d: {s: round(report["default"][d][s]["R@1"] - report["no_rerank"][d][s]["R@1"], 1)
            for s in ("all", "direction", "order", "binding") if s in report["default"][d]}
        for d in report["default"]
    }  # fmt: skip
    print(f"   gain R@1: {json.dumps(report['gain_r1'])}", flush=True)
    engine.close()

    rev_home = work / "home-reversal"
    pairs = write_reversals(split, work / "reversed")
    index(rev_home, split / "videos", model_args, clip_seconds=10.0)
    index(rev_home, work / "reversed" / "videos", model_args, clip_seconds=10.0)
    engine = engine_for(rev_home, model_args)
    report["reversal"] = reversal_probe(engine, pairs, args.k)
    print(f"  reversal: {json.dumps(report['reversal'])}", flush=True)
    engine.close()

    long_home = work / "home-long"
    index(long_home, long_dir / "videos", model_args, clip_seconds=2.0)
    engine = engine_for(long_home, model_args)
    report["moments"] = moment_probe(engine, long_dir)
    print(f"   moments: {json.dumps(report['moments'])}", flush=True)
    engine.close()

    report["wall_s"] = round(time.perf_counter() - t0, 1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"done in {report['wall_s']} s; work dir {work}")


if __name__ == "__main__":
    main()
