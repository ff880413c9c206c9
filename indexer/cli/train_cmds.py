"""``vtr synth``, ``vtr train``, ``vtr eval``: the synthetic benchmark, training and evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import click

from indexer.cli import main


@main.command("synth")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--count", "-n", type=click.IntRange(min=1), default=1000, show_default=True, help="Clips to generate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same clips and captions.")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True,
              help="test/val: unique captions incl. held-out combinations; train: hard-negative twins, no held-out.")  # fmt: skip
@click.option("--long", "long_", is_flag=True, help="Multi-event videos with ground-truth event times.")
def synth_cmd(out: Path, count: int, seed: int, split: str, long_: bool) -> None:
    """Generate synthetic H.264 clips and OUT/captions.jsonl."""
    from retrieval.synth import generate

    path = generate(out, count, seed=seed, split=split, long=long_, progress=True)
    click.echo(f"wrote {count} clips and {path}")


@main.command("train")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Training config JSON (see retrieval/train_configs/).")  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue from the run's .state.pt file if there is one.")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the config's step count.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Override the output checkpoint path.")  # fmt: skip
@click.option("--data", type=click.Path(file_okay=False, path_type=Path), default=None, help="Override the training data directory.")  # fmt: skip
@click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: the config's).")
@click.option("--stop-at", type=click.IntRange(min=1), default=None,
              help="Stop at this step, keeping only the resume state (run long jobs in slices).")  # fmt: skip
@click.option("--prepare-only", is_flag=True,
              help="Only generate the data (if missing) and build its frame cache, then exit.")  # fmt: skip
def train_cmd(config_path: Path, resume: bool, steps, output, data, device, stop_at, prepare_only: bool) -> None:
    """Train a model (VTC + VTM) and write a project checkpoint."""
    import logging

    from retrieval.training import TrainCfg, train
    from retrieval.training.trainer import prepare

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = TrainCfg.from_json(config_path)
    for name, value in (("steps", steps), ("output", output), ("data", data), ("device", device)):
        if value is not None:
            setattr(cfg, name, str(value) if isinstance(value, Path) else value)
    if prepare_only:
        records, frames = prepare(cfg)
        click.echo(f"prepared {len(records)} clips in {cfg.data} (frame cache {tuple(frames.shape)})")
        return
    path = train(cfg, resume=resume, progress=True, stop_at=stop_at)
    click.echo(f"wrote {path}" if path else f"stopped at step {stop_at}; continue with --resume")


@main.command("eval")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Directory with captions.jsonl and the videos it names (e.g. from `vtr synth`).")  # fmt: skip
@click.option("--checkpoint", required=True, help="Project .safetensors, or a model name to use its shipped weights.")
@click.option("--rerank-k", type=click.IntRange(min=0), default=None,
              help="Candidates the matching head re-ranks per query (0: no re-ranking); default: the search "
                   "service's rerank_k setting, so the report is what the service ranks.")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--limit", type=click.IntRange(min=2), default=None, help="Only the first N records.")
@click.option("--json", "as_json", is_flag=True, help="Print the full report as JSON.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the JSON report here.")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
def eval_cmd(
    data_dir: Path, checkpoint: str, rerank_k: int, batch_size: int, limit, as_json: bool, output, threads
) -> None:
    """Text->video and video->text recall (ITC, DSL, re-ranked) overall and per subset."""
    import torch

    from retrieval.evaluation import evaluate, format_table
    from retrieval.factory import create_model_and_transforms, list_models

    if threads:
        torch.set_num_threads(threads)
    if checkpoint in list_models():
        model, preprocess, tokenizer = create_model_and_transforms(checkpoint)
    else:
        model, preprocess, tokenizer = create_model_and_transforms(None, pretrained=checkpoint)
    if rerank_k is None:
        from retrieval.settings import resolve

        rerank_k = int(resolve("rerank_k"))
    report = evaluate(model, preprocess, tokenizer, data_dir, rerank_k=rerank_k, batch_size=batch_size,
                      limit=limit, progress=not as_json)  # fmt: skip
    if output is None and not as_json and report.get("ranking"):
        click.echo(f"default ranking: {report['default_ranking']} (match_weight {report['ranking']['match_weight']})")
    report["checkpoint"] = Path(checkpoint).name
    text = json.dumps(report, indent=1)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    click.echo(text if as_json else format_table(report))


@main.command("fit-ranking")
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A held-out captioned split (e.g. `vtr synth --split val`), never the test split.")  # fmt: skip
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Project .safetensors to fit; the result is stored in its metadata.")  # fmt: skip
@click.option("--rerank-k", type=click.IntRange(min=1), default=None,
              help="Candidates per query to fit on; default: the search service's rerank_k setting.")  # fmt: skip
@click.option("--min-head-gain", type=click.FloatRange(min=0.0), default=None,
              help="Mean R@1 points the matching head must add to get a weight (default 1.0: its pass is most of a re-ranked query's cost).")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch CPU threads.")
def fit_ranking_cmd(data_dir: Path, checkpoint: Path, rerank_k: int, min_head_gain, threads) -> None:
    """Fit the default ranking (ITC + head fusion, and its query-bank mix) and match-probability calibration into a checkpoint."""
    import torch

    from retrieval.calibration import embed_in_checkpoint
    from retrieval.evaluation import fit_split_ranking, score_split
    from retrieval.factory import create_model_and_transforms

    if threads:
        torch.set_num_threads(threads)
    if rerank_k is None:
        from retrieval.settings import resolve

        rerank_k = int(resolve("rerank_k"))
    model, preprocess, tokenizer = create_model_and_transforms(None, pretrained=checkpoint)
    split = score_split(model, preprocess, tokenizer, data_dir, rerank_k=rerank_k, progress=True)
    params = fit_split_ranking(model, split, min_head_gain=min_head_gain)
    embed_in_checkpoint(checkpoint, params)
    r1 = params.fitted_on["r1_by_match_weight"]
    click.echo(f"match_weight {params.match_weight} (mean R@1 {r1[str(params.match_weight)]} vs head alone "
               f"{r1[str(max(map(float, r1)))]} and ITC alone {r1['0.0']}); written to {checkpoint}")  # fmt: skip
    bank = params.bank
    if bank is None:
        click.echo(f"query bank: not used ({params.fitted_on.get('bank', 'no bank')})")
    else:
        click.echo(f"query bank: beta {bank.beta}, weight {bank.weight}, match_weight {bank.match_weight} "
                   f"(mean R@1 {params.fitted_on['r1_bank']} vs {params.fitted_on['r1_plain']} without)")  # fmt: skip


@main.command("train-head")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Head training config JSON (see retrieval/train_configs/*-head.json).")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Override the config's step count.")
def train_head_cmd(config_path: Path, steps) -> None:
    """Stage 2: train the matching head on frozen towers with hard negatives mined from the whole split."""
    import logging

    from retrieval.training.head import HeadTrainCfg, train_head

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = HeadTrainCfg.from_json(config_path)
    if steps is not None:
        cfg.steps = steps
    click.echo(f"wrote {train_head(cfg)}")
