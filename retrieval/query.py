"""What a search request may ask for: targets, page limits, filters, and the checks on them.

Why a module of its own: the engine, the JSON API and the clip-retrieval routes all accept the same
``k``/``target``/filters; the limits are declared once here so the edges cannot drift from the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from retrieval.errors import InvalidInput

TARGETS = ("clips", "texts")  # what a video query can rank: indexed clips or the caption corpus
MAX_K = 1000  # most results one request may ask for (k, num_images, num_result_ids)
MAX_OFFSET = 10_000  # deepest page a request may ask for
MAX_MOMENTS = 20  # other moments listed per video with group_by_video
MAX_CANDIDATES = 20_000  # most clips one query ranks (deep pages of grouped results stop there)


@dataclass(frozen=True)
class SearchFilters:
    """Restrict clip results to some videos. ``library`` is a library id or its root path."""

    library: str | None = None
    path_prefix: str | None = None
    min_duration: float | None = None
    max_duration: float | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.library, self.path_prefix, self.min_duration, self.max_duration))


def check_target(target: Any) -> str:
    """``target`` if it is one of :data:`TARGETS`, else :class:`InvalidInput` listing them."""
    if target not in TARGETS:
        shown = target[:40] if isinstance(target, str) else target
        raise InvalidInput(f"target must be one of {', '.join(TARGETS)}, not {shown!r}")
    return target


def clean_query(text: Any) -> str:
    """A text query with its whitespace collapsed; empty or non-string queries are refused."""
    if not isinstance(text, str):
        raise InvalidInput("the query must be a string")
    text = " ".join(text.split())
    if not text:
        raise InvalidInput("the query is empty")
    return text


def check_page(k: Any, offset: Any) -> tuple[int, int]:
    """``(k, offset)`` as integers within the limits, else :class:`InvalidInput`."""
    try:
        k, offset = int(k), int(offset)
    except (TypeError, ValueError):
        raise InvalidInput("k and offset must be integers") from None
    if not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be between 1 and {MAX_K}")
    if offset < 0:
        raise InvalidInput("offset must not be negative")
    return k, offset
