"""``vtr index``, ``vtr status``, ``vtr texts add``, ``vtr db upgrade``: thin wrappers over the indexer."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from indexer.cli import main
from retrieval.settings import flag_help, get_setting


def _home_options(f):
    f = click.option("--db", default=None, help=flag_help("db"))(f)
    f = click.option("--home", default=None, type=click.Path(file_okay=False), help=flag_help("home"))(f)
    return f


def _model_options(f):
    f = click.option(
        "--checkpoint", default=None, type=click.Path(dir_okay=False, exists=True), help=flag_help("checkpoint")
    )(f)
    f = click.option("--model", default=None, help=flag_help("model"))(f)
    return f


def _quiet_logging(verbose: bool) -> None:
    import logging

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


# click types for settings whose values are paths or choices (the rest follow their IndexOptions field's kind)
_PATH_TYPES = {
    "home": click.Path(file_okay=False),
    "checkpoint": click.Path(dir_okay=False, exists=True),
    "index_executor": click.Choice(["local", "ray"], case_sensitive=False),
}


def setting_options(f):
    """The ``vtr index`` options, one per :class:`~indexer.options.IndexOptions` field with a setting.

    Flag, help text and environment variable come from the settings table, the type and lower
    bound from the field, so an option is declared once (see :mod:`indexer.options`).
    """
    from indexer.options import IndexOptions

    for fld in reversed(IndexOptions.setting_fields()):
        s = get_setting(fld.metadata["setting"])
        kind, lo = fld.metadata["kind"], fld.metadata["min"]
        if s.name in _PATH_TYPES:
            type_ = _PATH_TYPES[s.name]
        elif kind is float:
            type_ = click.FloatRange(min=lo)
        elif kind is int:
            type_ = click.IntRange(min=lo)
        else:
            type_ = click.STRING
        f = click.option(s.flag, fld.name, type=type_, default=None, help=flag_help(s.name))(f)
    return f


@main.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@setting_options
@click.option("--prune", is_flag=True, help="Remove files from the index that no longer exist under the given folders.")
@click.option(
    "--within",
    multiple=True,
    type=click.Path(file_okay=False),
    help="Index only files whose real path (links resolved) is inside DIR (repeatable); links leading out are skipped.",
)
@click.option("--device", default=None, help="Model device: cpu, cuda, cuda:1 ... (default: cuda when available).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--verbose", "-v", is_flag=True, help="Log what the indexer does.")
def index_cmd(paths, prune, within, device, as_json, quiet, verbose, **settings) -> None:
    """Index the videos in PATHS (folders, searched recursively, or files) into the data home.

    Unchanged files are skipped, changed ones indexed again. Exit code 0: every file is indexed or
    unchanged; 1: some files failed (the rest is committed); 2: usage error.
    """
    from indexer.pipeline import IndexOptions, check_model_name, run_index

    _quiet_logging(verbose)
    check_model_name(settings["model"], settings["checkpoint"])
    opts = IndexOptions(
        paths=list(paths),
        prune=prune,
        within=list(within) or None,
        device=device,
        progress=not quiet and not as_json,
        **settings,
    )
    try:
        report = run_index(opts)
    except KeyboardInterrupt:
        click.echo("interrupted: files finished so far are committed; run the same command to continue", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1))
    else:
        _print_report(report)
    sys.exit(report.exit_code)


def _print_report(report) -> None:
    click.echo(
        f"indexed {len(report.indexed)} file(s), {report.clips} clips in {report.seconds:.1f} s "
        f"({report.clips_per_second:.1f} clips/s); {report.unchanged} unchanged; {len(report.failed)} failed"
    )
    if report.pruned:
        click.echo(f"pruned {len(report.pruned)} file(s) that no longer exist")
    if report.requeued:
        click.echo(f"re-indexed {len(report.requeued)} file(s) whose stored vectors were missing")
    click.echo(f"index: {report.vectors} vectors ({report.index_factory}), model {report.model}")
    stages = _stages_line(report)
    if stages:
        click.echo(stages)
    if report.warnings:
        click.echo("partly readable:")
        for w in report.warnings:
            click.echo(f"  {w['path']}: {w['warning']}")
    if report.missing:
        click.echo(f"{len(report.missing)} indexed file(s) no longer exist (run with --prune to remove them):")
        for p in report.missing[:20]:
            click.echo(f"  {p}")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} link(s) leading outside --within:")
        for s in report.skipped[:20]:
            click.echo(f"  {s['path']}: {s['reason']}")
    if report.failed:
        click.echo("failed:", err=True)
        for f in report.failed:
            click.echo(f"  {f['path']}: {f['reason']}", err=True)


def _stages_line(report) -> str:
    """``stages (executor): decode 3.1 clips/s x 2 workers, embed 410.2 clips/s, write 2100.0 clips/s``."""
    parts = []
    for name, st in report.stage_rates().items():
        if not st["clips_per_busy_second"]:
            continue
        workers = f" x {st['workers']} workers" if st["workers"] and st["workers"] > 1 else ""
        parts.append(f"{name} {st['clips_per_busy_second']:.1f} clips/s{workers}")
    return f"stages ({report.executor}, per busy worker): " + ", ".join(parts) if parts else ""


@main.command("status")
@_home_options
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON: videos, clips, vectors, texts, failed [{path, reason}], ..."
)
def status_cmd(home, db, as_json) -> None:
    """Counts of indexed videos, clips, vectors and texts, and the files that failed."""
    from indexer.status import collect_status
    from retrieval.home import DataHome, find_home

    st = collect_status(DataHome(find_home(home)), db)
    if as_json:
        click.echo(json.dumps(st, indent=1))
        return
    hours = st["duration"] / 3600
    click.echo(f"home      {st['home']}")
    click.echo(f"model     {st['model'] or '-'}")
    n_libs = len(st["libraries"])
    click.echo(f"videos    {st['videos']} ({n_libs} {'library' if n_libs == 1 else 'libraries'}, {hours:.2f} h)")
    click.echo(f"clips     {st['clips']}")
    click.echo(f"vectors   {st['vectors']}" + (f" ({st['index_factory']})" if st["index_factory"] else ""))
    if st.get("index_factory"):
        click.echo(f"index     {_index_line(st)}")
    click.echo(f"texts     {st['texts']} ({st['text_vectors']} vectors)")
    if "token_rows_live" in st:
        click.echo(
            f"tokens    {st['token_rows_live']} live rows, {st['token_rows_dead']} dead (dropped at the next run)"
        )
    click.echo(f"failed    {len(st['failed'])}")
    for f in st["failed"]:
        click.echo(f"  {f['path']}: {f['reason']}")
    if st["warnings"]:
        click.echo(f"partly readable {len(st['warnings'])}")
        for w in st["warnings"]:
            click.echo(f"  {w['path']}: {w['warning']}")


@main.group("texts")
def texts_group() -> None:
    """The caption corpus searched by video->text queries."""


@texts_group.command("add")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_home_options
@_model_options
@click.option("--format", "fmt", type=click.Choice(["txt", "jsonl", "csv", "tsv"]), default=None,
              help="File format (default: from the extension).")  # fmt: skip
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=256, show_default=True, help="Texts per forward pass."
)
@click.option("--device", default=None, help="Model device (default: cuda when available).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def texts_add_cmd(file: Path, home, db, model, checkpoint, fmt, batch_size, device, as_json) -> None:
    """Embed the captions in FILE (.txt lines, .jsonl, .csv) into the text index."""
    import migrations
    from indexer.options import check_model_name
    from indexer.texts import read_texts
    from retrieval.catalog import Catalog
    from retrieval.factory import default_model_name, load_model
    from retrieval.home import DataHome
    from retrieval.lock import HomeLock
    from retrieval.settings import resolve
    from retrieval.text_corpus import add_texts

    check_model_name(model, checkpoint)
    items = read_texts(file, fmt)
    h = DataHome(home).ensure()
    with HomeLock(h.lock_path, holder="vtr index"):
        url = h.db_url(db)
        migrations.upgrade(url)
        catalog = Catalog(url)
        try:
            checkpoint = resolve("checkpoint", checkpoint)
            m, _, tokenizer = load_model(default_model_name(model, checkpoint), checkpoint, device)
            rep = add_texts(items, source=str(file.resolve()), home=h, catalog=catalog, model=m, tokenizer=tokenizer,
                            batch_size=batch_size)  # fmt: skip
        finally:
            catalog.close()
    if as_json:
        click.echo(json.dumps(rep.to_dict(), indent=1))
    else:
        click.echo(
            f"added {rep.added} text(s) from {file.name} ({rep.duplicates} duplicate or already present); "
            f"corpus: {rep.total} texts, {rep.vectors} vectors"
        )


@main.group("db")
def db_group() -> None:
    """The catalog database schema."""


@db_group.command("upgrade")
@_home_options
@click.option("--revision", default="head", show_default=True, help="Target Alembic revision.")
def db_upgrade_cmd(home, db, revision) -> None:
    """Create or migrate the catalog schema (SQLite in the data home, or --db URL)."""
    import migrations
    from retrieval.catalog import redact
    from retrieval.home import DataHome

    h = DataHome(home)
    url = h.db_url(db)
    if url.startswith("sqlite:///"):
        h.ensure()
    before = migrations.current(url)
    after = migrations.upgrade(url, revision)
    state = "already at" if before == after else f"upgraded from {before or 'empty'} to"
    click.echo(f"catalog {redact(url)}: {state} revision {after}")


@db_group.command("current")
@_home_options
def db_current_cmd(home, db) -> None:
    """Print the catalog's schema revision and the newest one this version knows."""
    import migrations
    from retrieval.home import DataHome

    url = DataHome(home).db_url(db)
    click.echo(f"current {migrations.current(url) or 'empty'}; head {migrations.head()}")


def _index_line(st: dict) -> str:
    """`vtr status`'s index line: type, search parameters and the recall measured at build time."""
    params = ", ".join(f"{k} {v}" for k, v in (st.get("index_search") or {}).items())
    r = st.get("index_recall")
    if r:
        measured = f"recall@{r['k']} {r['value']:.3f} (target {r['target']:.2f}, {r['queries']} own vectors as queries)"
    else:
        measured = "recall not measured (built before vtr measured it; rebuild to measure)"
    return f"{st['index_factory']}" + (f", {params}" if params else "") + f"; {measured}"
