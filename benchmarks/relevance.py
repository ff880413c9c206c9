"""How often search says no_good_match: everyday queries outside the library vs the library's own captions.

    python benchmarks/relevance.py --home demo-data/home [--home other/home ...]

Prints, per home: the share of 10 everyday queries (nothing in a synthetic library matches them)
answered ``no_good_match: true``, and the share of the caption corpus answered ``false``, at the
``min_match_probability`` setting (VTR_MIN_MATCH_PROBABILITY), with the model and whether it is calibrated.
"""

from __future__ import annotations

import argparse
import json

EVERYDAY = [
    "a dog running on the beach",
    "sunset",
    "person cooking",
    "a man riding a bicycle",
    "children playing football in a park",
    "a car driving through the city at night",
    "a cat sleeping on a sofa",
    "people dancing at a wedding",
    "waves crashing on rocks",
    "a woman talking on the phone",
]


def measure(home: str) -> dict:
    from retrieval.engine import SearchEngine

    eng = SearchEngine(home)
    try:
        ids = eng.catalog.all_text_ids()
        captions = sorted({t.text for t in eng.catalog.texts_by_ids(ids.tolist())})
        out_of_world = [eng.search_text(q, k=1)["no_good_match"] for q in EVERYDAY]
        own = [eng.search_text(c, k=1)["no_good_match"] for c in captions]
        return {
            "home": home,
            "model": eng.model_name,
            "ranking": eng.stats()["ranking"],
            "min_match_probability": eng.min_match_probability,
            "everyday_no_good_match": sum(x is True for x in out_of_world),
            "everyday_total": len(EVERYDAY),
            "captions_good_match": sum(x is False for x in own),
            "captions_total": len(captions),
            "captions_null": sum(x is None for x in own),
        }
    finally:
        eng.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", action="append", required=True)
    args = ap.parse_args()
    for home in args.home:
        r = measure(home)
        print(json.dumps(r))
        print(
            f"{home}: everyday queries flagged {r['everyday_no_good_match']}/{r['everyday_total']}; "
            f"own captions not flagged {r['captions_good_match']}/{r['captions_total']} "
            f"({100 * r['captions_good_match'] / max(1, r['captions_total']):.1f}%)"
        )


if __name__ == "__main__":
    main()
