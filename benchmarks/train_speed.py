"""Training throughput of the demo model's recipes, measured side by side in one run.

Compares the v1 recipe (32 px frames, 8 px patches, batch 128, order-blind head) with the current
one (64 px / 16 px patches, batch 96 plus frame-shuffled negatives, frame-ordered head), each at 1
and 2 torch threads, on a small generated training split. Prints steps/s, clips/s and the ratio
against v1 at one thread.

    python benchmarks/train_speed.py --steps 8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {
    "v1 (32px/8, batch 128)": (
        {"vision": {"image_size": 32, "patch_size": 8}, "match_head": {"frame_positions": 0}},
        {"batch_size": 128, "twin_negatives": False},
    ),
    "v2 (64px/16, batch 96+12)": (
        {"vision": {"image_size": 64, "patch_size": 16}, "match_head": {"frame_positions": 9}},
        {"batch_size": 96, "shuffled_negatives": 12, "rephrase": True, "logit_scale_lr": 0.01},
    ),
}


def _model_config(tmp: Path, name: str, patch: dict) -> str:
    from retrieval.factory import CONFIG_DIR

    spec = json.loads((CONFIG_DIR / "viclip-tiny-synth.json").read_text())
    spec.pop("default_pretrained", None)
    for section, values in patch.items():
        spec[section] = {**spec[section], **values}
    (tmp / f"{name}.json").write_text(json.dumps(spec))
    return name


def _steps_per_s(cfg, steps: int) -> tuple[float, float]:
    import torch

    from retrieval.factory import create_model_and_transforms
    from retrieval.training.data import ClipBatches
    from retrieval.training.trainer import _batch_loss, make_optimizer, prepare

    torch.set_num_threads(cfg.num_threads)
    records, frames = prepare(cfg, progress=False)
    model, _, tokenizer = create_model_and_transforms(cfg.model, pretrained="random")
    batches = ClipBatches(records, frames, cfg.batch_size, model.num_frames, 0, rephrase=cfg.rephrase)
    opt = make_optimizer(model, cfg)
    model.train()
    t0 = None
    for step in range(steps + 1):
        if step == 1:
            t0 = time.perf_counter()  # the first step pays for allocation and warm-up
        loss, _ = _batch_loss(model, batches.batch(step), tokenizer, cfg, step, torch.device("cpu"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    return steps / dt, steps * cfg.batch_size / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--clips", type=int, default=512, help="size of the generated training split")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from retrieval.synth import generate
    from retrieval.training import TrainCfg

    tmp = Path(tempfile.mkdtemp(prefix="vtr-train-speed-"))
    os.environ["VTR_MODEL_CONFIGS"] = str(tmp)
    data = tmp / "data"
    generate(data, args.clips, seed=99, split="train")
    rows = []
    for i, (label, (model_patch, train_patch)) in enumerate(RECIPES.items()):
        name = _model_config(tmp, f"speed-{i}", model_patch)
        for threads in (int(t) for t in args.threads.split(",")):
            cfg = TrainCfg.from_dict({"model": name, "data": str(data), "synth": None, "output": str(tmp / "x.safetensors"),
                                      "steps": args.steps, "num_threads": threads, **train_patch})  # fmt: skip
            sps, cps = _steps_per_s(cfg, args.steps)
            rows.append(
                {"recipe": label, "threads": threads, "steps_per_s": round(sps, 3), "clips_per_s": round(cps, 1)}
            )
            print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["clips_per_s"]
    for r in rows:
        r["clips_per_s_vs_v1_1thread"] = round(r["clips_per_s"] / base, 2)
    print("\n| recipe | threads | steps/s | clips/s | clips/s vs v1 1-thread |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['recipe']} | {r['threads']} | {r['steps_per_s']} | {r['clips_per_s']} | {r['clips_per_s_vs_v1_1thread']} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
