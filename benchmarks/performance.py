"""Every serving and indexing ratio of the performance goals, from one run, with each goal beside it.

    .venv/bin/python benchmarks/performance.py [--rounds 3] [--workers 2] [--output FILE]

Runs, one after the other on this machine, ``benchmarks/query_latency.py`` (re-ranking against plain
search on one server, interleaved; QPS of every search route at 1 and 8 clients, per number of server
processes) and ``benchmarks/index_vs_ffmpeg.py`` (``vtr index`` against ``ffmpeg -i FILE -f null -``
on 6 minutes of 720p30 H.264, interleaved rounds), then prints one table of ratios and goals and
writes ``benchmarks/results/performance.json`` (the two scripts' own JSON files are written too).
Why one script: the goals are ratios measured in one run, and this shared 2-core machine drifts
between runs; comparing figures from different runs would mix machine states.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run(script: str, *args: str) -> dict:
    out = RESULTS / f"{Path(script).stem}.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *args, "--output", str(out)]
    print("$ " + " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def rows(latency: dict, indexing: dict) -> list[tuple[str, float, str, bool]]:
    """(what, measured ratio, goal, met) for every goal."""
    out = []
    for workers, srv in latency["servers"].items():
        inter = srv.get("interleaved")
        if inter:
            r = inter["ratio_p50"]
            out.append((f"HTTP p50 re-rank top-64 / plain ({workers} worker(s))", r, "<= 1.5", r <= 1.5))
        for route, t in srv.get("throughput", {}).items():
            if not isinstance(t, dict) or "ratio" not in t:
                continue
            errors = t["1"]["errors"] + t["8"]["errors"]
            goal, need = ("1.8", 1.8) if route == "search_rerank" else ("1.0", 1.0)
            met = t["ratio"] >= need and errors == 0
            out.append((f"QPS 8 / 1 clients, {route} ({workers} worker(s), {errors} errors)", t["ratio"], f">= {goal}, 0 errors", met))  # fmt: skip
    for name, r in indexing["ratio_ffmpeg_over_index"].items():
        goal = ">= 1.5" if "tolerance" in name else "(exact frames: no goal)"
        out.append((f"ffmpeg full decode / {name}", r, goal, r >= 1.5 if "tolerance" in name else True))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the indexing comparison")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="server processes to measure")
    ap.add_argument("--output", type=Path, default=RESULTS / "performance.json")
    args = ap.parse_args()
    from index_vs_ffmpeg import machine  # this folder is on sys.path when a script here runs

    t0, load0 = time.time(), os.getloadavg()
    latency = run("query_latency.py", "--workers", *map(str, args.workers))
    indexing = run("index_vs_ffmpeg.py", "--rounds", str(args.rounds))
    table = rows(latency, indexing)
    print(f"\n{'measured in one run':<78}{'ratio':>7}  goal")
    for what, r, goal, met in table:
        print(f"{what:<78}{r:>7.2f}  {goal}  {'met' if met else 'MISSED'}")
    result = {
        "machine": machine(load0),
        "seconds": round(time.time() - t0, 1),
        "ratios": [{"what": w, "ratio": r, "goal": g, "met": m} for w, r, g, m in table],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"results in {args.output}")


if __name__ == "__main__":
    main()
