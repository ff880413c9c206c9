"""One check shared by every place that takes text from outside: can it be written as UTF-8?"""

from __future__ import annotations


def is_utf8_encodable(text: str) -> bool:
    """False for strings holding lone surrogates.

    Why: Python strings can hold half a UTF-16 pair, from a JSON escape (``"\\ud800"``) or from a
    file name that is not UTF-8 (``os`` decodes it with surrogateescape). The catalog and the
    tokenizer store UTF-8 and fail on such text deep inside, so callers refuse it at the edge.
    """
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
