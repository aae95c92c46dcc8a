"""When Prefect retries a chunk: only while a retry could still send something."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from aibatch.errors import ChunkIncomplete, OutputUnwritable, RunStopped
from aibatch.tasks.chunks import process_chunk, retry_unless_stopped


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (ChunkIncomplete(3, "529", attempts=6, retryable=2), True),
        (ChunkIncomplete(3, "529", attempts=6, retryable=0), False),  # every attempt spent
        (RunStopped("the key was refused"), False),
        (OutputUnwritable("disk full"), False),
        (ConnectionResetError("the Prefect server went away"), True),
    ],
)
def test_a_chunk_is_retried_only_if_a_retry_could_send_something(
    error: BaseException, retried: bool
) -> None:
    state = cast(Any, SimpleNamespace(data=error))
    assert retry_unless_stopped(cast(Any, process_chunk), cast(Any, None), state) is retried
