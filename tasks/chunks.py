"""One Prefect task run per chunk of tickets (never per ticket)."""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import State, TaskRun
from prefect.concurrency.asyncio import concurrency

from aibatch.engine import policy
from aibatch.engine.processor import RunStopped, TicketProcessor


def retry_unless_stopped(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a failed chunk, unless the run was stopped (bad key, spend cap)."""
    return not isinstance(state.data, RunStopped)


@task(
    name="process-chunk",
    task_run_name="chunk {index} of {count}: {source}",
    tags=[policy.CHUNK_LIMIT_TAG],
    retries=policy.CHUNK_RETRIES,
    retry_delay_seconds=policy.CHUNK_RETRY_DELAYS_S,
    retry_condition_fn=retry_unless_stopped,
    cache_policy=NONE,
    persist_result=False,
)
async def process_chunk(
    processor: TicketProcessor,
    tickets: list[tuple[str, str]],
    index: int,
    count: int,
    source: str,
    width: int | None = None,
) -> dict[str, int]:
    """Send a chunk's unfinished tickets; fail (and be retried) if any stay unfinished.

    With `width`, the chunk first takes that many slots of the in-flight limit shared by
    every run and worker, holds them while it runs and sends no more than that at once.
    """
    if width is None:
        report = await processor.process_chunk(tickets)
    else:
        async with concurrency(policy.IN_FLIGHT_LIMIT_NAME, occupy=width, strict=True):
            report = await processor.process_chunk(tickets, width)
    return report.as_dict()
