"""Thin Prefect tasks around the batch runner: one task run per batch, never per row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect import Task, task
from prefect.cache_policies import NONE
from prefect.client.schemas.objects import State, TaskRun

from aibatch.engine.backend import BatchStatus
from aibatch.engine.batches import BatchRequest, BatchRunner, CollectReport, Submission
from aibatch.errors import BatchGone
from aibatch.tasks.chunks import retry_unless_stopped


def retry_unless_stopped_or_gone(
    task: Task[..., Any], task_run: TaskRun, state: State[Any]
) -> bool:
    """Polling a batch the API no longer has cannot succeed either."""
    return retry_unless_stopped(task, task_run, state) and not isinstance(state.data, BatchGone)


# Every batch task: retried unless the run was stopped (a full disk, a refused key); its
# inputs and result never cached or stored on the server.
BATCH_TASK: dict[str, Any] = {
    "retry_condition_fn": retry_unless_stopped,
    "cache_policy": NONE,
    "persist_result": False,
}


@task(
    name="submit-batch",
    task_run_name="submit batch of {count} requests (round {round_})",
    retries=2,
    retry_delay_seconds=[10.0, 30.0],
    **BATCH_TASK,
)
async def submit_batch(
    runner: BatchRunner,
    group: Sequence[BatchRequest],
    round_: int,
    count: int,
    claimed: set[str],
    grown: int = 0,
    escalations: Mapping[str, list[Any]] | None = None,
) -> Submission:
    """Create one batch. If creating failed, the batch may exist all the same (a timeout
    after the API took it): look for it before this task is retried, so none is paid twice."""
    try:
        return await runner.submit(group, round_, grown, escalations)
    except Exception:
        pending = [s for s in runner.ledger.open_for(runner.spec) if s.state == "submitting"]
        for submission in pending:
            recovered = await runner.recover(submission, claimed)
            if recovered.batch_id is not None:
                claimed.add(recovered.batch_id)
                if set(recovered.custom_ids) == {r.custom_id for r in group}:
                    return recovered
        raise


@task(
    name="recover-batch",
    task_run_name="find the batch of submission {submission.key}",
    retries=2,
    retry_delay_seconds=10.0,
    **BATCH_TASK,
)
async def recover_batch(
    runner: BatchRunner, submission: Submission, claimed: set[str]
) -> Submission:
    return await runner.recover(submission, claimed)


@task(
    name="poll-batch",
    task_run_name="poll {submission.batch_id}",
    retries=3,
    retry_delay_seconds=[10.0, 30.0, 60.0],
    **{**BATCH_TASK, "retry_condition_fn": retry_unless_stopped_or_gone},  # nor a lost batch
)
async def poll_batch(runner: BatchRunner, submission: Submission) -> BatchStatus:
    """Wait for the batch to end; a retried poll only polls again (nothing is re-sent)."""
    return await runner.wait(submission)


@task(
    name="collect-batch",
    task_run_name="collect {submission.batch_id}",
    retries=2,
    retry_delay_seconds=[10.0, 30.0],
    **BATCH_TASK,
)
async def collect_batch(
    runner: BatchRunner, submission: Submission, finished: set[str]
) -> CollectReport:
    """Stream the batch's results into the journal and publish them (safe to repeat)."""
    return await runner.collect(submission, finished)
