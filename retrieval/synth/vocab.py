"""The synthetic benchmark's vocabulary and caption templates.

Every caption is generated from a *semantic key* (a tuple of attributes); several phrasings map to
the same key, so the model must learn meaning rather than one sentence per concept. The temporal
concepts come in opposite pairs whose videos are exact time-reversals of each other, so no single
frame can tell them apart.
"""

from __future__ import annotations

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "green": (40, 190, 60),
    "blue": (45, 80, 235),
    "yellow": (240, 220, 40),
    "purple": (160, 50, 200),
    "cyan": (40, 215, 225),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (10, 10, 10),
    "gray": (120, 120, 120),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "cross")
ROTATABLE = ("square", "triangle", "cross")  # a circle looks the same at every angle
SIZES = ("small", "large")

# single-object motions; OPPOSITE maps each to its time-reversal
DIRECTIONS = ("left", "right", "up", "down")
MOTIONS = DIRECTIONS + ("grow", "shrink", "appear", "disappear", "clockwise", "counterclockwise", "still")
OPPOSITE = {
    "left": "right", "right": "left", "up": "down", "down": "up",
    "grow": "shrink", "shrink": "grow", "appear": "disappear", "disappear": "appear",
    "clockwise": "counterclockwise", "counterclockwise": "clockwise", "still": "still",
}  # fmt: skip
RELATIONS = ("left_of", "above")  # canonical two-object relations ("right of"/"below" are phrasings)

# subset of each kind of clip, used for per-subset evaluation
SUBSET_OF_MOTION = {
    **{d: "direction" for d in DIRECTIONS},
    "grow": "size_change", "shrink": "size_change",
    "appear": "visibility", "disappear": "visibility",
    "clockwise": "rotation", "counterclockwise": "rotation",
    "still": "static",
}  # fmt: skip

MOTION_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("{o} moves left", "{o} moving to the left", "{o} slides leftward", "{o} travels to the left"),
    "right": ("{o} moves right", "{o} moving to the right", "{o} slides rightward", "{o} travels to the right"),
    "up": ("{o} moves up", "{o} moving upward", "{o} rises", "{o} travels upward"),
    "down": ("{o} moves down", "{o} moving downward", "{o} falls", "{o} travels downward"),
    "grow": ("{o} grows", "{o} getting bigger", "{o} expands", "{o} grows larger"),
    "shrink": ("{o} shrinks", "{o} getting smaller", "{o} contracts", "{o} shrinks away"),
    "appear": ("{o} appears", "{o} pops into view", "{o} shows up", "{o} suddenly appears"),
    "disappear": ("{o} disappears", "{o} vanishes", "{o} goes out of view", "{o} suddenly disappears"),
    "clockwise": ("{o} rotates clockwise", "{o} spinning clockwise", "{o} turns clockwise"),
    "counterclockwise": (
        "{o} rotates counterclockwise",
        "{o} spinning anticlockwise",
        "{o} turns counterclockwise",
    ),
    "still": ("{o} stays still", "{o} standing still", "a still {n}", "{o} does not move"),
}
BG_PHRASES = ("on a {b} background", "against a {b} background", "over a {b} backdrop")
RELATION_PHRASES: dict[str, tuple[str, ...]] = {
    # {a} is the left/top object, {b} the right/bottom one
    "left_of": ("{a} to the left of {b}", "{a} left of {b}", "{b} to the right of {a}", "{b} right of {a}"),
    "above": ("{a} above {b}", "{a} over {b}", "{b} below {a}", "{b} under {a}"),
}
ORDER_PHRASES = (
    "first {a}, then {b}",
    "{a} appears first, then {b}",
    "{a} is shown, followed by {b}",
    "{a} and afterwards {b}",
)


def noun(colour: str, shape: str, size: str | None = None) -> str:
    return " ".join(w for w in (size, colour, shape) if w)


def article(words: str) -> str:
    return f"a {words}"
