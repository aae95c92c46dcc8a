"""One Prefect task run per chunk of tickets (never per ticket)."""

from __future__ import annotations

from typing import Any

from prefect import Task, task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import State, TaskRun

from aibatch import policy
from aibatch.engine import RunStopped, TicketProcessor


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
) -> dict[str, int]:
    """Send a chunk's unfinished tickets; fail (and be retried) if any stay unfinished."""
    report = await processor.process_chunk(tickets)
    return report.as_dict()
