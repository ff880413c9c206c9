"""``vtr models``: what architectures this installation knows."""

from __future__ import annotations

import click

from indexer.cli import main


@main.command("models")
def models_cmd() -> None:
    """List the registered model architectures."""
    from retrieval.factory import list_models

    for name in list_models():
        click.echo(name)
