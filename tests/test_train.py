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
    assert train(_cfg(train_dir, out, steps=24, lr=3e-3), progress=False) == out
    losses = [r["loss"] for r in _log(out)]
    assert len(losses) == 24
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.1
    assert {"vtc", "vtm", "itm_acc", "clips_per_s", "temp"} <= set(_log(out)[-1])
    model = create_model(None, pretrained=out)
    assert model.name == "viclip-tiny-test" and model.match_head_trained
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
    assert json.loads(meta["train_config"])["steps"] == 24 and float(meta["train_wall_s"]) > 0


def test_same_seed_same_weights_and_resume_continues_exactly(train_dir, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    train(_cfg(train_dir, a), progress=False)
    assert train(_cfg(train_dir, b), progress=False, stop_at=3) is None  # interrupted half way
    assert not b.exists() and b.with_name("b.state.pt").is_file()
    train(_cfg(train_dir, b), resume=True, progress=False)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    assert [r["loss"] for r in _log(a)] == [r["loss"] for r in _log(b)]


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
    conf.write_text("{not json")
    res = CliRunner().invoke(main, ["train", "--config", str(conf)])
    assert res.exit_code == 1 and "error: cannot read training config" in res.output
