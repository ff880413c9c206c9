"""README documents every setting and every `vtr` command and flag (datasette's test_docs habit).

The settings table between ``<!-- settings:start -->`` and ``<!-- settings:end -->`` is generated from
``retrieval.settings.SETTINGS``; after adding a setting, regenerate it with::

    .venv/bin/python -m tests.test_docs --write
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click
import pytest

from retrieval.settings import SETTINGS, Setting

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def _default(s: Setting) -> str:
    if s.name == "home":  # computed per machine
        return "`$XDG_DATA_HOME/vtr`, else `~/.local/share/vtr`"
    if s.default is None:
        return "unset"
    if isinstance(s.default, bool):
        return "`true`" if s.default else "`false`"
    if isinstance(s.default, float) and s.default.is_integer():
        return f"`{s.default:g}`"
    if isinstance(s.default, int):
        return f"`{s.default:_}`".replace("_", ",") if s.default >= 10_000 else f"`{s.default}`"
    return f"`{s.default}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    """The README section: one row per setting, in the order of the settings table."""
    rows = [
        "## Settings",
        "",
        "Every setting can be given as a command-line flag (on the commands that use it), as an environment",
        "variable, or by key: `retrieval.settings.resolve(key)` in Python and, upper-cased, in the config",
        "dict of `webapp.create_app({...})` for the ones the server reads. A flag beats the environment, which beats the default.",
        "",
        "| key | CLI flag | environment | default | what it does |",
        "|---|---|---|---|---|",
    ]
    for s in SETTINGS:
        flag = f"`{s.flag}`" if s.flag else "—"
        env = f"`{s.env}`" if s.env else "—"
        rows.append(f"| `{s.name}` | {flag} | {env} | {_cell(_default(s))} | {_cell(s.help)} |")
    return "\n".join(rows)


def readme_section(text: str) -> str:
    if START not in text or END not in text:
        raise AssertionError(f"README.md lacks the {START} ... {END} markers")
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def write_readme() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{settings_table()}\n{END}{tail}")


def _commands(group: click.Group, prefix: str = "vtr"):
    for name, cmd in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path)


def _flags(cmd: click.Command) -> list[str]:
    out = []
    for p in cmd.params:
        if isinstance(p, click.Option):
            for opt in [*p.opts, *p.secondary_opts]:
                if opt not in ("-h", "--help"):
                    out.append(opt)
    return out


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text()


def test_settings_table_is_generated_from_settings(readme):
    assert readme_section(readme) == settings_table(), "run: .venv/bin/python -m tests.test_docs --write"


def test_every_setting_is_documented(readme):
    section = readme_section(readme)
    for s in SETTINGS:
        assert f"`{s.name}`" in section, s.name
        if s.env:
            assert s.env in readme, s.env
        if s.flag:
            assert s.flag in readme, s.flag


def test_every_cli_command_and_flag_is_documented(readme):
    from indexer.cli import main

    missing = []
    for path, cmd in _commands(main):
        if cmd.hidden:
            continue
        if f"`{path}" not in readme and f"{path} " not in readme and f"{path}\n" not in readme:
            missing.append(path)
        for flag in _flags(cmd):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", readme):
                missing.append(f"{path} {flag}")
    assert not missing, "README.md does not mention: " + ", ".join(missing)


def test_web_commands_are_documented(readme):
    """`serve`, `search` and `demo` (also runnable as `python -m webapp.cli`) with all their flags."""
    from webapp.cli import demo, search, serve

    for name, cmd in (("serve", serve), ("search", search), ("demo", demo)):
        assert f"vtr {name}" in readme
        for flag in _flags(cmd):
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", readme), f"vtr {name} {flag}"


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme()
        print(f"updated the settings table in {README}")
    else:
        print(settings_table())
