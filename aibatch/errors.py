"""Every error a run can end with, and the one table that maps them to exit codes.

A leaf module: it imports nothing from aibatch, so any layer raises from here and the app
turns what reaches it into an exit code through `exit_code` alone. Errors that never leave
the module raising them (a row's model output off-shape, one model's failed count) stay
where they are raised.
"""

from __future__ import annotations

import os
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # the run ended with rows unfinished or failed: a re-run continues
EXIT_BAD_INPUT = 2  # the input, job, options or output to fix; nothing was sent
EXIT_STOPPED = 3  # nothing more could succeed (key refused, spend cap, budget, outage)
EXIT_LOCKED = 4  # another run holds the output


class BadInput(ValueError):
    """Something the user gave cannot be used: fix it and run again (exit 2)."""


class InputError(BadInput):
    """Input rows that aibatch refuses, with where the problem is (file, row, column)."""

    def __init__(
        self,
        path: Path | str | os.PathLike[str],
        message: str,
        *,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        where = str(path)
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.row = row
        self.column = column


class JobFileError(BadInput):
    """A job file that cannot be used, naming the file and the key at fault."""


class ModelFileError(BadInput):
    """A model table file that cannot be read, with the file and the entry at fault."""


class PriceFileError(BadInput):
    """A price file that cannot be read, with the file and the entry at fault."""


class TemplateError(BadInput):
    """A prompt template that cannot be used (syntax), with the line at fault."""


class SchemaError(BadInput):
    """A JSON Schema that structured outputs cannot take."""


class ColumnError(BadInput):
    """A schema whose properties cannot be columns, naming the property."""


class SchemaConflict(BadInput):
    """A run would store a column with another type than the dataset already holds."""


class OutputLocked(RuntimeError):
    """Another run holds the output directory's lock for this job (exit 4)."""


class RunStopped(Exception):
    """Nothing more can succeed (bad key, spend cap): the whole run stops (exit 3)."""


class OutputUnwritable(RunStopped):
    """The output directory refused a write (disk full, read-only): retrying cannot help."""

    @classmethod
    def from_error(cls, error: OSError, what: str) -> OutputUnwritable:
        where = f" ({error.filename})" if error.filename else ""
        return cls(
            f"cannot write {what}{where}: {error.strerror or error}. Free space (or fix the "
            "output directory) and run again: what is already journaled is published then"
        )


class LeaseLost(RunStopped):
    """This run went too long without renewing its lease on a bucket's output, and another
    run took the output over: it must publish nothing more."""


class BudgetExhausted(RunStopped):
    """The next request could take the spend past the cap."""


class APIUnavailable(RunStopped):
    """The API answered nothing but overload, server or connection errors for the whole
    outage deadline: the run stops, with what was answered saved."""


class MissingAPIKey(RuntimeError):
    """No API key where the run looked for one (environment, Secret block)."""


class ChunkIncomplete(Exception):
    """Some rows of a chunk are still unfinished after their attempts. `retryable` of them
    have attempts left for a retry of the chunk; the others have used their whole budget,
    and only a re-run sends them again."""

    def __init__(self, unfinished: int, last_error: str, attempts: int, retryable: int = 0) -> None:
        if retryable:
            next_step = f"a retry of the chunk sends the {retryable} with attempts left"
        else:
            next_step = "run the same command again to send them again"
        super().__init__(
            f"{unfinished} row(s) still unfinished, with at most {attempts} attempt(s) "
            f"each (last error: {last_error}); {next_step}"
        )
        self.unfinished = unfinished
        self.retryable = retryable


class RunIncomplete(RuntimeError):
    """The run ended with rows unfinished, every row failed, or shards that did not
    complete; everything done is saved and a re-run continues (exit 1)."""


class BatchGone(RuntimeError):
    """A batch in the ledger that the API no longer knows."""


class EstimateError(RuntimeError):
    """Nothing can be estimated (the API refused the key, say)."""


class LimitMissing(RuntimeError):
    """A Prefect concurrency or rate limit aibatch needs could not be read or set."""


# The one table: the first entry an error is an instance of gives its exit code; any other
# error exits EXIT_FAILED. Order matters where classes nest.
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (OutputLocked, EXIT_LOCKED),
    (BadInput, EXIT_BAD_INPUT),
    (RunStopped, EXIT_STOPPED),
)


def exit_code(error: BaseException) -> int:
    """The process exit code a run that ended with `error` reports."""
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_FAILED
