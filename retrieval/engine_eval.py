"""Retrieval quality measured through :class:`SearchEngine` on an indexed home: the figures users get.

``retrieval.evaluation`` scores a split with the model directly (every pair, every ranking), which
is right for comparing models. A search service answers differently: FAISS returns candidates,
filters and paging apply, the default ranking (fused or head-only) is whatever the engine serves.
This module sends each caption (and each video) of a split through the engine's public search
calls and reads the rank of the first correct answer off the hits, so the report is what a user
of the service would have measured.

Ranks past the ``k`` hits fetched count as ``k + 1``: R@1/5/10 are exact for k >= 10, MdR and MnR
are lower bounds when some answers fall outside the fetched hits.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.evaluation import SUBSET_GROUPS
from retrieval.metrics import summarize


def _same_meaning(records: list[dict]) -> dict[str, set[str]]:
    """caption -> real paths of every video whose record has the caption's key (all correct answers)."""
    by_key: dict[str, set[str]] = {}
    for r in records:
        by_key.setdefault(r.get("key") or r["caption"], set()).add(r["_real"])
    return {r["caption"]: by_key[r.get("key") or r["caption"]] for r in records}


def _by_subset(ranks: np.ndarray, subsets: list[str]) -> dict[str, dict]:
    arr = np.array(subsets)
    out = {"all": summarize(ranks)}
    for s in sorted(set(arr) - {""}):
        out[s] = summarize(ranks[arr == s])
    for name, members in SUBSET_GROUPS.items():
        rows = np.isin(arr, members)
        if rows.any():
            out[name] = summarize(ranks[rows])
    return out


def _rank_of(hits: list[dict], is_right: Callable[[dict], bool], k: int) -> int:
    for i, h in enumerate(hits):
        if is_right(h):
            return i + 1
    return k + 1


def evaluate_engine(
    engine,
    data_dir: str | os.PathLike,
    *,
    k: int = 100,
    rerank: bool | None = None,
    directions: tuple[str, ...] = ("t2v", "v2t"),
    limit: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """R@K by subset for a captioned split whose videos are indexed in ``engine``'s home.

    ``v2t`` needs the split's captions in the home's caption corpus (``vtr texts add``); it is
    skipped with a note when the corpus is empty. ``rerank=None`` is the engine's default.
    """
    from retrieval.synth import read_captions

    data_dir = Path(data_dir)
    records = [dict(r, _real=os.path.realpath(data_dir / r["path"])) for r in read_captions(data_dir)[:limit]]
    right = _same_meaning(records)
    report: dict[str, Any] = {"k": k, "rerank": rerank, "results": {}, "notes": []}
    iterate = _progress if progress else (lambda items, _desc: items)
    if "t2v" in directions:
        ranks = []
        for r in iterate(records, "t2v queries"):
            hits = engine.search_text(r["caption"], k=k, rerank=rerank)["results"]
            answers = right[r["caption"]]
            ranks.append(_rank_of(hits, lambda h, a=answers: os.path.realpath(h["video_path"]) in a, k))
        report["results"]["t2v"] = _by_subset(np.array(ranks), [r.get("subset", "") for r in records])
    if "v2t" in directions:
        if not engine.stats().get("texts"):
            report["notes"].append("v2t skipped: the caption corpus is empty (add the split's captions first)")
        else:
            videos: dict[str, dict] = {}
            for r in records:
                videos.setdefault(r["_real"], r)
            captions_of: dict[str, set[str]] = {}
            for cap, paths in right.items():
                for p in paths:
                    captions_of.setdefault(p, set()).add(cap)
            ranks = []
            for real in iterate(list(videos), "v2t queries"):
                hits = engine.search_video(path=real, target="texts", k=k, rerank=rerank)["results"]
                want = captions_of[real]
                ranks.append(_rank_of(hits, lambda h, w=want: h.get("text") in w, k))
            report["results"]["v2t"] = _by_subset(np.array(ranks), [r.get("subset", "") for r in videos.values()])
    return report


def _progress(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="query")
