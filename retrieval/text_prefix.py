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
(CoCa-style towers run open_clip's forward unchanged). Under a TorchScript trace the tower runs on
the length it is given (a trace cannot keep a length computed from the data): the service's encoder
trims the ids before calling its trace and pads the states back (:mod:`retrieval.encoder`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer, text_global_pool
from torch import Tensor


def used_length(token_ids: Tensor) -> int:
    """Columns up to and including the last end-of-text token of the batch."""
    return int(token_ids.argmax(dim=1).max()) + 1 if token_ids.numel() else 0


def causal_argmax(text: TextTransformer) -> bool:
    """Whether the tower is CLIP's: causal, pooled at the end-of-text token, no class token or pad mask."""
    return (
        text.attn_mask is not None
        and text.cls_emb is None
        and not getattr(text, "use_pad_mask", False)
        and text.pool_type == "argmax"
        and text.output_tokens
    )


def text_forward(text: TextTransformer, token_ids: Tensor) -> tuple[Tensor, Tensor]:
    """open_clip's ``TextTransformer.forward`` for ids of any length up to its context (a causal tower).

    Position embeddings and the causal mask are cut to the input's length, read from its shape, so a
    TorchScript trace of this follows the length of each call. Token states after each text's
    end-of-text token are zeros.
    """
    n = token_ids.shape[1]
    cast = text.transformer.get_cast_dtype()
    x = text.token_embedding(token_ids).to(cast) + text.positional_embedding[:n].to(cast)
    x = text.transformer(x, attn_mask=text.attn_mask[:n, :n])
    x = text.ln_final(x)
    pooled = text_global_pool(x, token_ids, pool_type="argmax")
    if isinstance(text.text_projection, torch.nn.Linear):
        pooled = text.text_projection(pooled)
    elif text.text_projection is not None:
        pooled = pooled @ text.text_projection
    return pooled, zero_after_eot(x, token_ids)


def zero_after_eot(tokens: Tensor, token_ids: Tensor) -> Tensor:
    """Token states [B,L,W] with each row's positions after its end-of-text token set to 0 (traceable)."""
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    keep = positions[None, :] <= token_ids.argmax(dim=1)[:, None]
    return tokens * keep[:, :, None].to(tokens.dtype)


def trim(token_ids: Tensor) -> Tensor:
    """The used columns of a batch of ids (all of them when every column is used)."""
    n = used_length(token_ids)
    return token_ids[:, :n] if 0 < n < token_ids.shape[1] else token_ids


def pad_states(states: Tensor, length: int) -> Tensor:
    """Token states [B,n,W] padded with zeros to [B,length,W] (the context length callers store)."""
    return F.pad(states, (0, 0, 0, length - states.shape[1])) if states.shape[1] < length else states


def encode_text_prefix(text: TextTransformer, token_ids: Tensor) -> tuple[Tensor, Tensor]:
    """``text(token_ids)`` (pooled [B,D], token states [B,L,W]), computed on the used columns only."""
    if not causal_argmax(text):
        return text(token_ids)
    if torch.jit.is_tracing() or torch.jit.is_scripting():  # a trace keeps no data-dependent length
        return text_forward(text, token_ids)
    pooled, states = text_forward(text, trim(token_ids))
    return pooled, pad_states(states, token_ids.shape[1])
