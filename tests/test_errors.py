"""The one exit-code table: what a script calling `aibatch run` reads from the status."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibatch import errors
from aibatch.errors import exit_code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.OutputLocked("held by pid 12"), 4),
        (errors.InputError(Path("rows.csv"), "no id column", row=3, column="id"), 2),
        (errors.JobFileError("job.toml: prompt: missing"), 2),
        (errors.ModelFileError("models.toml"), 2),
        (errors.PriceFileError("prices.toml"), 2),
        (errors.TemplateError("line 2"), 2),
        (errors.SchemaError("schema: 'oneOf'"), 2),
        (errors.ColumnError("property 'id'"), 2),
        (errors.SchemaConflict("column price: int64, was string"), 2),
        (errors.RunStopped("key refused"), 3),
        (errors.OutputUnwritable("disk full"), 3),
        (errors.BudgetExhausted("spent"), 3),
        (errors.APIUnavailable("overloaded for 60 s"), 3),
        (errors.RunIncomplete("3 chunks failed"), 1),
        (errors.ChunkIncomplete(2, "timeout", attempts=6), 1),
        (errors.MissingAPIKey("no key"), 1),
        (errors.EstimateError("key refused"), 1),
        (RuntimeError("anything else"), 1),
        (ValueError("a plain one, raised past the checks"), 1),
    ],
)
def test_each_error_a_run_ends_with_has_one_exit_code(error: BaseException, code: int) -> None:
    assert exit_code(error) == code


def test_an_input_error_names_the_file_row_and_column() -> None:
    error = errors.InputError(Path("data/rows.csv"), "the id is empty", row=7, column="id")
    assert str(error) == "data/rows.csv, row 7, column 'id': the id is empty"
    assert isinstance(error, ValueError)  # callers that catch ValueError still catch it
