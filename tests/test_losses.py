"""VTC and VTM losses, and the hard-negative sampler, against direct computations."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from retrieval.training.losses import positive_mask, sample_hard_negatives, vtc_loss, vtm_loss


def _unit(x):
    return F.normalize(x, dim=-1)


def test_positive_mask_groups_equal_keys():
    pos = positive_mask(["a", "b", "a", "c"])
    assert pos.tolist() == [
        [True, False, True, False],
        [False, True, False, False],
        [True, False, True, False],
        [False, False, False, True],
    ]


def test_vtc_with_unique_captions_is_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(0)
    v, t = _unit(torch.randn(6, 8, generator=g)), _unit(torch.randn(6, 8, generator=g))
    scale = torch.tensor(2.5)
    logits = scale.exp() * t @ v.t()
    want = 0.5 * (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.t(), torch.arange(6)))
    got = vtc_loss(v, t, scale, torch.eye(6, dtype=torch.bool))
    torch.testing.assert_close(got, want)


def test_vtc_multi_positive_is_minus_log_of_the_positive_mass():
    g = torch.Generator().manual_seed(1)
    v, t = _unit(torch.randn(5, 4, generator=g)), _unit(torch.randn(5, 4, generator=g))
    pos = positive_mask(["x", "y", "x", "z", "y"])
    scale = torch.tensor(1.0)
    logits = scale.exp() * t @ v.t()

    def naive(lg, p):
        probs = lg.softmax(dim=1)
        return torch.stack([-torch.log(probs[i][p[i]].sum()) for i in range(len(lg))]).mean()

    want = 0.5 * (naive(logits, pos) + naive(logits.t(), pos.t()))
    torch.testing.assert_close(vtc_loss(v, t, scale, pos), want)
    # identical captions are not pushed apart: a perfect embedding for duplicates has ~zero loss
    same = _unit(torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0]]))
    assert vtc_loss(same, same, torch.tensor(4.6), positive_mask(["a", "b", "a"])) < 0.01


def test_hard_negatives_never_pick_a_positive_and_follow_the_softmax():
    g = torch.Generator().manual_seed(2)
    sim = torch.randn(16, 16, generator=g) * 3
    pos = torch.eye(16, dtype=torch.bool) | (torch.rand(16, 16, generator=g) < 0.4)
    pos[3, :] = True
    pos[3, 7] = False  # row 3 has exactly one negative
    counts = torch.zeros(16, 16)
    for _ in range(400):
        picks = sample_hard_negatives(sim, pos, g)
        assert not pos[torch.arange(16), picks].any()
        assert picks[3] == 7
        counts[torch.arange(16), picks] += 1
    row = 0
    allowed = ~pos[row]
    expected = torch.softmax(sim[row].masked_fill(~allowed, float("-inf")), 0)
    freq = counts[row] / counts[row].sum()
    assert (freq - expected).abs().max() < 0.1  # sampled in proportion to the softmax


def test_rows_without_negatives_are_marked_and_skipped():
    picks = sample_hard_negatives(torch.zeros(3, 3), torch.ones(3, 3, dtype=torch.bool))
    assert picks.tolist() == [-1, -1, -1]


def test_vtm_loss_trains_the_matching_head(tiny):
    model, _, tokenizer = tiny
    ids = tokenizer(["a red circle moves left", "a blue square moves right", "a cyan cross", "a green ring"])
    pixels = torch.randn(4, model.num_frames, 3, model.image_size, model.image_size)
    model.train()
    try:
        v, vt = model.encode_video(pixels, normalize=True, return_tokens=True)
        t, tt = model.encode_text(ids, normalize=True, return_tokens=True)
        loss, acc = vtm_loss(
            model, tt, ids, vt, t @ v.t(), torch.eye(4, dtype=torch.bool), torch.Generator().manual_seed(0)
        )
        assert torch.isfinite(loss) and 0.0 <= float(acc) <= 1.0
        model.zero_grad()
        loss.backward()
        assert model.match_head.itm.weight.grad.abs().sum() > 0
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_temperature_scaled_sampling_concentrates_on_the_hardest_negative():
    """Sampling from softmax(sim / temp) (the s2 recipe), not the raw cosine, picks the near-duplicate."""
    sim = torch.full((1, 64), 0.2)
    sim[0, 0], sim[0, 5] = 0.9, 0.85  # 0 is the positive, 5 its near-duplicate (a reversed twin)
    pos = torch.zeros(1, 64, dtype=torch.bool)
    pos[0, 0] = True
    g = torch.Generator().manual_seed(0)
    raw = [int(sample_hard_negatives(sim, pos, g)) for _ in range(300)]
    scaled = [int(sample_hard_negatives(sim / 0.01, pos, g)) for _ in range(300)]
    assert sum(p == 5 for p in raw) / 300 < 0.1  # the raw cosine is nearly uniform over 63 negatives
    assert sum(p == 5 for p in scaled) / 300 > 0.95


def test_vtc_extra_videos_are_negatives_of_every_text():
    g = torch.Generator().manual_seed(3)
    v, t = _unit(torch.randn(4, 8, generator=g)), _unit(torch.randn(4, 8, generator=g))
    scale, pos = torch.tensor(2.0), torch.eye(4, dtype=torch.bool)
    base = vtc_loss(v, t, scale, pos)
    assert vtc_loss(v, t, scale, pos, extra_video_emb=v[:0]) == base
    # a copy of each text's own video as an extra column competes with the positive: the loss rises
    assert vtc_loss(v, t, scale, pos, extra_video_emb=v) > base + 0.1
    logits = scale.exp() * t @ torch.cat([v, v[:1]]).t()
    want_t2v = F.cross_entropy(logits, torch.arange(4))
    want_v2t = F.cross_entropy((scale.exp() * t @ v.t()).t(), torch.arange(4))
    torch.testing.assert_close(vtc_loss(v, t, scale, pos, extra_video_emb=v[:1]), 0.5 * (want_t2v + want_v2t))


def test_vtm_adds_explicit_and_extra_negatives(tiny):
    model, _, tokenizer = tiny
    ids = tokenizer(["a red circle moves left", "a red circle moves right", "a cyan cross", "a green ring"])
    pixels = torch.randn(4, model.num_frames, 3, model.image_size, model.image_size)
    with torch.no_grad():
        v, vt = model.encode_video(pixels, normalize=True, return_tokens=True)
        t, tt = model.encode_text(ids, normalize=True, return_tokens=True)
    pos = torch.eye(4, dtype=torch.bool)
    calls = []
    real = model.match_logits

    def counting(texts, token_ids, videos):
        calls.append(len(videos))
        return real(texts, token_ids, videos)

    model.match_logits = counting
    try:
        vtm_loss(model, tt, ids, vt, t @ v.t(), pos, torch.Generator().manual_seed(0))
        explicit = (torch.tensor([0, 1]), torch.tensor([1, 0]))
        vtm_loss(
            model, tt, ids, vt, t @ v.t(), pos, torch.Generator().manual_seed(0), explicit, vt[:3], torch.arange(3)
        )
    finally:
        del model.match_logits
    assert calls == [4 + 4 + 4, 4 + 4 + 4 + 2 + 3]
