"""Generate a split of the synthetic benchmark: MP4 files plus ``captions.jsonl``.

Each clip is drawn from its own RNG seeded by ``(seed, split, index)``, so a split is identical for
a seed whatever else was generated, and clip ``i`` does not depend on ``count``.

* ``test``/``val``: semantic keys sampled *without replacement* (unique meanings, so each caption has
  exactly one correct clip), covering attribute combinations held out of training.
* ``train``: clips come in groups of two "twins" that differ only in what the model tends to miss
  (the time-reversed clip with the opposite caption, or the two objects' colours swapped); the
  trainer keeps groups together in a batch, so every batch contains its own hard negatives.
* ``long``: multi-event videos (several single-object events in sequence) with event times, for
  moment retrieval.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from retrieval.errors import InvalidInput
from retrieval.synth import scenes as S
from retrieval.synth import vocab as V
from retrieval.synth.render import render
from retrieval.synth.writer import write_mp4

log = logging.getLogger(__name__)

SPLITS = {"train": 1, "val": 2, "test": 3}
FPS = 8
FRAME_SIZE = 96
KIND_SHARE = {"single": 0.45, "binding": 0.275, "order": 0.275}
TRAIN_KIND_P = {"single": 0.5, "binding": 0.25, "order": 0.25}
CAPTIONS = "captions.jsonl"
MANIFEST = "synth.json"  # how the directory was generated, so a report can name the command that regenerates it


def _all_keys() -> dict[str, list[dict]]:
    return {"single": S.single_keys(), "binding": S.pair_keys("binding"), "order": S.pair_keys("order")}


def _eval_specs(count: int, seed: int, split: str) -> list[tuple[str, dict]]:
    keys = _all_keys()
    total = sum(len(v) for v in keys.values())
    if count > total:
        raise InvalidInput(f"a {split} split has unique captions; at most {total} clips, asked for {count}")
    rng = np.random.default_rng([seed, SPLITS[split], 0])
    quota = {k: int(round(count * s)) for k, s in KIND_SHARE.items()}
    quota["single"] += count - sum(quota.values())
    specs: list[tuple[str, dict]] = []
    spill = 0
    for kind in ("binding", "order", "single"):
        want = quota[kind] + spill
        take = min(want, len(keys[kind]))
        spill = want - take
        order = rng.permutation(len(keys[kind]))[:take]
        specs += [(kind, keys[kind][i]) for i in order]
    perm = rng.permutation(len(specs))
    return [specs[i] for i in perm]


def _train_keys() -> dict[str, list[dict]]:
    return {k: [a for a in v if not S.is_held_out(k, a)] for k, v in _all_keys().items()}


def _twin(scene: S.Scene, keys: dict[str, list[dict]], rng: np.random.Generator) -> S.Scene:
    """The hard negative of ``scene``: same pixels reversed in time, or the colours swapped."""
    kind, a = scene.kind, scene.attrs
    if kind in ("single", "order") and not (kind == "single" and a["motion"] == "still"):
        twin = scene.reversed()
        if not S.is_held_out(kind, twin.attrs):
            return twin
    if kind == "binding":
        (ca, sa), (cb, sb) = (x.split(" ") for x in (a["a"], a["b"]))
        if ca != cb:
            attrs = {**a, "a": f"{cb} {sa}", "b": f"{ca} {sb}"}
            if not S.is_held_out(kind, attrs):
                objs = [replace(scene.objects[0], colour=cb), replace(scene.objects[1], colour=ca)]
                return S.Scene(kind, attrs, objs, scene.background, dict(scene.jitter))
    if kind == "single":  # same motion, another colour: binds colour to the object
        options = [k for k in keys["single"] if k["motion"] == a["motion"] and k["shape"] == a["shape"]
                   and k["colour"] != a["colour"] and k["size"] == a["size"] and k["background"] == a["background"]]  # fmt: skip
        if options:
            return S.build("single", options[int(rng.integers(len(options)))], rng)
    kind2 = kind
    return S.build(kind2, keys[kind2][int(rng.integers(len(keys[kind2])))], rng)


def _train_scenes(count: int, seed: int) -> Iterator[tuple[int, S.Scene, np.random.Generator]]:
    keys = _train_keys()
    kinds = list(TRAIN_KIND_P)
    p = np.array([TRAIN_KIND_P[k] for k in kinds])
    for g in range((count + 1) // 2):
        rng = np.random.default_rng([seed, SPLITS["train"], g + 1])
        kind = kinds[int(rng.choice(len(kinds), p=p))]
        scene = S.build(kind, keys[kind][int(rng.integers(len(keys[kind])))], rng)
        yield g, scene, rng
        if 2 * g + 1 < count:
            yield g, _twin(scene, keys, rng), rng


def _scene_record(scene: S.Scene, caption: str) -> dict:
    return {
        "caption": caption,
        "kind": scene.kind,
        "subset": scene.subset,
        "key": "|".join(f"{k}={v}" for k, v in sorted(scene.attrs.items())) + f"|kind={scene.kind}",
        "attributes": scene.attrs,
        "held_out": S.is_held_out(scene.kind, scene.attrs),
    }


def _without_background(caption: str, bg: str) -> str:
    """``caption`` without its trailing background phrase ("... moves up against a gray background")."""
    for phrase in V.BG_PHRASES:
        suffix = " " + phrase.format(b=bg)
        if caption.endswith(suffix):
            return caption[: -len(suffix)]
    return caption


def _long_video(seed: int, index: int) -> tuple[np.ndarray, dict]:
    rng = np.random.default_rng([seed, 4, index])
    keys = S.single_keys()
    bg = list(V.BACKGROUNDS)[int(rng.integers(len(V.BACKGROUNDS)))]
    events, frames, captions = [], [], []
    n = int(rng.integers(3, 7))
    for e in range(n):
        options = [k for k in keys if k["background"] == bg]
        scene = S.build("single", options[int(rng.integers(len(options)))], rng)
        cap = S.caption(scene, rng)
        start = e * S.NUM_FRAMES / FPS
        events.append({**_scene_record(scene, cap), "start": start, "end": start + S.NUM_FRAMES / FPS})
        frames.append(render(scene, FRAME_SIZE))
        captions.append(_without_background(cap, bg) if e else cap)  # the background is named once
    record = {"caption": ", then ".join(captions), "kind": "long", "subset": "long", "events": events}
    return np.concatenate(frames), record


def generate(
    out_dir: str | os.PathLike,
    count: int,
    seed: int = 0,
    split: str = "train",
    long: bool = False,
    progress: bool = False,
) -> Path:
    """Write ``count`` clips under ``out_dir/videos/`` and their records to ``out_dir/captions.jsonl``.

    Returns the path of ``captions.jsonl`` (written last, atomically: it exists only when every video does).
    """
    if split not in SPLITS:
        raise InvalidInput(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if count < 1:
        raise InvalidInput("count must be at least 1")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    records = []
    if long:
        items = ((i, *_long_video(seed, i)) for i in range(count))
    elif split == "train":
        items = ((i, g, s, rng) for i, (g, s, rng) in enumerate(_train_scenes(count, seed)))
    else:
        items = ((i, kind, attrs) for i, (kind, attrs) in enumerate(_eval_specs(count, seed, split)))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, total=count, unit="clip", desc=f"synth {split}")
    for item in items:
        i = item[0]
        name = f"videos/{'long' if long else split}_{i:06d}.mp4"
        if long:
            frames, rec = item[1], item[2]
        elif split == "train":
            _, g, scene, rng = item
            frames, rec = render(scene, FRAME_SIZE), {**_scene_record(scene, S.caption(scene, rng)), "group": g}
        else:
            _, kind, attrs = item
            rng = np.random.default_rng([seed, SPLITS[split], i + 1])
            scene = S.build(kind, attrs, rng)
            frames, rec = render(scene, FRAME_SIZE), _scene_record(scene, S.caption(scene, rng))
        write_mp4(out / name, frames, fps=FPS)
        records.append({"path": name, "split": split, **rec, "num_frames": int(len(frames)), "fps": FPS})
    tmp = out / f".{CAPTIONS}.tmp"
    with open(tmp, "w") as fh:
        for rec in records:
            fh.write(json.dumps(rec) + "\n")
    os.replace(tmp, out / CAPTIONS)
    manifest = {"count": count, "seed": seed, "split": split, "long": long, "frame_size": FRAME_SIZE, "fps": FPS}
    (out / MANIFEST).write_text(json.dumps(manifest) + "\n")
    log.info("wrote %d %s clips to %s", len(records), split, out)
    return out / CAPTIONS


def read_captions(data_dir: str | os.PathLike) -> list[dict]:
    """Records of a generated split; a clear error when the directory is not one."""
    path = Path(data_dir) / CAPTIONS
    if not path.is_file():
        raise InvalidInput(f"{data_dir}: no {CAPTIONS} (generate a split with `vtr synth`)")
    records = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInput(f"{path}:{n}: not JSON ({exc.msg})") from exc
            if not isinstance(rec, dict) or "path" not in rec or "caption" not in rec:
                raise InvalidInput(f"{path}:{n}: a record needs 'path' and 'caption'")
            records.append(rec)
    if not records:
        raise InvalidInput(f"{path}: no records")
    return records
