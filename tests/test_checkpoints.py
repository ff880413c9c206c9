"""Checkpoint loading is exact and strict for every format users bring."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from retrieval import create_model, get_model_config
from retrieval.checkpoints import from_viclip, save_checkpoint, to_viclip
from retrieval.errors import CheckpointError
from retrieval.model import VideoTextModel
from tests import reference_viclip as ref
from tests.viclip_keys import random_release_state_dict, release_keys


def rel_l2(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name,size", [("viclip-B-16", "b"), ("viclip-L-14", "l")])
def test_release_key_layout_maps_onto_model_exactly(name, size):
    """Every release key has a model key of identical shape, and nothing is left over (meta device)."""
    with torch.device("meta"):
        model = VideoTextModel(get_model_config(name))
    target = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "text.attn_mask"}
    fake = {k: torch.empty(shape, device="meta") for k, shape in release_keys(size)}
    mapped = {k: tuple(v.shape) for k, v in from_viclip(fake).items()}
    towers = {k: s for k, s in target.items() if not k.startswith("match_head.")}
    assert mapped == towers
    assert sum(int(torch.tensor(s).prod()) for s in mapped.values()) == {"b": 149_603_841, "l": 427_590_145}[size]


@pytest.fixture(scope="module")
def viclip_b16_file(tmp_path_factory):
    sd = random_release_state_dict("b", seed=3)
    path = tmp_path_factory.mktemp("ckpt") / "ViClip-InternVid-10M-FLT.pth"
    torch.save({"model": sd, "epoch": 3}, path)
    return path, sd


@pytest.mark.slow
def test_viclip_b16_release_file_loads_strictly_and_matches_reference(viclip_b16_file):
    path, sd = viclip_b16_file
    model = create_model("viclip-B-16", pretrained=path)
    assert not model.match_head_trained
    torch.manual_seed(0)
    video = torch.randn(1, 8, 3, 224, 224)
    ids = torch.tensor([[49406, 320, 1929, 49407] + [0] * 28])
    with torch.no_grad():
        assert rel_l2(model.encode_video(video), ref.vision_forward(sd, video, heads=12)) <= 1e-5
        assert rel_l2(model.encode_text(ids), ref.text_forward(sd, ids, heads=8)) <= 1e-5
    assert abs(model.logit_scale.exp().item() - 1 / 0.0123) < 1e-3


def test_viclip_layout_equals_equivalent_open_clip_weights(tmp_path):
    """The same weights as a ViCLIP release file and as an open_clip file give the same model."""
    torch.manual_seed(4)
    src = create_model("viclip-tiny-test", pretrained="random")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.05 * torch.randn_like(p))
        src.visual.temporal_positional_embedding.zero_()  # CLIP weights carry none
    viclip_sd = to_viclip(src.state_dict())
    assert set(viclip_sd) >= {"temp", "vision_encoder.conv1.weight", "text_encoder.token_embedding.weight"}
    assert viclip_sd["vision_encoder.conv1.weight"].ndim == 5
    torch.save({"model": viclip_sd}, tmp_path / "viclip.pth")
    # open_clip layout: image tower under visual.*, text tower at top level with 77 positions
    oc = {k.removeprefix("vision_encoder."): v for k, v in viclip_sd.items()}
    oc_sd = {}
    for k, v in viclip_sd.items():
        if k.startswith("vision_encoder."):
            if k.endswith("temporal_positional_embedding"):
                continue
            oc_sd["visual." + k.removeprefix("vision_encoder.")] = v[:, :, 0] if v.ndim == 5 else v
        elif k.startswith("text_encoder."):
            oc_sd[k.removeprefix("text_encoder.")] = v
    pos = oc_sd["positional_embedding"]
    oc_sd["positional_embedding"] = torch.cat([pos, torch.randn(77 - pos.shape[0], pos.shape[1])])
    oc_sd["logit_scale"] = torch.log(1 / viclip_sd["temp"])
    torch.save(oc_sd, tmp_path / "open_clip.pt")
    del oc

    a = create_model("viclip-tiny-test", pretrained=tmp_path / "viclip.pth")
    b = create_model("viclip-tiny-test", pretrained=tmp_path / "open_clip.pt")
    video = torch.randn(2, a.num_frames, 3, a.image_size, a.image_size)
    ids = torch.randint(1, 49000, (2, 32))
    with torch.no_grad():
        assert torch.equal(a.encode_video(video), b.encode_video(video))
        assert torch.equal(a.encode_text(ids), b.encode_text(ids))
        assert torch.allclose(a.encode_video(video), src.encode_video(video), atol=1e-6)
    assert torch.allclose(a.logit_scale, b.logit_scale)


def _tiny_release(tmp_path, mutate):
    torch.manual_seed(5)
    sd = to_viclip(create_model("viclip-tiny-test", pretrained="random").state_dict())
    mutate(sd)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    return path


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (lambda sd: sd.pop("vision_encoder.ln_post.weight"), r"missing keys: visual\.ln_post\.weight"),
        (
            lambda sd: sd.__setitem__("vision_encoder.extra_thing", torch.zeros(3)),
            r"unexpected keys: visual\.extra_thing",
        ),
        (
            lambda sd: sd.__setitem__("text_encoder.text_projection", torch.zeros(7, 7)),
            r"mis-shaped keys: text\.text_projection",
        ),
    ],
)
def test_corrupted_release_file_fails_naming_the_keys(tmp_path, mutate, expected):
    with pytest.raises(CheckpointError, match=expected):
        create_model("viclip-tiny-test", pretrained=_tiny_release(tmp_path, mutate))


def test_wrong_architecture_fails_clearly(tmp_path):
    path = _tiny_release(tmp_path, lambda sd: None)
    with pytest.raises(CheckpointError, match="does not fit model 'viclip-B-16'"):
        create_model("viclip-B-16", pretrained=path)


@pytest.mark.parametrize("content", [b"", b"this is not a checkpoint", b"PK\x03\x04broken zip"])
def test_unreadable_files_fail_clearly(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="weights.pth"):
        create_model("viclip-tiny-test", pretrained=path)


def test_truncated_project_checkpoint_fails_clearly(tmp_path, tiny):
    path = save_checkpoint(tiny[0], tmp_path / "m.safetensors")
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="m.safetensors"):
        create_model(pretrained=path)


def test_missing_file_and_unknown_tag_fail_clearly(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        create_model("viclip-tiny-test", pretrained=tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="open_clip"):
        create_model("viclip-tiny-test", pretrained="openai")  # the tiny config has no open_clip arch
    with pytest.raises(CheckpointError, match="known tags"):
        create_model("viclip-B-16", pretrained="no-such-tag")


def _with_temporal(tmp_path, frames=8):
    torch.manual_seed(6)
    model = create_model("viclip-tiny-test", pretrained="random", num_frames=frames)
    with torch.no_grad():
        model.visual.temporal_positional_embedding.copy_(torch.randn(1, frames, model.config.vision.width))
    return model, save_checkpoint(model, tmp_path / f"t{frames}.safetensors")


def test_fewer_frames_truncates_temporal_embedding(tmp_path):
    src, path = _with_temporal(tmp_path)
    model = create_model(pretrained=path, num_frames=4)
    assert model.num_frames == 4
    assert torch.equal(model.visual.temporal_positional_embedding, src.visual.temporal_positional_embedding[:, :4])
    model.encode_video(torch.randn(1, 4, 3, model.image_size, model.image_size))


def test_more_frames_interpolates_temporal_embedding_linearly(tmp_path):
    src, path = _with_temporal(tmp_path)
    model = create_model(pretrained=path, num_frames=16)
    got = model.visual.temporal_positional_embedding
    old = src.visual.temporal_positional_embedding
    assert got.shape == (1, 16, old.shape[2])
    want = F.interpolate(old.permute(0, 2, 1), size=16, mode="linear", align_corners=False).permute(0, 2, 1)
    assert torch.allclose(got, want, atol=1e-7)
    # with align_corners=False, output j samples input position (j + 0.5)/2 - 0.5 (clamped at the ends)
    assert torch.allclose(got[0, 0], old[0, 0]) and torch.allclose(got[0, 15], old[0, 7])
    assert torch.allclose(got[0, 3], 0.75 * old[0, 1] + 0.25 * old[0, 2], atol=1e-6)
    model.encode_video(torch.randn(1, 16, 3, model.image_size, model.image_size))


def test_release_file_loads_at_16_frames(tmp_path):
    """The reference raises NameError here; we interpolate."""
    path = _tiny_release(tmp_path, lambda sd: None)
    model = create_model("viclip-tiny-test", pretrained=path, num_frames=16)
    assert model.visual.temporal_positional_embedding.shape[1] == 16


def test_project_checkpoint_round_trip(tmp_path, tiny):
    src = tiny[0]
    src.match_head_trained = True
    try:
        path = save_checkpoint(src, tmp_path / "model.safetensors", metadata={"note": "unit test", "steps": 12})
    finally:
        src.match_head_trained = False
    loaded = create_model(pretrained=path)
    assert loaded.name == "viclip-tiny-test" and loaded.match_head_trained
    for k, v in src.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    video = torch.randn(1, src.num_frames, 3, src.image_size, src.image_size)
    with torch.no_grad():
        assert torch.equal(src.encode_video(video), loaded.encode_video(video))
    from retrieval.checkpoints import read_project_checkpoint

    config, _, meta = read_project_checkpoint(path)
    assert config["vision"]["num_frames"] == src.num_frames and json.loads(meta["steps"]) == 12
    with pytest.raises(CheckpointError, match="not 'viclip-B-16'"):
        create_model("viclip-B-16", pretrained=path)


def test_fp16_storage_loads_into_fp32(tmp_path, tiny):
    path = save_checkpoint(tiny[0], tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = create_model(pretrained=path)
    assert loaded.visual.proj.dtype == torch.float32
    assert torch.allclose(loaded.visual.proj, tiny[0].visual.proj, atol=1e-3)
    assert path.stat().st_size < 0.6 * save_checkpoint(tiny[0], tmp_path / "full.safetensors").stat().st_size


def test_local_open_clip_file_inflates_into_video_tower(tmp_path):
    """A real open_clip ViT-B-16 (QuickGELU) checkpoint file: T=1 equals its encode_image, text equal."""
    import open_clip

    torch.manual_seed(7)
    clip = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval()
    path = tmp_path / "open_clip_b16.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in clip.state_dict().items()}}, path)
    model = create_model("viclip-B-16", pretrained=path)
    assert torch.count_nonzero(model.visual.temporal_positional_embedding) == 0
    img = torch.randn(1, 3, 224, 224)
    ids = open_clip.tokenize(["a person rides a horse on the beach"], context_length=77)
    with torch.no_grad():
        assert (model.encode_video(img[:, None]) - clip.encode_image(img)).abs().max().item() <= 1e-5
        assert (model.encode_text(ids[:, :32]) - clip.encode_text(ids)).abs().max().item() <= 1e-5
