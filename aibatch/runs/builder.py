"""A run opened from its plan, and its outcome read: the plain half of the flow.

`open_run` takes the output's lock, folds in what a crashed run journaled, works out what is
left to send, and builds only the engine the mode uses (a `RowProcessor` for realtime, a
`BatchRunner` for Message Batches); leaving it publishes what was answered and closes the
client. `raise_for_chunk_outcomes` turns what the chunks returned into the run's verdict.
The flow (flows/process_rows.py) calls these and does the orchestrating.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aibatch.cost.budget import Budget, WorstCase
from aibatch.engine import policy
from aibatch.engine.admission import Admission
from aibatch.engine.backend import AnthropicBackend, ApiTarget
from aibatch.engine.batches import BatchLedger, BatchRunner
from aibatch.engine.pacer import Pacer
from aibatch.engine.processor import RowProcessor
from aibatch.engine.recorder import Recorder
from aibatch.engine.shared import SharedLimits
from aibatch.engine.stats import RunStats
from aibatch.errors import ChunkIncomplete, RunIncomplete, RunStopped
from aibatch.jobs.spec import JobSpec
from aibatch.output.committer import Committer, new_run_id
from aibatch.output.store import ResultStore
from aibatch.runs.orchestration import DEFAULT_CHUNK_SLOTS, auto_chunk_size
from aibatch.runs.parameters import RunParameters
from aibatch.runs.plan import RunPlan

Pair = tuple[str, str]  # (row id, prompt)


class Logger(Protocol):
    """The part of a logger a run uses (Prefect's run logger, or the standard library's)."""

    def info(self, msg: str, *args: Any) -> None: ...

    def warning(self, msg: str, *args: Any) -> None: ...


@dataclass
class Run:
    """One run over one output: what is left to send and the pieces that send it."""

    plan: RunPlan
    committer: Committer
    ledger: BatchLedger
    backend: AnthropicBackend
    run_id: str
    pairs: list[Pair]
    done: set[str]
    budget: Budget | None
    recovered: int
    already_done: int
    held_back: int  # a trial's other rows
    # Rows asked once for several: a sent row's id -> ids that take its answer (see ask_once).
    twins: dict[str, list[str]] = field(default_factory=dict)
    stats: RunStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = RunStats(total=len(self.pairs) + sum(map(len, self.twins.values())))

    @property
    def params(self) -> RunParameters:
        return self.plan.params

    @property
    def spec(self) -> JobSpec:
        return self.plan.spec

    @property
    def store(self) -> ResultStore:
        return self.plan.store

    def chunks(self, chunk_slots: int = DEFAULT_CHUNK_SLOTS) -> list[list[Pair]]:
        size = self.params.chunk_size or auto_chunk_size(len(self.pairs), chunk_slots)
        return [self.pairs[i : i + size] for i in range(0, len(self.pairs), size)]

    def processor(self, shared: SharedLimits | None) -> RowProcessor:
        params, spec, prices = self.params, self.spec, self.plan.prices
        pacer = Pacer(rpm=params.rpm, itpm=params.itpm, otpm=params.otpm)
        worst_case = WorstCase(prices, spec.model)
        admission = Admission(
            pacer, params.fixed_concurrency, worst_case, shared, self.budget,
            outage_deadline_s=params.outage_deadline_s,
        )  # fmt: skip
        recorder = Recorder(spec, self.run_id, self.committer, self.stats, prices, "realtime",
                            self.twins)  # fmt: skip
        stronger = None
        if spec.escalation is not None:  # paced on its own (its limits), under the one budget
            stronger = Admission(
                Pacer(), params.fixed_concurrency, WorstCase(prices, spec.escalation.model),
                None, self.budget, outage_deadline_s=params.outage_deadline_s,
            )  # fmt: skip
        return RowProcessor(
            self.backend, admission, recorder, max_attempts=params.max_attempts,
            escalation_admission=stronger,
        )  # fmt: skip

    def batch_runner(self) -> BatchRunner:
        params = self.params
        runner = BatchRunner(
            self.backend, self.spec, self.committer, self.ledger, self.run_id, self.stats,
            self.plan.prices, self.budget, max_requests=params.batch_max_requests,
            poll_first_s=min(policy.BATCH_POLL_FIRST_S, params.batch_poll_max_s),
            poll_max_s=params.batch_poll_max_s,
        )  # fmt: skip
        runner.recorder.twins = self.twins
        return runner

    def summary(self, extra: dict[str, int] | None = None) -> dict[str, Any]:
        spec = self.spec
        return {"run_id": self.run_id, "job": spec.job, "model": spec.model,
                "mode": self.params.mode, "prompt_version": spec.prompt_version,
                **self.stats.summary(), "already_done": self.already_done,
                "held_back": self.held_back, "recovered": self.recovered,
                "files_published": self.committer.files_published, **(extra or {})}  # fmt: skip

    def raise_if_all_failed(self) -> None:
        if (message := self.stats.all_failed(self.store.failures_dir)) is not None:
            raise RunIncomplete(message)


def open_committer(plan: RunPlan, run_id: str) -> Committer:
    """The committer of a run into the output it holds locked: the results schema settled
    (SchemaConflict before any call), the job's definition kept beside its state."""
    spec = plan.spec
    answer = spec.output.columns
    committer = Committer.open(plan.store, run_id, plan.rows.carried(answer.schema.names), answer)
    plan.store.record_definition(spec.definition.model_dump(mode="json", by_alias=True))
    return committer


