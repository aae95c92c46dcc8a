"""`--mode batch`: the flow's pending rows as Message Batches, at half price.

Orchestration only (the runner in aibatch/engine/batches.py holds the logic): resume the batches a
previous run left open, submit what no batch carries yet, poll each batch in its own task,
collect its results into the same datasets, and submit errored or expired requests again.
If the flow is cancelled or interrupted, its open batches are cancelled at the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger

from aibatch.cost.budget import Budget
from aibatch.engine.batches import (
    BatchRunner,
    CollectReport,
    Submission,
    next_round,
    rows_in,
    texts_of,
)
from aibatch.errors import BatchGone, RunIncomplete, RunStopped
from aibatch.flows.run_all import run_all
from aibatch.tasks.batches import collect_batch, poll_batch, recover_batch, submit_batch


@dataclass
class BatchModeReport:
    batches_submitted: int = 0
    batches_resumed: int = 0
    resubmitted: int = 0
    unfinished: int = 0  # errored or expired after every resubmission, or in a lost batch
    budget_note: str | None = None

    def as_dict(self) -> dict[str, int]:
        return {"batches_submitted": self.batches_submitted,
                "batches_resumed": self.batches_resumed,
                "requests_resubmitted": self.resubmitted}  # fmt: skip

    def raise_if_incomplete(self, resubmits: int) -> None:
        if self.budget_note is not None:
            raise RunStopped(f"run stopped: {self.budget_note}. Everything answered is saved")
        if self.unfinished:
            raise RunIncomplete(
                f"{self.unfinished} row(s) unfinished (errored or expired after "
                f"{resubmits} resubmission(s), or in a batch the API no longer has); "
                "everything answered is saved, re-run to continue"
            )


async def run_batch_mode(
    runner: BatchRunner,
    pending: list[tuple[str, str]],
    texts: Mapping[str, str],
    finished: set[str],
    resubmits: int,
    budget: Budget | None,
    show_progress: Callable[[], Awaitable[None]],
) -> BatchModeReport:
    report = BatchModeReport()
    claimed = {s.batch_id for s in runner.ledger.load() if s.batch_id is not None}
    resumed = await _resume(runner, claimed, budget)
    report.batches_resumed = len(resumed)
    covered = rows_in(resumed)
    try:
        active = resumed + await _submit(
            runner, [(i, t) for i, t in pending if i not in covered], 0, claimed, report
        )
        while active:
            collected = await _wait_and_collect(runner, active, finished, show_progress)
            again, unfinished = next_round(collected, resubmits)
            report.unfinished += unfinished
            active = []
            # A cascade: what the first model could not answer well, to the stronger one.
            escalate = {i: note for _, c in collected for i, note in c.to_escalate.items()}
            if escalate:
                get_run_logger().info(
                    "Asking %d rows again of the cascade's stronger model", len(escalate)
                )
                active += await _submit(runner, texts_of(escalate, texts), 0, claimed, report,
                                        escalations=escalate)  # fmt: skip
            for (round_, grown), ids in again.items():
                get_run_logger().info(
                    "Submitting %d errored, expired, cancelled or cut-short requests again",
                    len(ids),
                )
                report.resubmitted += len(ids)
                active += await _submit(
                    runner, texts_of(ids, texts), round_, claimed, report, grown
                )
            if runner.left_out:
                # Batches settle below their worst case: what they did not use may carry
                # some of the rows the budget kept out (the plan says if none fits).
                left, runner.left_out = runner.left_out, []
                active += await _submit(runner, left, 0, claimed, report)
    except Exception:
        raise  # the batches run on at the API: a re-run polls and collects them
    except BaseException:
        await _cancel_open(runner)
        raise
    report.budget_note = runner.budget_note
    return report


async def _resume(
    runner: BatchRunner, claimed: set[str], budget: Budget | None
) -> list[Submission]:
    """The batches an earlier run of this job left at the API: recovered if it died while
    submitting, polled and collected (not paid again), their worst case held in the budget."""
    logger = get_run_logger()
    resumed: list[Submission] = []
    for submission in runner.ledger.open_for(runner.spec):
        if submission.state == "submitting":
            submission = await recover_batch(runner, submission, claimed)
            logger.info("Submission %s: %s", submission.key, submission.note)
        if submission.state == "submitted":
            resumed.append(submission)
            if budget is not None:
                budget.hold(submission.reserved_usd)
    if resumed:
        logger.info(
            "Resuming %d batch(es) an earlier run submitted (%s): polling, not paying again",
            len(resumed), ", ".join(str(s.batch_id) for s in resumed),
        )  # fmt: skip
    return resumed


async def _cancel_open(runner: BatchRunner) -> None:
    """Cancelled or interrupted: batches still running would be paid for with nobody to
    collect them until a re-run; cancel them (a re-run collects what they answered before
    the cancel, and submits the rest again)."""
    open_now = [s for s in runner.ledger.open_for(runner.spec) if s.state == "submitted"]
    cancelled = await runner.cancel_open(open_now)
    if cancelled:
        get_run_logger().warning("Cancelled batch(es) %s", ", ".join(cancelled))


async def _submit(
    runner: BatchRunner,
    rows: list[tuple[str, str]],
    round_: int,
    claimed: set[str],
    report: BatchModeReport,
    grown: int = 0,
    escalations: Mapping[str, list[Any]] | None = None,
) -> list[Submission]:
    submitted = []
    for group in runner.plan(rows, grown, escalating=escalations is not None):
        submission = await submit_batch(
            runner, group, round_, len(group), claimed, grown, escalations
        )
        if submission.batch_id is not None:  # never to be taken for another's lost batch
            claimed.add(submission.batch_id)
        get_run_logger().info(
            "Batch %s: %d requests (round %d)", submission.batch_id, len(group), round_
        )
        submitted.append(submission)
    report.batches_submitted += len(submitted)
    return submitted


async def _wait_and_collect(
    runner: BatchRunner,
    active: list[Submission],
    finished: set[str],
    show_progress: Callable[[], Awaitable[None]],
) -> list[tuple[Submission, CollectReport]]:
    """Poll and collect every active batch. A batch the API no longer has is reported and
    skipped; any other failure is raised once the other batches are collected (they keep
    running at the API: a re-run polls them); a signal is raised at once."""

    async def one(submission: Submission) -> tuple[Submission, CollectReport]:
        await poll_batch(runner, submission)
        collected = await collect_batch(runner, submission, finished)
        await show_progress()
        return submission, collected

    outcomes = await run_all([one(s) for s in active], lambda reason: None)
    signals = [o for o in outcomes if isinstance(o, BaseException)
               and not isinstance(o, Exception | asyncio.CancelledError)]  # fmt: skip
    if signals:
        raise signals[0]  # SIGTERM, Ctrl-C: the caller cancels the batches
    collected: list[tuple[Submission, CollectReport]] = []
    errors: list[Exception] = []
    for submission, outcome in zip(active, outcomes, strict=True):
        if isinstance(outcome, BatchGone):
            get_run_logger().warning("%s", outcome)
            collected.append((submission, CollectReport(gone=len(submission.custom_ids))))
        elif isinstance(outcome, Exception):
            errors.append(outcome)
        elif isinstance(outcome, BaseException):
            raise outcome  # cancelled: the caller cancels the batches
        else:
            collected.append(outcome)
    if errors:
        raise errors[0]
    return collected
