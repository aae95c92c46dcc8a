"""The README's table of `aibatch run` options is the CLI's: every option, no other, and the
same defaults."""

from __future__ import annotations

import re
from typing import Any

import typer

from aibatch.app.cli import app
from tests.helpers import ROOT

TABLE_INTRO = "`aibatch run --help` lists every option:"


def readme_table() -> dict[str, str]:
    """Each option the README's table names, with its default column (cells naming several
    options, like `--limit`, `--sample`, give each the same default)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = text[text.index(TABLE_INTRO) :].splitlines()[2:]
    rows: dict[str, str] = {}
    for line in lines[2:]:  # past the header and its rule
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for name in re.findall(r"`([^`]+)`", cells[0]):
            rows[name.split("/")[0]] = cells[-1]  # --progress/--no-progress: --progress
    return rows


def cli_options() -> dict[str, object]:
    command: Any = typer.main.get_command(app)  # a click group (typer's own click)
    options: dict[str, object] = {}
    for param in command.commands["run"].params:
        if param.param_type_name == "argument":
            options[param.name.upper()] = param.default
        else:  # a flag pair (--progress/--no-progress) by its first name
            options[param.opts[0]] = param.default
    options.pop("--help", None)
    return options


def test_the_readme_table_names_every_option_of_aibatch_run_and_no_other() -> None:
    assert sorted(readme_table()) == sorted(cli_options())


def test_the_readme_table_gives_each_option_the_clis_default() -> None:
    table = readme_table()
    for name, default in cli_options().items():
        if default is None or isinstance(default, bool):
            continue  # described in words ("none", "the job's", "on")
        shown = table[name].replace("`", "").replace(",", "")
        value = f"{default:g}" if isinstance(default, float) else str(default)
        assert value in shown, f"{name}: the CLI's default is {value}, the README says {shown}"
