"""A few real training steps of the tiny test model on real generated MP4s."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open

from retrieval.errors import ConfigError
from retrieval.training import TrainCfg, train


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    from retrieval.synth import generate

    d = tmp_path_factory.mktemp("synth-train")
    generate(d, 48, seed=0, split="train")
    return d


def _cfg(train_dir, out, **kw):
    base = {"model": "viclip-tiny-test", "data": str(train_dir), "synth": None, "output": str(out), "steps": 6,
            "batch_size": 16, "lr": 2e-3, "warmup_steps": 2, "checkpoint_every": 3, "log_every": 1, "num_threads": 1,
            "save_dtype": "float32"}  # fmt: skip
    base.update(kw)
    return TrainCfg.from_dict(base)


def _log(out):
    return [json.loads(x) for x in out.with_name(out.stem + ".log.jsonl").read_text().splitlines()]


def _weights(path):
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_a_few_steps_lower_the_loss_and_write_a_loadable_checkpoint(train_dir, tmp_path):
    from retrieval import create_model

    out = tmp_path / "m.safetensors"
    cfg = _cfg(train_dir, out, steps=24, lr=3e-3, rephrase=True, shuffled_negatives=4, logit_scale_lr=0.05)
    assert train(cfg, progress=False) == out
    losses = [r["loss"] for r in _log(out)]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1
    assert {"vtc", "vtm", "itm_acc", "clips_per_s", "temp"} <= set(_log(out)[-1])
    model = create_model(None, pretrained=out)
    assert model.name == "viclip-tiny-test" and model.match_head_trained
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["train_config"])["steps"] == 24 and float(meta["train_wall_s"]) > 0


@pytest.mark.parametrize("threads", [1, 2])
def test_same_seed_same_weights_and_resume_continues_exactly(train_dir, tmp_path, threads):
    """Two threads too (the shipped recipe's): some CPU kernels sum in thread-finish order, so without
    deterministic kernels two runs of one config differ after a few steps."""
    before = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    train(_cfg(train_dir, a, num_threads=threads), progress=False)
    assert train(_cfg(train_dir, b, num_threads=threads), progress=False, stop_at=3) is None  # interrupted half way
    assert not b.exists() and b.with_name("b.state.pt").is_file()
    train(_cfg(train_dir, b, num_threads=threads), resume=True, progress=False)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    assert [r["loss"] for r in _log(a)] == [r["loss"] for r in _log(b)]
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == before


def test_fp16_weights_and_frame_average_model_train(train_dir, tmp_path, monkeypatch):
    from retrieval import create_model
    from retrieval.factory import CONFIG_DIR

    spec = json.loads((CONFIG_DIR / "viclip-tiny-test.json").read_text())
    spec["vision"]["temporal"] = "frame_mean"
    (tmp_path / "tiny-framemean.json").write_text(json.dumps(spec))
    monkeypatch.setenv("VTR_MODEL_CONFIGS", str(tmp_path))
    out = tmp_path / "fm.safetensors"
    cfg = _cfg(train_dir, out, steps=2, save_dtype="float16", vtm_weight=0.0, model="tiny-framemean")
    train(cfg, progress=False)
    assert all(t.dtype in (torch.float16, torch.int64) for t in _weights(out).values() if t.is_floating_point())
    model = create_model(None, pretrained=out)
    assert model.config.vision.temporal == "frame_mean"
    assert not model.match_head_trained  # head untrained without VTM


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"steps": 0}, "steps"),
        ({"batch_size": 1}, "batch_size"),
        ({"bogus": 1}, "unknown"),
        ({"mask_ratio": 1.5}, "mask_ratio"),
        ({"shuffled_negatives": -1}, "shuffled_negatives"),
        ({"logit_scale_lr": 0}, "logit_scale_lr"),
        ({"text_contrast": -1}, "text_contrast"),
    ],
)
def test_bad_configs_are_clear_errors(train_dir, tmp_path, bad, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(train_dir, tmp_path / "x.safetensors", **bad)


def test_vtr_train_cli(train_dir, tmp_path):
    from indexer.cli import main

    out = tmp_path / "cli.safetensors"
    conf = tmp_path / "c.json"
    conf.write_text(json.dumps({**_cfg(train_dir, out).to_dict(), "steps": 2}))
    res = CliRunner().invoke(main, ["train", "--config", str(conf)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "wrote" in res.output
    res = CliRunner().invoke(main, ["train", "--config", str(conf), "--prepare-only"])
    assert res.exit_code == 0 and "prepared 48 clips" in res.output, res.output
    assert list(train_dir.glob("cache/frames_*.npy"))
    conf.write_text("{not json")
    res = CliRunner().invoke(main, ["train", "--config", str(conf)])
    assert res.exit_code == 1 and "error: cannot read training config" in res.output


def test_batches_rephrase_captions_and_know_their_twins(train_dir):
    import numpy as np

    from retrieval.synth import read_captions
    from retrieval.training.data import ClipBatches, time_asymmetric

    records = read_captions(train_dir)
    frames = np.zeros((len(records), 16, 4, 4, 3), np.uint8)
    plain = ClipBatches(records, frames, 16, 8, seed=0)
    fresh = ClipBatches(records, frames, 16, 8, seed=0, rephrase=True)
    a, b = plain.batch(5), fresh.batch(5)
    assert a.keys == b.keys  # same clips, same meanings ...
    assert a.captions != b.captions  # ... in other words
    assert fresh.batch(5).captions == b.captions  # deterministic per (seed, step)
    assert fresh.batch(6).captions != b.captions
    assert len(b.twins) > 0
    for i, j in b.twins:
        assert b.keys[i] != b.keys[j]
        idx = fresh.indices(5)
        assert records[idx[i]]["group"] == records[idx[j]]["group"]
    kinds = {(r["kind"], (r.get("attributes") or {}).get("motion")): time_asymmetric(r) for r in records}
    assert all(v == (k[0] == "order" or (k[0] == "single" and k[1] != "still")) for k, v in kinds.items())


def test_text_contrast_pulls_phrasings_of_one_meaning_together_and_apart_from_others(train_dir, tmp_path):
    import numpy as np

    from retrieval import create_model
    from retrieval.synth import read_captions
    from retrieval.training.data import ClipBatches

    records = read_captions(train_dir)
    frames = np.zeros((len(records), 16, 4, 4, 3), np.uint8)
    b = ClipBatches(records, frames, 16, 8, seed=0, alt_phrasings=True).batch(3)
    assert b.alt_captions is not None and len(b.alt_captions) == len(b.captions)
    assert b.alt_captions != b.captions  # another phrasing of the same meanings
    assert ClipBatches(records, frames, 16, 8, seed=0).batch(3).alt_captions is None

    out = tmp_path / "ttc.safetensors"
    cfg = _cfg(train_dir, out, steps=30, lr=3e-3, rephrase=True, text_contrast=1.0, vtm_weight=0.0)
    train(cfg, progress=False)
    log = _log(out)
    assert all("ttc" in r for r in log)
    assert np.mean([r["ttc"] for r in log[-5:]]) < np.mean([r["ttc"] for r in log[:5]]) - 0.1
    model = create_model(None, pretrained=out)
    assert model.name == "viclip-tiny-test"


def test_the_temperature_has_its_own_learning_rate(train_dir, tmp_path):
    from retrieval import create_model
    from retrieval.training.trainer import make_optimizer

    model = create_model("viclip-tiny-test", pretrained="random")
    opt = make_optimizer(model, _cfg(train_dir, tmp_path / "x.safetensors", logit_scale_lr=0.05))
    (group,) = [g for g in opt.param_groups if any(p is model.logit_scale for p in g["params"])]
    assert group["peak_lr"] == 0.05 and len(group["params"]) == 1 and group["weight_decay"] == 0.0
    assert all(g["peak_lr"] == 2e-3 for g in opt.param_groups if g is not group)


def test_head_stage_trains_only_the_head_on_mined_negatives(train_dir, tmp_path):
    from retrieval import create_model
    from retrieval.training.head import HeadTrainCfg, train_head

    stage1 = tmp_path / "s1.safetensors"
    train(_cfg(train_dir, stage1, steps=2, vtm_weight=0.0), progress=False)
    out = tmp_path / "head.safetensors"
    cfg = HeadTrainCfg(checkpoint=str(stage1), data=str(train_dir), output=str(out), steps=4, batch_size=8,
                       neighbours=4, warmup_steps=1, log_every=1, save_dtype="float32")  # fmt: skip
    assert train_head(cfg, progress=False) == out
    before, after = _weights(stage1), _weights(out)
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k].float(), after[k].float())}
    assert changed and all(k.startswith("match_head.") for k in changed)  # towers frozen, head trained
    model = create_model(None, pretrained=out)
    assert model.match_head_trained
    log = [json.loads(x) for x in out.with_name(out.stem + ".log.jsonl").read_text().splitlines()]
    assert len(log) == 4 and {"loss", "balanced_acc", "pos_above_hard_video"} <= set(log[-1])
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["head_train_config"])["steps"] == 4 and "train_config" in meta


def test_head_stage_can_give_an_order_blind_head_frame_positions(train_dir, tmp_path):
    from retrieval import create_model
    from retrieval.training.head import HeadTrainCfg, train_head

    stage1 = tmp_path / "s1.safetensors"
    train(_cfg(train_dir, stage1, steps=2, vtm_weight=0.0), progress=False)
    assert create_model(None, pretrained=stage1).match_head.frame_embedding is None
    out = tmp_path / "head.safetensors"
    cfg = HeadTrainCfg(checkpoint=str(stage1), data=str(train_dir), output=str(out), steps=3, batch_size=8,
                       neighbours=4, warmup_steps=1, frame_positions=True, save_dtype="float32")  # fmt: skip
    train_head(cfg, progress=False)
    model = create_model(None, pretrained=out)
    assert model.config.match_head.frame_positions == 1 + model.num_frames
    emb = model.match_head.frame_embedding
    assert emb is not None and emb.shape == (1 + model.num_frames, model.config.match_head.width)
    assert emb.abs().sum() > 0  # trained from zero
    head = model.match_head
    v = torch.randn(2, 1 + model.num_frames, head.video_in.in_features)
    t = torch.randn(2, 5, head.text_in.in_features)
    ids = torch.tensor([[1, 5, 7, 49407, 0], [1, 9, 49407, 0, 0]])
    with torch.no_grad():  # order now changes the logits
        assert not torch.allclose(head(t, ids, v), head(t, ids, v.flip(1)))
