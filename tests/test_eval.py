"""Evaluation through the real decode path, on real generated MP4s, and the shipped model's quality."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from retrieval.evaluation import _ground_truth, evaluate, format_table

WEIGHTS = Path(__file__).resolve().parents[1] / "retrieval" / "weights"
SHIPPED = WEIGHTS / "viclip-tiny-synth.safetensors"
SHIPPED_EVAL = WEIGHTS / "viclip-tiny-synth.eval.json"


@pytest.fixture(scope="module")
def test_split(tmp_path_factory):
    from retrieval.synth import generate

    d = tmp_path_factory.mktemp("synth-test")
    generate(d, 40, seed=11, split="test")
    return d


def test_report_has_every_direction_method_and_subset(tiny, test_split):
    model, preprocess, tokenizer = tiny
    report = evaluate(model, preprocess, tokenizer, test_split, rerank_k=5)
    assert set(report["results"]) == {"t2v", "v2t"}
    for direction in ("t2v", "v2t"):
        assert set(report["results"][direction]) == {"itc", "dsl", "match"}
        subsets = report["results"][direction]["itc"]
        assert subsets["all"]["n"] == 40
        assert {"binding", "order", "direction_order"} <= set(subsets)
    assert report["data"]["videos"] == 40 and len(report["data"]["captions_sha1"]) == 40
    assert report["data"]["generated_with"]["seed"] == 11 and report["data"]["generated_with"]["split"] == "test"
    table = format_table(report)
    assert table.count("\n") > 10 and "| t2v | match | all | 40 |" in table


def test_identical_captions_are_all_correct_answers():
    recs = [{"caption": "a"}, {"caption": "b"}, {"caption": "a"}]
    gt = _ground_truth(recs, [0, 1, 2], 3)
    assert gt.tolist() == [[True, False, True], [False, True, False], [True, False, True]]


def _copy_records(split: Path, dest: Path, n: int) -> list[dict]:
    """The first ``n`` caption records of ``split``, their videos copied to ``dest`` (captions.jsonl not written)."""
    from retrieval.synth import read_captions

    recs = read_captions(split)[:n]
    (dest / "videos").mkdir()
    for r in recs:
        shutil.copy(split / r["path"], dest / r["path"])
    return recs


def _write_captions(dest: Path, recs: list[dict]) -> None:
    (dest / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_duplicate_video_rows_share_one_clip(tiny, test_split, tmp_path):
    """Two captions of one video: the video is embedded once and both captions count as its answers."""
    model, preprocess, tokenizer = tiny
    recs = _copy_records(test_split, tmp_path, 4)
    extra = {**recs[0], "caption": recs[0]["caption"] + " again", "key": "other"}
    _write_captions(tmp_path, [*recs, extra])
    report = evaluate(model, preprocess, tokenizer, tmp_path, rerank_k=2)
    assert report["data"] == {**report["data"], "videos": 4, "texts": 5}
    assert report["results"]["v2t"]["itc"]["all"]["n"] == 4


def test_corrupt_video_is_a_clear_error(tiny, test_split, tmp_path):
    from retrieval.errors import DecodeError

    model, preprocess, tokenizer = tiny
    recs = _copy_records(test_split, tmp_path, 3)
    (tmp_path / recs[1]["path"]).write_bytes(b"\x00" * 1000)
    _write_captions(tmp_path, recs)
    with pytest.raises(DecodeError):
        evaluate(model, preprocess, tokenizer, tmp_path)


def test_vtr_eval_cli_json_and_output(test_split, tmp_path):
    from indexer.cli import main
    from retrieval.checkpoints import save_checkpoint
    from retrieval.factory import create_model

    ckpt = save_checkpoint(create_model("viclip-tiny-test", pretrained="random"), tmp_path / "t.safetensors")
    args = ["eval", "--data", str(test_split), "--checkpoint", str(ckpt), "--rerank-k", "4", "--limit", "10"]
    res = CliRunner().invoke(main, [*args, "--json", "--output", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["results"]["t2v"]["itc"]["all"]["n"] == 10 and report["rerank_k"] == 4
    assert json.loads((tmp_path / "r.json").read_text()) == report
    res = CliRunner().invoke(main, ["eval", "--data", str(tmp_path), "--checkpoint", str(ckpt)])
    assert res.exit_code == 1 and "no captions.jsonl" in res.output


def test_vtr_fit_ranking_stores_a_fused_ranking_the_loader_and_eval_use(test_split, tmp_path):
    from indexer.cli import main
    from retrieval.checkpoints import save_checkpoint
    from retrieval.factory import create_model

    model = create_model("viclip-tiny-test", pretrained="random")
    model.match_head_trained = True
    ckpt = save_checkpoint(model, tmp_path / "t.safetensors")
    res = CliRunner().invoke(
        main, ["fit-ranking", "--data", str(test_split), "--checkpoint", str(ckpt), "--rerank-k", "8"]
    )
    assert res.exit_code == 0, res.output
    assert "match_weight" in res.output and "query bank:" in res.output
    res_fit = res
    loaded = create_model(None, pretrained=ckpt)
    assert loaded.ranking is not None and loaded.ranking.fitted_on["rerank_k"] == 8
    assert loaded.ranking.fitted_on["data"]["generated_with"]["seed"] == 11
    res = CliRunner().invoke(
        main, ["eval", "--data", str(test_split), "--checkpoint", str(ckpt), "--rerank-k", "8", "--json"]
    )
    report = json.loads(res.output)
    assert report["ranking"]["match_weight"] == loaded.ranking.match_weight
    # the query-bank mix is kept only when it raised R@1 on the fitting split (a random model: either way)
    banked = loaded.ranking.bank is not None
    assert ("query bank: beta" in res_fit.output) == banked
    assert report["default_ranking"] == ("fused_bank" if banked else "fused")
    assert set(report["results"]["t2v"]) == {"itc", "dsl", "match", "fused"} | ({"fused_bank"} if banked else set())


@pytest.mark.skipif(not SHIPPED.is_file(), reason="shipped weights not present")
def test_shipped_model_retrieves_on_a_fresh_split(test_split):
    from retrieval import create_model_and_transforms

    model, preprocess, tokenizer = create_model_and_transforms("viclip-tiny-synth")
    assert model.match_head_trained
    report = evaluate(model, preprocess, tokenizer, test_split, rerank_k=10)
    res = report["results"]
    chance = 100.0 / 40
    assert res["t2v"]["itc"]["all"]["R@1"] > 10 * chance
    assert res["v2t"]["itc"]["all"]["R@1"] > 10 * chance
    assert res["t2v"]["match"]["all"]["R@5"] > 80


@pytest.mark.skipif(not SHIPPED_EVAL.is_file(), reason="shipped eval report not present")
def test_shipped_eval_report_is_complete():
    report = json.loads(SHIPPED_EVAL.read_text())
    assert report["data"]["videos"] == 1000 and report["rerank_k"] == 64  # the service's rerank_k
    assert report["default_ranking"] == "fused_bank" and report["ranking"]["bank"]["beta"] > 0
    for direction in ("t2v", "v2t"):
        for method in ("itc", "dsl", "match", "fused", "fused_bank"):
            subsets = report["results"][direction][method]
            assert {"all", "binding", "direction_order", "static"} <= set(subsets)


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED_EVAL.is_file(), reason="shipped eval report not present")
def test_shipped_eval_report_matches_a_fresh_run(tmp_path):
    """Regenerate the documented test split and re-run `vtr eval`: the numbers must match exactly."""
    from indexer.cli import main

    shipped = json.loads(SHIPPED_EVAL.read_text())
    runner = CliRunner()
    gen = shipped["data"]["generated_with"]
    assert runner.invoke(main, ["synth", str(tmp_path), "--count", str(gen["count"]), "--seed", str(gen["seed"]),
                                "--split", gen["split"]]).exit_code == 0  # fmt: skip
    res = runner.invoke(main, ["eval", "--data", str(tmp_path), "--checkpoint", "viclip-tiny-synth", "--json"])
    assert res.exit_code == 0, res.output
    fresh = json.loads(res.output)
    assert fresh["data"]["captions_sha1"] == shipped["data"]["captions_sha1"]
    for direction, methods in shipped["results"].items():
        for method, subsets in methods.items():
            for subset, m in subsets.items():
                got = fresh["results"][direction][method][subset]
                np.testing.assert_allclose(got["R@1"], m["R@1"], atol=0.11, err_msg=f"{direction}/{method}/{subset}")
