"""The dual encoder against open_clip and against an independent port of the ViCLIP reference."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from retrieval import create_model, get_model_config
from retrieval.checkpoints import to_viclip
from retrieval.errors import InvalidInput
from tests import reference_viclip as ref


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def open_clip_twin(model, context_length: int | None = None) -> CLIP:
    """An open_clip CLIP with the same sizes, holding our weights (minus the temporal embedding)."""
    cfg = model.config
    v, t = cfg.vision, cfg.text
    clip = CLIP(
        cfg.embed_dim,
        CLIPVisionCfg(
            layers=v.layers,
            width=v.width,
            head_width=v.width // v.heads,
            mlp_ratio=v.mlp_ratio,
            patch_size=v.patch_size,
            image_size=v.image_size,
        ),
        CLIPTextCfg(
            context_length=context_length or t.context_length,
            vocab_size=t.vocab_size,
            width=t.width,
            heads=t.heads,
            layers=t.layers,
            mlp_ratio=t.mlp_ratio,
        ),
        quick_gelu=cfg.quick_gelu,
    ).eval()
    sd = {}
    for k, val in model.state_dict().items():
        if k.startswith("visual.") and k != "visual.temporal_positional_embedding":
            sd[k] = val
        elif k.startswith("text.") and k != "text.attn_mask":
            sd[k.removeprefix("text.")] = val
    sd["logit_scale"] = model.logit_scale.detach()
    if context_length and context_length > t.context_length:
        pos = sd["positional_embedding"]
        sd["positional_embedding"] = torch.cat([pos, torch.randn(context_length - pos.shape[0], pos.shape[1])])
    missing, unexpected = clip.load_state_dict(sd, strict=False)
    assert not unexpected and all(m == "attn_mask" for m in missing), (missing, unexpected)
    return clip


@pytest.fixture(scope="module")
def randomized():
    """Tiny model with every parameter randomised (the temporal embedding included, non-zero)."""
    torch.manual_seed(1)
    m = create_model("viclip-tiny-test", pretrained="random")
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m


def test_t1_video_equals_open_clip_encode_image_with_zero_temporal(tiny):
    model = tiny[0]
    clip = open_clip_twin(model)
    img = torch.randn(3, 3, model.image_size, model.image_size)
    with torch.no_grad():
        ours = model.encode_video(img[:, None])
        theirs = clip.encode_image(img)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_t1_adds_mean_temporal_embedding_to_patches_only(randomized):
    clip = open_clip_twin(randomized)
    with torch.no_grad():  # fold the reference's T=1 rule into CLIP's spatial table: patches only
        clip.visual.positional_embedding[1:] += randomized.visual.temporal_positional_embedding.mean(1)[0]
        img = torch.randn(2, 3, randomized.image_size, randomized.image_size)
        diff = (randomized.encode_video(img[:, None]) - clip.encode_image(img)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("frames", [1, 4])
def test_joint_video_forward_matches_independent_reference(randomized, frames):
    video = torch.randn(2, frames, 3, randomized.image_size, randomized.image_size)
    sd = to_viclip(randomized.state_dict())
    with torch.no_grad():
        ours = randomized.encode_video(video)
        theirs = ref.vision_forward(sd, video, heads=randomized.config.vision.heads)
    assert rel_l2(ours, theirs) <= 1e-5


def test_text_equals_open_clip_text_tower_at_context_32(randomized):
    tok = open_clip.get_tokenizer("ViT-B-16", context_length=32)
    ids = tok(["a red square moves left", "first a blue circle appears, then a green triangle shrinks", ""])
    with torch.no_grad():
        ours = randomized.encode_text(ids)
        clip32 = open_clip_twin(randomized).encode_text(ids)
        theirs = ref.text_forward(to_viclip(randomized.state_dict()), ids, heads=randomized.config.text.heads)
    assert (ours - clip32).abs().max().item() <= 1e-5
    assert rel_l2(ours, theirs) <= 1e-5


def test_text_equals_open_clip_context_77_for_short_texts(randomized):
    """CLIP's 77-position tower truncated to 32 gives the same features: the mask is causal."""
    clip77 = open_clip_twin(randomized, context_length=77)
    texts = ["a small yellow star rotates", "a big purple circle disappears on a grey background"]
    ids77 = open_clip.tokenize(texts, context_length=77)
    with torch.no_grad():
        theirs = clip77.encode_text(ids77)
        ours = randomized.encode_text(open_clip.tokenize(texts, context_length=32))
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_frame_mean_baseline_is_mean_of_per_frame_image_embeddings():
    cfg = get_model_config("viclip-tiny-test")
    cfg.vision.temporal = "frame_mean"
    from retrieval.model import VideoTextModel

    torch.manual_seed(2)
    model = VideoTextModel(cfg).eval()
    clip = open_clip_twin(model)
    video = torch.randn(2, cfg.vision.num_frames, 3, cfg.vision.image_size, cfg.vision.image_size)
    with torch.no_grad():
        ours = model.encode_video(video)
        theirs = clip.encode_image(video.flatten(0, 1)).view(2, cfg.vision.num_frames, -1).mean(1)
    assert (ours - theirs).abs().max().item() <= 1e-5


