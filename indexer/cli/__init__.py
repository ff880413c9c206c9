"""The ``vtr`` command: a thin click group over library functions.

Subcommands live in small modules next to this one; commands contributed by other top-level
packages (the web app's ``serve`` and ``search``) are discovered through the ``vtr.commands``
entry-point group, so ``indexer`` never imports ``webapp``.
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from retrieval.errors import VTRError


class VTRGroup(click.Group):
    """Turns every ``VTRError`` into a one-line message and exit code 1 instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VTRError as exc:
            click.echo(f"error: {exc.message}", err=True)
            sys.exit(1)
        except Exception as exc:
            from sqlalchemy.exc import SQLAlchemyError  # late: most commands never open the catalog

            if not isinstance(exc, SQLAlchemyError):
                raise
            # a damaged or unreachable catalog (``file is not a database``): one line, not a traceback
            reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
            click.echo(f"error: the catalog database failed: {reason}", err=True)
            sys.exit(1)


@click.group(cls=VTRGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="video-text-retrieval")
def main() -> None:
    """Video-text retrieval: index video libraries and search them with natural language."""


def _register_builtin() -> None:
    from indexer.cli import model_cmds  # noqa: F401  (modules attach their commands to `main`)

    for mod in ("index_cmds", "train_cmds"):
        try:
            __import__(f"indexer.cli.{mod}")
        except ModuleNotFoundError as exc:  # a module not written yet must not break the CLI
            if exc.name != f"indexer.cli.{mod}":
                raise


def _register_plugins() -> None:
    for ep in entry_points(group="vtr.commands"):
        if ep.name in main.commands:
            continue
        try:
            main.add_command(ep.load(), ep.name)
        except ImportError as exc:  # a broken optional plugin must not take the whole CLI down
            click.echo(f"warning: command {ep.name!r} unavailable: {exc}", err=True)


_register_builtin()
_register_plugins()
