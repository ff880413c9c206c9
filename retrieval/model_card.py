"""What a model understands, for users: a short card per model family (no torch, no weights read).

Why: the demo model was trained on a procedural world of coloured shapes; "a dog on the beach" is
outside it, and a user should see that on the home page rather than infer it from bad results.
A card names the world, its vocabulary and a few phrasings; models trained on open data (ViCLIP
releases) have no card, since their world is "everyday video".
"""

from __future__ import annotations


def _synth_card() -> dict:
    from retrieval.synth import vocab

    return {
        "world": "synthetic scenes: one or two coloured shapes moving on a plain background",
        "vocabulary": {
            "colours": list(vocab.COLOURS),
            "shapes": list(vocab.SHAPES),
            "sizes": list(vocab.SIZES),
            "backgrounds": list(vocab.BACKGROUNDS),
            "motions": [
                "moves left / right / up / down",
                "grows / shrinks",
                "appears / disappears",
                "rotates clockwise / counterclockwise",
                "stays still",
            ],
            "relations": ["to the left of / right of", "above / below"],
            "order": ["first A, then B"],
        },
        "note": "Everyday scenes (people, animals, places) are outside what this model has seen: "
        "such queries get low match probabilities.",
    }


def model_card(name: str | None) -> dict | None:
    """The card of model ``name``, or None when it has none (an open-domain model)."""
    if name and name.startswith("viclip-tiny-synth"):
        return {"model": name, **_synth_card()}
    return None