def test_temporal_embedding_makes_joint_model_order_sensitive(randomized):
    video = torch.randn(1, randomized.num_frames, 3, randomized.image_size, randomized.image_size)
    with torch.no_grad():
        fwd = randomized.encode_video(video)
        rev = randomized.encode_video(video.flip(1))
    assert rel_l2(fwd, rev) > 1e-3  # a frame-average model could not tell these apart


def test_wrong_frame_count_is_a_clear_error(tiny):
    model = tiny[0]
    with pytest.raises(InvalidInput, match="frames per clip"):
        model.encode_video(torch.randn(1, model.num_frames + 1, 3, model.image_size, model.image_size))


def test_return_tokens_gives_class_plus_one_token_per_frame(tiny):
    model, preprocess, tokenizer = tiny
    frames = np.random.default_rng(0).integers(0, 255, (model.num_frames, 40, 50, 3), dtype=np.uint8)
    with torch.no_grad():
        emb, tokens = model.encode_video(preprocess(frames)[None], normalize=True, return_tokens=True)
        plain = model.encode_video(preprocess(frames)[None], normalize=True)
    assert tokens.shape == (1, 1 + model.num_frames, model.config.vision.width)
    assert torch.allclose(emb, plain)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(1))


def test_token_masking_keeps_shapes_and_changes_output(tiny):
    model = tiny[0]
    video = torch.randn(2, model.num_frames, 3, model.image_size, model.image_size)
    with torch.no_grad():
        full, tok_full = model.encode_video(video, return_tokens=True)
        masked, tok_masked = model.encode_video(video, return_tokens=True, mask_ratio=0.5)
    assert masked.shape == full.shape and tok_masked.shape == tok_full.shape
    assert not torch.allclose(masked, full)


def test_match_score_is_per_pair_and_batch_independent(tiny):
    model, preprocess, tokenizer = tiny
    ids = tokenizer(["a red circle moves left", "a blue square appears", "a green star grows"])
    video = torch.randn(3, model.num_frames, 3, model.image_size, model.image_size)
    with torch.no_grad():
        _, ttok = model.encode_text(ids, return_tokens=True)
        _, vtok = model.encode_video(video, return_tokens=True)
        batch = model.match_score(ttok, ids, vtok)
        single = torch.stack([model.match_score(ttok[i : i + 1], ids[i : i + 1], vtok[i : i + 1])[0] for i in range(3)])
        logits = model.match_logits(ttok, ids, vtok)
    assert batch.shape == (3,) and logits.shape == (3, 2)
    assert torch.allclose(batch, single, atol=1e-5)
    assert torch.allclose(batch, logits[:, 1])


def test_text_tower_runs_on_the_used_columns_with_the_full_towers_numbers(randomized):
    """retrieval.text_prefix: embeddings, token states up to each end-of-text and gradients as the full tower."""
    from retrieval.text_prefix import encode_text_prefix, used_length

    tok = open_clip.get_tokenizer("ViT-B-16", context_length=32)
    ids = tok(["a red square", "first a blue circle appears, then a green triangle shrinks", "left"])
    n = used_length(ids)
    assert 0 < n < ids.shape[1]  # the batch leaves columns unused: the short path is the one tested
    text = randomized.text
    full_emb, full_tok = text(ids)  # open_clip's own forward over all 32 positions
    emb, tokens = encode_text_prefix(text, ids)
    assert tokens.shape == full_tok.shape
    torch.testing.assert_close(emb, full_emb, rtol=1e-5, atol=1e-5)
    for row, eot in enumerate(ids.argmax(dim=1).tolist()):
        torch.testing.assert_close(tokens[row, : eot + 1], full_tok[row, : eot + 1], rtol=1e-5, atol=1e-5)
        assert tokens[row, eot + 1 :].abs().max() == 0  # nothing after the text's end
    grads = []
    for out in (full_emb, emb):
        text.zero_grad()
        (out * torch.linspace(-1, 1, out.shape[1])).sum().backward(retain_graph=True)
        grads.append({k: p.grad.clone() for k, p in text.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-5)
    text.zero_grad()
