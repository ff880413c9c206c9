"""Scene descriptions: what is in a clip, frame by frame, and the caption that describes it.

A :class:`Scene` stores per-frame trajectories (position, radius, angle, visibility) for each
object, so time-reversal is literally reversing those arrays; :meth:`Scene.reversed` also maps the
semantic attributes to their opposites ("left" -> "right", "A then B" -> "B then A"). That is the
property that makes the captions need the time axis.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from retrieval.synth import vocab as V

NUM_FRAMES = 16  # frames per event (2 s at 8 fps)


@dataclass
class Obj:
    colour: str
    shape: str
    x: np.ndarray  # [T] centre, fraction of width
    y: np.ndarray  # [T] centre, fraction of height
    r: np.ndarray  # [T] radius, fraction of width
    angle: np.ndarray  # [T] degrees, positive = clockwise on screen
    visible: np.ndarray  # [T] bool

    def reversed(self) -> Obj:
        return replace(self, **{k: getattr(self, k)[::-1].copy() for k in ("x", "y", "r", "angle", "visible")})


@dataclass
class Scene:
    kind: str  # "single" | "binding" | "order"
    attrs: dict  # semantic attributes (JSON-able); the caption is a function of these alone
    objects: list[Obj]
    background: str
    jitter: dict = field(default_factory=dict)  # small colour offsets, so colours are not pixel-exact constants

    @property
    def key(self) -> tuple:
        """Semantic identity: two clips with equal keys match the same captions."""
        return (self.kind, *sorted((k, str(v)) for k, v in self.attrs.items()))

    @property
    def subset(self) -> str:
        if self.kind == "single":
            return V.SUBSET_OF_MOTION[self.attrs["motion"]]
        return self.kind

    def reversed(self) -> Scene:
        attrs = dict(self.attrs)
        if self.kind == "single":
            attrs["motion"] = V.OPPOSITE[attrs["motion"]]
        elif self.kind == "order":
            attrs["a"], attrs["b"] = attrs["b"], attrs["a"]
        return Scene(self.kind, attrs, [o.reversed() for o in self.objects], self.background, dict(self.jitter))


# --------------------------------------------------------------------------- keys


def single_keys() -> list[dict]:
    keys = []
    for motion in V.MOTIONS:
        for shape in V.SHAPES:
            if motion in ("clockwise", "counterclockwise") and shape not in V.ROTATABLE:
                continue
            sizes = (None,) if motion in ("grow", "shrink") else V.SIZES
            for colour in V.COLOURS:
                for size in sizes:
                    for bg in V.BACKGROUNDS:
                        keys.append(
                            {"motion": motion, "colour": colour, "shape": shape, "size": size, "background": bg}
                        )
    return keys


def _objects() -> list[str]:
    return [f"{c} {s}" for c in V.COLOURS for s in V.SHAPES]


def pair_keys(kind: str) -> list[dict]:
    keys = []
    for a in _objects():
        for b in _objects():
            if a == b:
                continue
            for bg in V.BACKGROUNDS:
                if kind == "binding":
                    for rel in V.RELATIONS:
                        keys.append({"a": a, "b": b, "relation": rel, "background": bg})
                else:
                    keys.append({"a": a, "b": b, "background": bg})
    return keys


def is_held_out(kind: str, attrs: dict) -> bool:
    """Attribute combinations that never occur in training (each attribute alone does)."""
    if kind == "single":
        combo = f"{attrs['colour']}|{attrs['shape']}|{attrs['motion']}"
    else:
        combo = f"{kind}|{attrs['a']}|{attrs['b']}"
    return zlib.crc32(combo.encode()) % 8 == 0


# --------------------------------------------------------------------------- trajectories


def _const(v: float, t: int = NUM_FRAMES) -> np.ndarray:
    return np.full(t, float(v))


def _ramp(a: float, b: float, t: int = NUM_FRAMES) -> np.ndarray:
    return np.linspace(a, b, t)


def _jitter(rng: np.random.Generator, n: int) -> dict:
    return {"bg": rng.integers(-10, 11, 3).tolist(), "obj": [rng.integers(-14, 15, 3).tolist() for _ in range(n)]}


def build_single(attrs: dict, rng: np.random.Generator) -> Scene:
    m, T = attrs["motion"], NUM_FRAMES
    r0 = {"small": 0.12, "large": 0.19, None: 0.15}[attrs["size"]]
    lo, hi = r0 + 0.03, 1 - r0 - 0.03
    x, y = _const(rng.uniform(lo, hi)), _const(rng.uniform(lo, hi))
    r, angle, vis = _const(r0), _const(rng.uniform(0, 90)), np.ones(T, bool)
    if m in V.DIRECTIONS:
        d = rng.uniform(0.3, min(0.55, hi - lo))
        start = rng.uniform(lo + d, hi) if m in ("left", "up") else rng.uniform(lo, hi - d)
        end = start - d if m in ("left", "up") else start + d
        if m in ("left", "right"):
            x = _ramp(start, end)
        else:
            y = _ramp(start, end)
    elif m in ("grow", "shrink"):
        small, big = rng.uniform(0.06, 0.09), rng.uniform(0.22, 0.27)
        lo, hi = big + 0.02, 1 - big - 0.02
        x, y = _const(rng.uniform(lo, hi)), _const(rng.uniform(lo, hi))
        r = _ramp(small, big) if m == "grow" else _ramp(big, small)
    elif m in ("appear", "disappear"):
        cut = int(rng.integers(5, T - 4))  # visible from/until a frame well inside the clip
        idx = np.arange(T)
        vis = idx >= cut if m == "appear" else idx < T - cut
    elif m in ("clockwise", "counterclockwise"):
        a0, turn = rng.uniform(0, 90), rng.uniform(60, 85)
        angle = _ramp(a0, a0 + turn) if m == "clockwise" else _ramp(a0, a0 - turn)
    obj = Obj(attrs["colour"], attrs["shape"], x, y, r, angle, vis)
    return Scene("single", dict(attrs), [obj], attrs["background"], _jitter(rng, 1))


def _split_obj(name: str) -> tuple[str, str]:
    colour, shape = name.split(" ")
    return colour, shape


def build_binding(attrs: dict, rng: np.random.Generator) -> Scene:
    r0 = 0.15
    lo, hi = r0 + 0.03, 1 - r0 - 0.03
    gap = rng.uniform(2.3 * r0, hi - lo)
    first = rng.uniform(lo, hi - gap)  # along the relation axis: a at first, b at first + gap
    across = rng.uniform(lo + 0.05, hi - 0.05)
    offset = rng.uniform(-0.05, 0.05, 2)
    if attrs["relation"] == "left_of":
        pa, pb = (first, across + offset[0]), (first + gap, across + offset[1])
    else:
        pa, pb = (across + offset[0], first), (across + offset[1], first + gap)
    objs = []
    for name, (px, py) in ((attrs["a"], pa), (attrs["b"], pb)):
        c, s = _split_obj(name)
        objs.append(
            Obj(c, s, _const(px), _const(py), _const(r0), _const(rng.uniform(0, 90)), np.ones(NUM_FRAMES, bool))
        )
    return Scene("binding", dict(attrs), objs, attrs["background"], _jitter(rng, 2))


def build_order(attrs: dict, rng: np.random.Generator) -> Scene:
    r0, T = 0.17, NUM_FRAMES
    lo, hi = r0 + 0.03, 1 - r0 - 0.03
    half = np.arange(T) < T // 2
    objs = []
    for name, vis in ((attrs["a"], half), (attrs["b"], ~half)):
        c, s = _split_obj(name)
        pos = rng.uniform(lo, hi, 2)
        objs.append(Obj(c, s, _const(pos[0]), _const(pos[1]), _const(r0), _const(rng.uniform(0, 90)), vis))
    return Scene("order", dict(attrs), objs, attrs["background"], _jitter(rng, 2))


BUILDERS = {"single": build_single, "binding": build_binding, "order": build_order}


def build(kind: str, attrs: dict, rng: np.random.Generator) -> Scene:
    return BUILDERS[kind](attrs, rng)


# --------------------------------------------------------------------------- captions


def caption(scene: Scene, rng: np.random.Generator, canonical: bool = False) -> str:
    """One phrasing of the scene's meaning; ``canonical`` picks the first template of each list."""

    def pick(options):
        return options[0] if canonical else options[int(rng.integers(len(options)))]

    a = scene.attrs
    bg = pick(V.BG_PHRASES).format(b=a["background"])
    if scene.kind == "single":
        size = a["size"]
        n = V.noun(a["colour"], a["shape"], size)
        body = pick(V.MOTION_PHRASES[a["motion"]]).format(o=V.article(n), n=n)
    elif scene.kind == "binding":
        body = pick(V.RELATION_PHRASES[a["relation"]]).format(a=V.article(a["a"]), b=V.article(a["b"]))
    else:
        body = pick(V.ORDER_PHRASES).format(a=V.article(a["a"]), b=V.article(a["b"]))
    return f"{body} {bg}"
