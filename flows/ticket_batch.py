"""aibatch's flow: tickets in, one Messages API call each, crash-safe Parquet out.

Read top to bottom, this is where a ticket goes:
  1. load and validate the input file (a bad file fails here, before any API call);
  2. take the output directory's lock and fold in what a crashed run journaled;
  3. drop ids already in results for this job, model and prompt version;
  4. split the rest into chunks and run one `process-chunk` task per chunk, at most
     `chunk_slots` at once (a Prefect concurrency limit), all sharing one client and one
     in-flight cap; every response is journaled as it arrives and published in batches;
  5. publish the rest, and report: a progress artifact while running, a summary table.

Run it directly (`python flows/ticket_batch.py`), through `aibatch run`, or as a deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.runtime import flow_run

from aibatch.app.progress import progress_bar
from aibatch.app.settings import BatchParameters
from aibatch.cost.budget import Budget, WorstCase
from aibatch.cost.pricing import PriceBook
from aibatch.engine import policy
from aibatch.engine.backend import AnthropicBackend, MissingAPIKey
from aibatch.engine.batches import BatchLedger, BatchRunner
from aibatch.engine.pacer import MAX_CONCURRENCY, Pacer
from aibatch.engine.processor import (
    ChunkIncomplete,
    Committer,
    RunStats,
    RunStopped,
    TicketProcessor,
    new_run_id,
)
from aibatch.output.store import ResultStore
from aibatch.sources.loader import trial_rows
from flows.batch_mode import run_batch_mode
from flows.run_all import run_all
from flows.shards import fan_out
from tasks.chunks import process_chunk
from tasks.limits import (
    chunk_width,
    ensure_chunk_limit,
    ensure_shared_rate_limit,
    read_in_flight_limit,
    read_shared_rate_limit,
    shared_budget,
    shared_rpm,
)
from tasks.load import load_rows_task
from tasks.report import (
    artifact_key,
    publish_batches,
    publish_summary,
    start_progress,
    update_progress,
)
from tasks.secrets import api_key_from_environment_or_block


def _run_name() -> str:
    given = flow_run.parameters.get("params") or {}
    try:
        params = BatchParameters.model_validate(given)
        return f"{params.job_name}-{params.input_name}"
    except ValueError:  # the flow itself reports what is wrong with them
        return "aibatch-run"


@flow(name="aibatch-tickets", flow_run_name=_run_name, persist_result=False, log_prints=True)
async def process_tickets(params: BatchParameters | None = None) -> dict[str, Any]:
    """Summarise or classify every ticket of an input file through the Messages API."""
    params = params or BatchParameters()
    logger = get_run_logger()
    spec = params.job_spec()
    prices = PriceBook.load(params.prices_path)
    if params.budget_usd is not None:
        WorstCase(prices, spec.model).check_price()  # no price: fail now
    tickets, prompts = load_rows_task(
        params.input_path, spec.definition.prompt, params.id_column_used, params.text_column
    )
    api_key = await api_key_from_environment_or_block()
    if api_key is None:
        raise MissingAPIKey(
            "no API key: set ANTHROPIC_API_KEY where this flow runs, or store one on the "
            f"server with `aibatch setup --store-api-key` (Secret block {policy.API_KEY_BLOCK!r})"
        )
    chunk_slots = await ensure_chunk_limit(params.chunk_slots)
    shared_limit: GlobalConcurrencyLimitResponse | None
    if params.shared_rpm is not None:
        shared_limit = await ensure_shared_rate_limit(params.shared_rpm)
    else:
        shared_limit = await read_shared_rate_limit()
    in_flight = await read_in_flight_limit()
    width = chunk_width(in_flight, chunk_slots) if in_flight is not None else None
    if width is not None:
        logger.info(
            "At most %d requests in flight across every run on this server (limit %r): "
            "%d per chunk", in_flight, policy.IN_FLIGHT_LIMIT_NAME, width,
        )  # fmt: skip
    if shared_limit is not None:
        logger.info(
            "Sharing %.0f requests/min with every run on this Prefect server (rate limit %r)",
            shared_rpm(shared_limit), shared_limit.name,
        )  # fmt: skip

    if params.shards > 1 and params.shard is None:
        return await fan_out(params, tickets, spec)

    store = ResultStore(params.output_dir, spec.job, shard=params.shard)
    with store.locked():
        run_id = new_run_id()
        frame = tickets.frame
        answer = spec.output.columns
        committer = Committer.open(store, run_id, tickets.carried(answer.schema.names), answer)
        store.record_definition(spec.definition.model_dump(mode="json", by_alias=True))
        recovered = committer.fold_in()
        if recovered:
            logger.info("Recovered %d results journaled by an interrupted run", recovered)
        done = store.settled_ids(spec.model, spec.prompt_version)
        is_done = frame["id"].isin(done)
        already_done = int(is_done.sum())
        pending = trial_rows(frame[~is_done], params.limit, params.sample)
        logger.info(
            "%d tickets in %s; %d already done for %s/%s/%s; %d to process",
            len(frame), params.input_name, already_done, spec.job, spec.model,
            spec.prompt_version, len(pending),
        )  # fmt: skip
        ledger = BatchLedger(store.state_dir / "batches")
        open_batches = [s.batch_id or s.key for s in ledger.open_for(spec)]
        if params.mode == "realtime" and open_batches:
            # Their tickets are being answered (and billed) by the API already.
            raise RunStopped(
                f"{len(open_batches)} Message Batch(es) of an earlier batch-mode run are still "
                f"open for this job and model ({', '.join(open_batches)}): run with --mode "
                "batch to collect them; sending their tickets again would pay twice"
            )
        prompt_of = dict(zip(frame["id"].tolist(), prompts, strict=True))
        pairs = [(i, prompt_of[i]) for i in pending["id"].tolist()]
        chunks = [pairs[i : i + params.chunk_size] for i in range(0, len(pairs), params.chunk_size)]
        stats = RunStats(total=len(pairs))
        budget = None
        if params.budget_usd is not None:
            spent = store.spent_usd(spec.model, spec.prompt_version)
            budget = Budget(params.budget_usd, spent)
            logger.info(
                "Budget: $%.4f of $%g already spent on this job in %s", spent,
                params.budget_usd, params.output_dir,
            )  # fmt: skip
        backend = AnthropicBackend(
            api_key=api_key,
            max_connections=params.fixed_concurrency or MAX_CONCURRENCY,
            timeout_s=params.request_timeout_s,
        )
        key = artifact_key(f"aibatch-{spec.job}-{params.input_name}")
        progress_id = await start_progress(
            f"{key}-progress", f"{spec.job} of {params.input_name}: share of tickets done"
        )
        drawing = (
            progress_bar(stats, f"{spec.job} {params.input_name}")
            if params.show_progress
            else contextlib.nullcontext()
        )
        processor = TicketProcessor(
            backend, spec, committer, run_id,
            max_concurrency=params.fixed_concurrency, max_attempts=params.max_attempts,
            stats=stats, pacer=Pacer(rpm=params.rpm, itpm=params.itpm, otpm=params.otpm),
            shared=shared_budget(shared_limit) if shared_limit is not None else None,
            prices=prices, budget=budget,
        )  # fmt: skip
        runner = BatchRunner(
            backend, spec, committer, ledger, run_id, stats,
            prices, budget, max_requests=params.batch_max_requests,
            poll_first_s=min(policy.BATCH_POLL_FIRST_S, params.batch_poll_max_s),
            poll_max_s=params.batch_poll_max_s,
        )  # fmt: skip

        async def run_chunk(index: int, chunk: list[tuple[str, str]]) -> dict[str, int]:
            try:
                return await process_chunk(
                    processor, chunk, index, len(chunks), params.input_name, width
                )
            finally:
                await update_progress(progress_id, stats.done, stats.total)

        async def show_progress() -> None:
            await update_progress(progress_id, stats.done, stats.total)

        outcomes: list[dict[str, int] | BaseException] = []
        batch_report = None
        try:
            async with drawing:
                if params.mode == "batch":
                    batch_report = await run_batch_mode(
                        runner, pairs, dict(pairs), set(done), params.batch_resubmits, budget,
                        show_progress,
                    )  # fmt: skip
                else:
                    outcomes = await run_all(
                        [run_chunk(i + 1, c) for i, c in enumerate(chunks)], processor.stop
                    )
        finally:
            await committer.commit()
            committer.close()
            await backend.aclose()

    summary = {"run_id": run_id, "job": spec.job, "model": spec.model, "mode": params.mode,
               "prompt_version": spec.prompt_version, **stats.summary(),
               "already_done": already_done,
               "held_back": len(frame) - already_done - len(pending),  # a trial's other rows
               "recovered": recovered,
               "files_published": committer.files_published,
               **(batch_report.as_dict() if batch_report is not None else {})}  # fmt: skip
    await publish_summary(f"{key}-summary", summary, f"aibatch run {run_id}")
    logger.info("Summary: %s", summary)
    if batch_report is not None:
        await publish_batches(f"{key}-batches", runner.ledger.load(), f"batches of run {run_id}")
        batch_report.raise_if_incomplete(params.batch_resubmits)
        if (message := stats.all_failed(store.failures_dir)) is not None:
            raise RuntimeError(message)
        return summary

    interrupted = [o for o in outcomes if isinstance(o, BaseException)
                   and not isinstance(o, Exception | asyncio.CancelledError)]  # fmt: skip
    if interrupted:  # SIGTERM, Ctrl-C: everything answered is published; stop now
        raise interrupted[0]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    stopped = [e for e in errors if isinstance(e, RunStopped)]
    if stopped:
        raise RunStopped(f"run stopped: {stopped[0]}. Everything finished before the stop is saved")
    if errors:
        unfinished = sum(e.unfinished for e in errors if isinstance(e, ChunkIncomplete))
        raise RuntimeError(
            f"{len(errors)} chunk(s) failed after retries ({unfinished} tickets unfinished; "
            f"first error: {errors[0]}); everything done is saved, re-run to continue"
        )
    if (message := stats.all_failed(store.failures_dir)) is not None:
        raise RuntimeError(message)
    return summary


if __name__ == "__main__":
    from aibatch.app.local import run_locally

    raise SystemExit(run_locally(BatchParameters(show_progress=True)))
