"""An independent, functional port of the reference ViCLIP forward pass, used as a test oracle.

Written straight from the InternVideo DIV code's description (``viclip_vision.py`` /
``viclip_text.py``) over a state dict in the *release* layout, with plain torch ops, so that it
shares no code with ``retrieval``: if our model and this agree, the port is right.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _ln(x, sd, p):
    return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], eps=1e-5)


def _block(x, sd, p, heads, mask=None):
    # x: [L, B, W] as nn.MultiheadAttention (batch_first=False) in the reference
    h = _ln(x, sd, p + ".ln_1")
    W = x.shape[-1]
    a, _ = F.multi_head_attention_forward(
        h,
        h,
        h,
        W,
        heads,
        sd[p + ".attn.in_proj_weight"],
        sd[p + ".attn.in_proj_bias"],
        None,
        None,
        False,
        0.0,
        sd[p + ".attn.out_proj.weight"],
        sd[p + ".attn.out_proj.bias"],
        training=False,
        need_weights=False,
        attn_mask=mask,
    )
    x = x + a
    h = _ln(x, sd, p + ".ln_2")
    h = F.linear(h, sd[p + ".mlp.c_fc.weight"], sd[p + ".mlp.c_fc.bias"])
    h = h * torch.sigmoid(1.702 * h)  # QuickGELU
    return x + F.linear(h, sd[p + ".mlp.c_proj.weight"], sd[p + ".mlp.c_proj.bias"])


def _layers(sd, prefix):
    return sorted({int(k[len(prefix) :].split(".")[0]) for k in sd if k.startswith(prefix)})


def vision_forward(sd: dict, video: torch.Tensor, heads: int) -> torch.Tensor:
    """video: [B,T,C,H,W] -> [B,D]; sd in ViCLIP release layout (``vision_encoder.*``)."""
    v = {k.removeprefix("vision_encoder."): t for k, t in sd.items() if k.startswith("vision_encoder.")}
    x = video.permute(0, 2, 1, 3, 4)  # [B,C,T,H,W] as the reference module takes it
    w = v["conv1.weight"]
    x = F.conv3d(x, w, stride=(w.shape[2], w.shape[3], w.shape[4]))  # [B,W,T,gh,gw]
    B, W, T = x.shape[:3]
    x = x.permute(0, 2, 3, 4, 1).reshape(B * T, -1, W)  # [(B T), HW, W]
    cls = v["class_embedding"].expand(B * T, 1, W)
    x = torch.cat([cls, x], dim=1) + v["positional_embedding"]
    cls_tokens = x[:B, :1]
    x = x[:, 1:].reshape(B, T, -1, W).permute(0, 2, 1, 3)  # [B, n, T, W]
    tpe = v["temporal_positional_embedding"]
    if T == 1:
        x = x + tpe.mean(1)[:, None, None, :]  # the reference's image path
    else:
        x = x + tpe[:, None, :, :]  # patch tokens only; the class token gets none
    x = x.reshape(B, -1, W)  # (n t) order
    x = torch.cat([cls_tokens, x], dim=1)
    x = _ln(x, v, "ln_pre").permute(1, 0, 2)
    for i in _layers(v, "transformer.resblocks."):
        x = _block(x, v, f"transformer.resblocks.{i}", heads)
    x = _ln(x.permute(1, 0, 2), v, "ln_post")
    return x[:, 0] @ v["proj"]


def text_forward(sd: dict, ids: torch.Tensor, heads: int) -> torch.Tensor:
    """ids: [B,L] (L == context) -> [B,D]; sd in ViCLIP release layout (``text_encoder.*``)."""
    t = {k.removeprefix("text_encoder."): v for k, v in sd.items() if k.startswith("text_encoder.")}
    L = ids.shape[1]
    x = F.embedding(ids, t["token_embedding.weight"]) + t["positional_embedding"][:L]
    mask = torch.full((L, L), float("-inf")).triu_(1)
    x = x.permute(1, 0, 2)
    for i in _layers(t, "transformer.resblocks."):
        x = _block(x, t, f"transformer.resblocks.{i}", heads, mask)
    x = _ln(x.permute(1, 0, 2), t, "ln_final")
    return x[torch.arange(x.shape[0]), ids.argmax(-1)] @ t["text_projection"]
