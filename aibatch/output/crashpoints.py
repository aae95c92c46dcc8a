"""Named instants inside a commit where a test can make this process die, as kill -9 would.

A SIGKILL sent from outside lands wherever the process happens to be; the narrow windows
of a commit (between a file's rename and the next, before a journal segment is removed)
are almost never hit that way. So the commit path names them, and a chaos test arms one:

    AIBATCH_CRASH_AT=commit:results-published      die the first time it is reached
    AIBATCH_CRASH_AT=publish:renamed@3             die the third time

In-process tests arm a point with `armed()`, which raises `SimulatedCrash` there instead.
Unarmed (always, outside tests), `reached()` is one dict lookup on an empty dict.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator

ENVIRONMENT_VARIABLE = "AIBATCH_CRASH_AT"

# Every point the code names, so a typo in a test fails loudly instead of never firing.
COMMIT_POINTS = frozenset({
    "publish:staged",  # a Parquet file is written and fsynced in staging, not yet renamed
    "publish:renamed",  # one file renamed into the dataset, its directory not yet fsynced
    "commit:results-published",  # results are in the dataset, failures not yet
    "commit:published",  # both datasets written, the journal segments not yet removed
})  # fmt: skip
BATCH_POINTS = frozenset({
    "batch:recorded",  # a batch submission is in the ledger, the batch not yet created
    "batch:created",  # the API created the batch, its id not yet in the ledger
    "batch:collected",  # a batch's results are published, the ledger not yet told
})  # fmt: skip
# Reached only when a json job's schema grows (test_answer_columns.py arms it).
SCHEMA_POINTS = frozenset({
    "widen:replaced",  # an older file rewritten with a new column, the others not yet
})  # fmt: skip
POINTS = COMMIT_POINTS | BATCH_POINTS | SCHEMA_POINTS


class SimulatedCrash(BaseException):
    """Raised at an armed point by in-process tests; a BaseException so no handler eats it."""


def _kill_this_process(point: str) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _parse(spec: str) -> dict[str, int]:
    armed: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        point, _, nth = item.partition("@")
        if point not in POINTS:
            raise ValueError(f"{ENVIRONMENT_VARIABLE}: unknown crash point {point!r}")
        armed[point] = int(nth or "1")
    return armed


_armed: dict[str, int] = _parse(os.environ.get(ENVIRONMENT_VARIABLE, ""))
_on_crash: Callable[[str], None] = _kill_this_process


def reached(point: str) -> None:
    """Die here if a test armed this point (and this is the time it asked for)."""
    left = _armed.get(point)
    if left is None:
        return
    if left > 1:
        _armed[point] = left - 1
        return
    del _armed[point]
    _on_crash(point)


def _raise_simulated_crash(point: str) -> None:
    raise SimulatedCrash(point)


@contextlib.contextmanager
def armed(point: str, nth: int = 1) -> Iterator[None]:
    """Raise SimulatedCrash the `nth` time `point` is reached inside this block."""
    global _on_crash
    if point not in POINTS:
        raise ValueError(f"unknown crash point {point!r}")
    _armed[point] = nth
    _on_crash = _raise_simulated_crash
    try:
        yield
    finally:
        _armed.pop(point, None)
        _on_crash = _kill_this_process
