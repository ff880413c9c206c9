"""CLIP's BPE tokenizer at ViCLIP's context length.

open_clip's ``SimpleTokenizer`` already truncates as the reference does (first ``context`` ids,
last one forced to end-of-text), so this only fixes the context length and bounds the work a
hostile multi-megabyte query can cause before truncation.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

MAX_CHARS = 4096  # far beyond 32 tokens; protects the BPE from pathological inputs


class Tokenizer:
    def __init__(self, context_length: int = 32):
        from open_clip.tokenizer import SimpleTokenizer

        self.context_length = context_length
        self._bpe = SimpleTokenizer(context_length=context_length)
        self.eot_token_id = self._bpe.eot_token_id

    def __call__(self, texts: str | Sequence[str]) -> Tensor:
        if isinstance(texts, str):
            texts = [texts]
        return self._bpe([t[:MAX_CHARS] for t in texts], context_length=self.context_length)

    def __repr__(self) -> str:
        return f"Tokenizer(context_length={self.context_length})"
