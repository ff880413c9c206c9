"""open_clip's text tower run over the tokens a batch uses, not its whole context.

Why: captions are short (the synthetic ones 8-14 tokens of a 32-token context; a CLIP query rarely
fills 77), yet the tower computes every position. CLIP's text transformer is causal and pools the
end-of-text position (the largest id, open_clip's ``argmax`` pool), so positions after the batch's
last end-of-text token change nothing that is read: dropping them gives the same embeddings and
the same token states up to there, for a fraction of the work (attention is quadratic in length).
Token states after each text's own end-of-text token come back as zeros, on every path (the
matching head masks those positions and reads none of them; zeros make the states independent of
which texts shared a batch, and a TorchScript trace of the full tower returns the same numbers).

Only where that reasoning holds: a causal mask, ``argmax`` pooling, no class token or padding mask
(CoCa-style towers), and not while TorchScript traces the tower (a trace would keep one length).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, text_global_pool
from torch import Tensor


def used_length(token_ids: Tensor) -> int:
    """Columns up to and including the last end-of-text token of the batch."""
    return int(token_ids.argmax(dim=1).max()) + 1 if token_ids.numel() else 0


def prefix_applies(text: TextTransformer, token_ids: Tensor) -> bool:
    return (
        text.attn_mask is not None
        and text.cls_emb is None
        and not getattr(text, "use_pad_mask", False)
        and text.pool_type == "argmax"
        and text.output_tokens
        and not (torch.jit.is_tracing() or torch.jit.is_scripting())
        and 0 < used_length(token_ids) < token_ids.shape[1]
    )


def zero_after_eot(tokens: Tensor, token_ids: Tensor) -> Tensor:
    """Token states [B,L,W] with each row's positions after its end-of-text token set to 0 (traceable)."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    keep = positions[None, :] <= token_ids.argmax(dim=1)[:, None]
    return tokens * keep[:, :, None].to(tokens.dtype)


def encode_text_prefix(text: TextTransformer, token_ids: Tensor) -> tuple[Tensor, Tensor]:
    """``text(token_ids)`` (pooled [B,D], token states [B,L,W]) computed on the used columns only."""
    if not prefix_applies(text, token_ids):
        pooled, tokens = text(token_ids)
        argmax_pooled = text.pool_type == "argmax" and text.cls_emb is None
        return pooled, zero_after_eot(tokens, token_ids) if argmax_pooled else tokens
    n = used_length(token_ids)
    ids = token_ids[:, :n]
    cast = text.transformer.get_cast_dtype()
    x = text.token_embedding(ids).to(cast) + text.positional_embedding[:n].to(cast)
    x = text.transformer(x, attn_mask=text.attn_mask[:n, :n])
    x = text.ln_final(x)
    pooled = text_global_pool(x, ids, pool_type="argmax")
    if isinstance(text.text_projection, torch.nn.Linear):
        pooled = text.text_projection(pooled)
    elif text.text_projection is not None:
        pooled = pooled @ text.text_projection
    return pooled, zero_after_eot(F.pad(x, (0, 0, 0, token_ids.shape[1] - n)), token_ids)
