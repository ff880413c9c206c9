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


def run() -> None:
    """The ``vtr`` console script: :func:`main`, then an exit that skips tearing torch down.

    Why: once torch and open_clip are imported, the interpreter's final clean-up of their modules
    takes ~1 s of one core (measured: 0.4 s for torch alone, 0.9-1.1 s with open_clip; 0.02 s for
    faiss, PyAV and numpy) after the command's work is done and its output written: 7% of indexing
    6 minutes of video. Everything a command owns is closed by then (catalog sessions committed, files
    replaced atomically, worker pools joined), so exit handlers run, output is flushed and the process
    ends without the teardown. Without torch, or with threads still running, it exits normally.
    Tests call :func:`main` in-process and never reach this.
    """
    import atexit
    import logging
    import os
    import threading

    try:
        main(standalone_mode=True)
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    if "torch" not in sys.modules or threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`vtr search ... | head`): nothing left to deliver
            pass
    os._exit(code)


def _exit_status(code) -> int:
    """sys.exit's argument as a process status: None is 0, a message is printed and is 1."""
    if code is None or isinstance(code, int):
        return int(code or 0)
    print(code, file=sys.stderr)
    return 1