@contextlib.asynccontextmanager
async def open_run(plan: RunPlan, target: ApiTarget, logger: Logger) -> AsyncIterator[Run]:
    """Lock the output, fold in what crashed runs journaled, work out what is left, and
    yield the run; on leaving, publish what was answered and close the client (also on
    failure: nothing answered is lost)."""
    params, spec, store = plan.params, plan.spec, plan.store
    with store.locked():
        run_id = new_run_id()
        committer = open_committer(plan, run_id)
        recovered = committer.fold_in()
        if recovered:
            logger.info("Recovered %d results journaled by an interrupted run", recovered)
        done = store.settled_ids(spec.model, spec.prompt_version)
        pending = plan.pending_after(done)
        logger.info(
            "%d rows in %s; %d already done for %s/%s/%s; %d to process",
            len(plan.rows.frame), params.input_name, pending.already_done, spec.job,
            spec.model, spec.prompt_version, len(pending.rows),
        )  # fmt: skip
        ledger = BatchLedger(store.state_dir / "batches")
        if params.mode == "realtime":
            _refuse_open_batches(ledger, spec)
        backend = target.connect(
            max_connections=params.fixed_concurrency or policy.MAX_CONCURRENCY,
            timeout_s=params.request_timeout_s,
        )
        pairs, twins = (
            ask_once(plan.pairs(pending)) if params.ask_once else (plan.pairs(pending), {})
        )
        if twins:
            logger.info(
                "%d rows repeat another row's request exactly: asked once, answered for each",
                sum(map(len, twins.values())),
            )
        run = Run(
            plan, committer, ledger, backend, run_id, pairs=pairs, done=set(done),
            budget=_budget(params, store, spec, logger), recovered=recovered,
            already_done=pending.already_done, held_back=pending.held_back, twins=twins,
        )  # fmt: skip
        try:
            yield run
        finally:
            await committer.commit()
            committer.close()
            await backend.aclose()


def ask_once(pairs: Sequence[Pair]) -> tuple[list[Pair], dict[str, list[str]]]:
    """The rows to send, one per distinct prompt (the first in input order), and for each
    the ids of the later rows with the same prompt, which take its answer. Within one run
    the job and model are the same for every row, so the same prompt is the same request."""
    first: dict[str, str] = {}
    sent: list[Pair] = []
    twins: dict[str, list[str]] = {}
    for row_id, prompt in pairs:
        leader = first.setdefault(prompt, row_id)
        if leader == row_id:
            sent.append((row_id, prompt))
        else:
            twins.setdefault(leader, []).append(row_id)
    return sent, twins


def _refuse_open_batches(ledger: BatchLedger, spec: JobSpec) -> None:
    open_batches = [s.batch_id or s.key for s in ledger.open_for(spec)]
    if open_batches:  # their rows are being answered (and billed) by the API already
        raise RunStopped(
            f"{len(open_batches)} Message Batch(es) of an earlier batch-mode run are still "
            f"open for this job and model ({', '.join(open_batches)}): run with --mode "
            "batch to collect them; sending their rows again would pay twice"
        )


def _budget(
    params: RunParameters, store: ResultStore, spec: JobSpec, logger: Logger
) -> Budget | None:
    if params.budget_usd is None:
        return None
    spent = store.spent_usd(spec.model, spec.prompt_version)
    logger.info(
        "Budget: $%.4f of $%g already spent on this job in %s", spent, params.budget_usd,
        params.output_dir,
    )  # fmt: skip
    return Budget(params.budget_usd, spent)


def raise_for_chunk_outcomes(outcomes: Sequence[object]) -> None:
    """The run's verdict from what its chunks returned: a signal goes on as itself (all
    answered is published by then), a stop or failed chunks as an error saying so."""
    interrupted = [o for o in outcomes if isinstance(o, BaseException)
                   and not isinstance(o, Exception | asyncio.CancelledError)]  # fmt: skip
    if interrupted:  # SIGTERM, Ctrl-C
        raise interrupted[0]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    stopped = [e for e in errors if isinstance(e, RunStopped)]
    if stopped:
        raise RunStopped(
            f"run stopped: {stopped[0]}. Everything finished before the stop is saved; run "
            "the same command again to continue"
        )
    if errors:
        unfinished = sum(e.unfinished for e in errors if isinstance(e, ChunkIncomplete))
        raise RunIncomplete(
            f"{len(errors)} chunk(s) failed ({unfinished} rows unfinished; first error: "
            f"{errors[0]}). Everything done is saved: run the same command again to continue"
        )
