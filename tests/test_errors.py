"""The one exit-code table: what a script calling `aibatch run` reads from the status."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibatch import errors
from aibatch.errors import exit_code

BAD_INPUT = [
    errors.InputError(Path("rows.csv"), "no id column", row=3, column="id"),
    *(kind("the file at fault") for kind in (errors.JobFileError, errors.ModelFileError,
      errors.PriceFileError, errors.TemplateError, errors.SchemaError, errors.ColumnError,
      errors.SchemaConflict)),
]  # fmt: skip
STOPPED = [kind("why") for kind in (errors.RunStopped, errors.OutputUnwritable,
           errors.BudgetExhausted, errors.APIUnavailable)]  # fmt: skip
FAILED = [errors.RunIncomplete("3 chunks failed"), errors.ChunkIncomplete(2, "timeout", 6),
          errors.MissingAPIKey("no key"), errors.EstimateError("key refused"),
          RuntimeError("anything else"), ValueError("a plain one, past the checks")]  # fmt: skip


@pytest.mark.parametrize(
    ("error", "code"),
    [(errors.OutputLocked("held by pid 12"), 4), *((e, 2) for e in BAD_INPUT),
     *((e, 3) for e in STOPPED), *((e, 1) for e in FAILED)],
)  # fmt: skip
def test_each_error_a_run_ends_with_has_one_exit_code(error: BaseException, code: int) -> None:
    assert exit_code(error) == code


def test_an_input_error_names_the_file_row_and_column() -> None:
    error = errors.InputError(Path("data/rows.csv"), "the id is empty", row=7, column="id")
    assert str(error) == "data/rows.csv, row 7, column 'id': the id is empty"
    assert isinstance(error, ValueError)  # callers that catch ValueError still catch it
