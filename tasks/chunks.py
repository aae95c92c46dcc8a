"""One Prefect task run per chunk of rows (never per row)."""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.asyncio import concurrency
from prefect.runtime import task_run as this_task_run

from aibatch.engine.processor import RowProcessor
from aibatch.errors import ChunkIncomplete, RunStopped
from aibatch.runs import orchestration


def retry_unless_stopped(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed chunk, unless the run was stopped (bad key, spend cap, outage) or its
    unfinished rows have used every attempt (a retry would send nothing)."""
    error = state.data
    if isinstance(error, ChunkIncomplete):
        return error.retryable > 0
    return not isinstance(error, RunStopped)


@task(
    name="process-chunk",
    task_run_name="chunk {index} of {count}: {source}",
    tags=[orchestration.CHUNK_LIMIT_TAG],
    retries=orchestration.CHUNK_RETRIES,
    retry_delay_seconds=orchestration.CHUNK_RETRY_DELAYS_S,
    retry_condition_fn=retry_unless_stopped,
    cache_policy=NONE,
    persist_result=False,
)
async def process_chunk(
    processor: RowProcessor,
    rows: list[tuple[str, str]],
    index: int,
    count: int,
    source: str,
    width: int | None = None,
) -> dict[str, int]:
    """Send a chunk's unfinished rows; fail (and be retried) if any stay unfinished.

    Each run of the chunk may spend a row's attempts only up to its share of the row's one
    budget (`policy.attempt_cap`): Prefect's retries never multiply them.
    With `width`, the chunk first takes that many slots of the in-flight limit shared by
    every run and worker, holds them while it runs and sends no more than that at once.
    """
    chunk_run = max(0, this_task_run.run_count - 1)  # 1 on the first run
    retries = orchestration.CHUNK_RETRIES
    if width is None:
        report = await processor.process_chunk(rows, None, chunk_run, retries)
    else:
        async with concurrency(orchestration.IN_FLIGHT_LIMIT_NAME, occupy=width, strict=True):
            report = await processor.process_chunk(rows, width, chunk_run, retries)
    return report.as_dict()
