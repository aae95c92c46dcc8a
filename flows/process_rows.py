"""aibatch's flow: rows in, one Messages API call each, crash-safe Parquet out.

Read top to bottom, this is where a row goes:
  1. plan the run: load and validate the input file (a bad file fails here, before any
     API call), or take the plan `aibatch run` made in this process;
  2. take the output directory's lock and fold in what a crashed run journaled;
  3. drop ids already in results for this job, model and prompt version;
  4. split the rest into chunks and run one `process-chunk` task per chunk, at most
     `chunk_slots` at once (a Prefect concurrency limit), all sharing one client and one
     in-flight cap; every response is journaled as it arrives and published in batches;
  5. publish the rest, and report: a progress artifact while running, a summary table.

Run it directly (`python flows/process_rows.py`), through `aibatch run`, or as a deployment.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from aibatch.engine.processor import RowProcessor
from aibatch.flows.batch_mode import BatchModeReport, run_batch_mode
from aibatch.flows.run_all import run_all
from aibatch.flows.shards import fan_out
from aibatch.prefect_server.artifacts import (
    artifact_key,
    emit_operator_events,
    publish_batches,
    publish_summary,
    start_progress,
    update_progress,
)
from aibatch.prefect_server.limits import prepare_limits
from aibatch.prefect_server.secrets import api_target
from aibatch.runs.builder import open_run, raise_for_chunk_outcomes
from aibatch.runs.orchestration import operator_events
from aibatch.runs.parameters import RunParameters
from aibatch.runs.progress import progress_bar
from aibatch.tasks.chunks import process_chunk
from aibatch.tasks.load import plan_run_task


def _run_name() -> str:
    given = flow_run.parameters.get("params") or {}
    try:
        params = RunParameters.model_validate(given)
        return f"{params.job_name}-{params.input_name}"
    except ValueError:  # the flow itself reports what is wrong with them
        return "aibatch-run"


@flow(name="aibatch-rows", flow_run_name=_run_name, persist_result=False, log_prints=True)
async def process_rows(params: RunParameters | None = None) -> dict[str, Any]:
    """Ask the job's question of every row of an input file through the Messages API."""
    params = params or RunParameters()
    logger = get_run_logger()
    plan = plan_run_task(params)
    spec = plan.spec
    target = plan.api or await api_target()
    limits = await prepare_limits(params, logger)
    if params.shards > 1 and params.shard is None:
        return await fan_out(plan)
    key = artifact_key(f"aibatch-{spec.job}-{params.input_name}")
    report: BatchModeReport | None = None
    processor: RowProcessor | None = None
    outcomes: list[dict[str, int] | BaseException] = []
    async with open_run(plan, target, logger) as run:
        title = f"{spec.job} of {params.input_name}: share of rows done"
        progress_id = await start_progress(f"{key}-progress", title)

        async def show_progress() -> None:
            await update_progress(progress_id, run.stats.done, run.stats.total)

        async with progress_bar(
            run.stats, f"{spec.job} {params.input_name}", params.show_progress,
            verbose=params.verbose,
        ):  # fmt: skip
            if params.mode == "batch":
                report = await run_batch_mode(
                    run.batch_runner(), run.pairs, dict(run.pairs), run.done,
                    params.batch_resubmits, run.budget, show_progress,
                )  # fmt: skip
            else:
                processor, chunks = run.processor(limits.shared), run.chunks(limits.chunk_slots)
                # No more chunk task runs than slots at once: one that finds the limit full
                # sleeps the server's Retry-After (seconds, growing with the queue) while
                # the engine runs dry; in order, so the next one is ready as one ends.
                lanes = asyncio.Semaphore(limits.chunk_slots)

                async def run_chunk(index: int, chunk: list[tuple[str, str]]) -> dict[str, int]:
                    async with lanes:
                        try:
                            return await process_chunk(
                                processor, chunk, index, len(chunks), params.input_name,
                                limits.width,
                            )  # fmt: skip
                        finally:
                            await show_progress()

                runs = [run_chunk(i + 1, chunk) for i, chunk in enumerate(chunks)]
                outcomes = await run_all(runs, processor.stop)
    summary = run.summary(report.as_dict() if report is not None else None)
    await publish_summary(f"{key}-summary", summary, f"aibatch run {run.run_id}")
    logger.info(
        "Summary: %d ok, %d failed, %d already done; %d requests, %d 429s; cost $%s (table "
        "artifact %s-summary)", summary["ok"], summary["failed"], summary["already_done"],
        summary["http_requests"], summary["http_429"], summary["cost_usd"], key,
    )  # fmt: skip
    if processor is not None:
        stop_kind, storms = processor.stop_kind, processor.admission.gate.storms
    else:
        stop_kind, storms = ("budget-reached" if report and report.budget_note else None), 0
    emit_operator_events(operator_events(summary, stop_kind, storms), spec.job, params.output_dir)
    if report is not None:
        await publish_batches(f"{key}-batches", run.ledger.load(), f"batches of run {run.run_id}")
        report.raise_if_incomplete(params.batch_resubmits)
    raise_for_chunk_outcomes(outcomes)
    run.raise_if_all_failed()
    return summary


if __name__ == "__main__":
    # `python flows/process_rows.py [OPTIONS]` is `aibatch run` (the simulator without a
    # key, exit codes, signals): the app runs the flow, so this layer imports no app. exec,
    # not a child: signals and the exit status are the command's own.
    import os
    import sys

    os.execv(sys.executable, [sys.executable, "-m", "aibatch", "run", *sys.argv[1:]])
