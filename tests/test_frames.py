"""Frame sampling, pixel transform and tokenizer follow the ViCLIP evaluation code exactly."""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from torchvision import transforms as T

from retrieval import create_model_and_transforms
from retrieval.config import IMAGENET_MEAN, IMAGENET_STD, PreprocessCfg
from retrieval.errors import InvalidInput
from retrieval.frames import VideoTransform, middle_indices, random_indices


def reference_middle(vlen: int, num_frames: int) -> list[int]:
    """A literal port of InternVideo's get_frame_indices(sample='middle')."""
    acc = min(num_frames, vlen)
    intervals = np.linspace(start=0, stop=vlen, num=acc + 1).astype(int)
    ranges = [(intervals[i], intervals[i + 1] - 1) for i in range(len(intervals) - 1)]
    idx = [(x[0] + x[1]) // 2 for x in ranges]
    if len(idx) < num_frames:
        padded = [idx[-1]] * num_frames
        padded[: len(idx)] = idx
        idx = padded
    return [int(i) for i in idx]


@pytest.mark.parametrize("vlen", [1, 2, 3, 7, 8, 9, 16, 25, 100, 301, 1000])
@pytest.mark.parametrize("n", [1, 4, 8, 12])
def test_middle_indices_match_reference(vlen, n):
    assert middle_indices(vlen, n) == reference_middle(vlen, n)


def test_random_indices_stay_inside_their_segment():
    rng = np.random.default_rng(0)
    for vlen in (5, 8, 33, 240):
        b = np.linspace(0, vlen, min(8, vlen) + 1).astype(int)
        for _ in range(50):
            idx = random_indices(vlen, 8, rng)
            assert len(idx) == 8
            for i, f in enumerate(idx[: len(b) - 1]):
                assert b[i] <= f < b[i + 1]


def test_sampling_rejects_empty_clips():
    with pytest.raises(InvalidInput):
        middle_indices(0, 8)


@pytest.mark.parametrize("shape", [(8, 240, 320, 3), (4, 31, 17, 3), (1, 224, 224, 3), (2, 720, 1280, 3)])
@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_preprocess_equals_torchvision_resize_and_normalize(shape, mode):
    """The numpy resize reproduces torchvision's: equal, or one level apart where float contraction differs."""
    frames = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    size = 224 if shape[1] < 700 else 64
    cfg = PreprocessCfg(interpolation=mode)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    resized = T.Resize((size, size), interpolation=T.InterpolationMode(mode), antialias=False)(x)
    ours_u8 = torch.from_numpy(VideoTransform(size, cfg).resize(frames)).permute(0, 3, 1, 2)
    diff = (ours_u8.int() - resized.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    ours = VideoTransform(size, cfg)(frames)
    theirs = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(ours_u8.float() / 255.0)
    assert ours.shape == (shape[0], 3, size, size)
    assert torch.equal(ours, theirs)  # normalisation: bit for bit


def test_preprocess_antialias_falls_back_to_torchvision():
    frames = np.random.default_rng(2).integers(0, 256, (2, 90, 160, 3), dtype=np.uint8)
    ours = VideoTransform(32, PreprocessCfg(antialias=True)).resize(frames)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2)
    theirs = T.Resize((32, 32), interpolation=T.InterpolationMode.BICUBIC, antialias=True)(x).permute(0, 2, 3, 1)
    assert np.array_equal(ours, theirs.numpy())


def test_decode_worker_side_never_imports_torch():
    """The decode workers unpickle the transform and decode: importing torch there costs seconds per worker."""
    import subprocess
    import sys

    code = (
        "import pickle, sys, numpy as np; import indexer.pool, indexer.worker, retrieval.decode, retrieval.frames;"
        "from retrieval.model_spec import model_config; from retrieval.frames import VideoTransform;"
        "c = model_config('viclip-tiny-synth'); t = pickle.loads(pickle.dumps(VideoTransform(c.vision.image_size, c.preprocess)));"
        "t.array(np.zeros((2, 40, 60, 3), np.uint8)); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_preprocess_rejects_wrong_input():
    with pytest.raises(InvalidInput, match="uint8"):
        VideoTransform(32)(np.zeros((2, 10, 10, 3), dtype=np.float32))
    with pytest.raises(InvalidInput):
        VideoTransform(32)(np.zeros((2, 10, 10), dtype=np.uint8))


def test_tokenizer_matches_open_clip_at_context_32(tiny):
    tokenizer = tiny[2]
    texts = [
        "a red circle moves left",
        "",
        "Ünïcode & <html> entities &amp; stuff",
        " ".join(["very long caption"] * 40),
    ]
    ids = tokenizer(texts)
    assert ids.shape == (4, 32)
    assert torch.equal(ids, open_clip.tokenize(texts, context_length=32))
    long77 = open_clip.tokenize(texts[3:], context_length=77)[0]
    want = long77[:32].clone()
    want[-1] = 49407  # reference: first 32 ids, last forced to end-of-text
    assert torch.equal(ids[3], want)


def test_tokenizer_bounds_hostile_input(tiny):
    ids = tiny[2]("x" * 5_000_000)
    assert ids.shape == (1, 32) and ids[0, -1] == 49407


def test_factory_hands_out_matching_transforms():
    model, preprocess, tokenizer = create_model_and_transforms("viclip-tiny-test", pretrained="random")
    assert preprocess.image_size == model.image_size == 32
    assert tokenizer.context_length == model.context_length == 32
