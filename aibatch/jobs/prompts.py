"""A job's prompts over the input's rows: each row rendered through the job's template."""

from __future__ import annotations

from pathlib import Path

from aibatch.errors import InputError
from aibatch.jobs.templates import MissingValue, PromptTemplate
from aibatch.sources.loader import Rows, blank, load_rows, raise_all


def render_prompts(rows: Rows, template: PromptTemplate) -> list[str]:
    """Each row's prompt; InputError naming file, row and column for every row that lacks a
    value the template needs (a null or blank cell, and no default in the template)."""
    columns = sorted(template.columns & set(rows.frame.columns))
    names = {"text": rows.text_column}
    values = rows.frame[columns].to_dict("records") if columns else [{}] * len(rows.frame)
    problems: list[InputError] = []
    prompts: list[str] = []
    for row, record in enumerate(values, start=1):
        present = {str(k): v for k, v in record.items() if not blank(v)}
        try:
            prompts.append(template.render(present))
        except MissingValue as missing:
            column = names.get(missing.column, missing.column)
            problems.append(InputError(
                rows.path,
                f"empty or null {column} (the prompt needs it; a default in the template, "
                f'{{{{ {missing.column} | default("...") }}}}, would allow it)',
                row=row, column=column,
            ))  # fmt: skip
            prompts.append("")
    raise_all(rows.path, problems)
    return prompts


def load_job_rows(
    path: str | Path, template: PromptTemplate, id_column: str, text_column: str = "text"
) -> tuple[Rows, list[str]]:
    """The rows a job's template reads, validated, and each row's prompt (`text_column`:
    the input column read as `text`, for the built-in jobs)."""
    rename = {text_column: "text"} if text_column != "text" else {}
    rows = load_rows(path, id_column, template.columns, rename)
    return rows, render_prompts(rows, template)
