"""The engine: send tickets through the Messages API with one retry loop and one in-flight cap.

Plain asyncio, no Prefect: the flow hands it chunks, and every response it gets is
handed to the `Committer` at once, so nothing paid for is lost when something fails later.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anthropic
import pandas as pd
import pyarrow as pa

from aibatch.cost.budget import BudgetExhausted, WorstCase
from aibatch.cost.pricing import PriceBook
from aibatch.engine import policy
from aibatch.engine.admission import Admission, APIUnavailable
from aibatch.engine.backend import MessagesBackend
from aibatch.engine.pacer import Pacer
from aibatch.engine.policy import Action, Cause
from aibatch.engine.recorder import Recorder
from aibatch.jobs.outputs import InvalidModelOutput
from aibatch.jobs.spec import JobSpec
from aibatch.output import crashpoints
from aibatch.output.answer_columns import NO_COLUMNS, AnswerColumns
from aibatch.output.store import (
    RESULT_COLUMNS,
    Journal,
    ResultStore,
    carried_schema,
    failures_table,
    journal_segments,
    read_segment,
    remove,
    results_table,
    run_date_of,
)

Sleep = Callable[[float], Awaitable[None]]


class RunStopped(Exception):
    """Nothing more can succeed (bad key, spend cap): the whole run stops."""


class OutputUnwritable(RunStopped):
    """The output directory refused a write (disk full, read-only): retrying cannot help."""

    @classmethod
    def from_error(cls, error: OSError, what: str) -> OutputUnwritable:
        where = f" ({error.filename})" if error.filename else ""
        return cls(
            f"cannot write {what}{where}: {error.strerror or error}. Free space (or fix the "
            "output directory) and run again: what is already journaled is published then"
        )


class ChunkIncomplete(Exception):
    """Some rows of a chunk are still unfinished after their attempts. `retryable` of them
    have attempts left for a retry of the chunk; the others have used their whole budget,
    and only a re-run sends them again."""

    def __init__(
        self,
        unfinished: int,
        last_error: str,
        attempts: int = policy.MAX_ATTEMPTS,
        retryable: int = 0,
    ) -> None:
        if retryable:
            next_step = f"a retry of the chunk sends the {retryable} with attempts left"
        else:
            next_step = "run the same command again to send them again"
        super().__init__(
            f"{unfinished} row(s) still unfinished, with at most {attempts} attempt(s) "
            f"each (last error: {last_error}); {next_step}"
        )
        self.unfinished = unfinished
        self.retryable = retryable


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


@dataclass
class RunStats:
    """Live counters of a run: read by the progress bar, the artifacts and the summary."""

    total: int = 0
    ok: int = 0
    failed: int = 0
    http_requests: int = 0
    http_429: int = 0
    http_529: int = 0
    server_errors: int = 0
    connection_errors: int = 0
    retries: int = 0
    truncated_retries: int = 0  # answers cut short by max_tokens, asked again with more room
    refusals: int = 0
    failures_by_type: dict[str, int] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0  # every billed answer: results, failures, retried attempts
    failed_cost_usd: float = 0.0  # the part billed for answers that became no result
    cost_unknown: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    status: str = ""  # a line for the progress bar (batch mode: batches and their counts)

    @property
    def done(self) -> int:
        return self.ok + self.failed

    def count_ok(self, usage: Any) -> None:
        self.ok += 1
        self.input_tokens += usage.input_tokens
        self.output_tokens += usage.output_tokens
        self.cache_creation_input_tokens += usage.cache_creation_input_tokens or 0
        self.cache_read_input_tokens += usage.cache_read_input_tokens or 0

    def add_cost(self, cost: float | None) -> None:
        """Count a billed answer (None: its model has no known price)."""
        if cost is None:
            self.cost_unknown += 1
        else:
            self.cost_usd += cost

    def count_failed(self, cost: float | None, error_type: str) -> None:
        self.failed += 1
        self.failures_by_type[error_type] = self.failures_by_type.get(error_type, 0) + 1
        if error_type == "refusal":
            self.refusals += 1
        if cost:
            self.failed_cost_usd += cost

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def all_failed(self, failures_dir: Any) -> str | None:
        """A plain message when every ticket this run finished failed (None otherwise): such
        a run must not look like a success."""
        if self.ok or not self.failed:
            return None
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.failures_by_type.items()))
        return (
            f"every ticket sent failed ({self.failed} of {self.failed}: {kinds}); no result "
            f"was stored. See {failures_dir} (error_type, message, stop_reason)"
        )

    def summary(self) -> dict[str, Any]:
        elapsed = self.elapsed_s()
        latencies = sorted(self.latencies_ms)

        def percentile(share: float) -> float | None:
            if not latencies:
                return None
            return round(latencies[min(len(latencies) - 1, int(share * len(latencies)))], 1)

        return {
            "tickets": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "unfinished": self.total - self.done,
            "http_requests": self.http_requests,
            "retries": self.retries,
            "truncated_retries": self.truncated_retries,
            "refusals": self.refusals,
            "failures_by_type": dict(sorted(self.failures_by_type.items())),
            "http_429": self.http_429,
            "http_529": self.http_529,
            "server_errors": self.server_errors,
            "connection_errors": self.connection_errors,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cost_usd": round(self.cost_usd, 8) if not self.cost_unknown else None,
            "failed_cost_usd": round(self.failed_cost_usd, 8) if not self.cost_unknown else None,
            "cost_unknown_answers": self.cost_unknown,
            "elapsed_s": round(elapsed, 2),
            "tickets_per_s": round(self.done / elapsed, 2) if elapsed > 0 else None,
            "latency_p50_ms": percentile(0.50),
            "latency_p95_ms": percentile(0.95),
            "latency_mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        }


class Committer:
    """Journal every outcome as it arrives; publish them to Parquet in batches."""

    def __init__(
        self,
        store: ResultStore,
        run_id: str,
        carried: pd.DataFrame,
        schema: pa.Schema,
        committed: set[tuple[str, str, str, str]],
        answer_columns: AnswerColumns = NO_COLUMNS,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.run_date = run_date_of(datetime.now(UTC))
        self.carried = carried
        self.schema = schema  # the results dataset's, fixed for the run
        self.answer_columns = answer_columns
        self.committed = committed  # (id, job, model, prompt_version) already in results
        self.journal = Journal(store.journal_dir, run_id)
        self.pending: list[dict[str, Any]] = []
        self.last_commit = time.monotonic()
        self.rows_published = 0
        self.files_published = 0
        self._lock = asyncio.Lock()

    @classmethod
    def open(
        cls,
        store: ResultStore,
        run_id: str,
        carried: pd.DataFrame,
        answer: AnswerColumns = NO_COLUMNS,
    ) -> Committer:
        """The committer of a run into a store it holds locked, carrying the input's
        `carried` columns (by id) and a json job's typed `answer` columns: the results
        schema settled first (SchemaConflict before any call)."""
        wanted = pa.schema([*RESULT_COLUMNS, *answer.schema, *carried_schema(carried)])
        schema = store.results_schema(wanted, answer.schema.names)
        return cls(store, run_id, carried, schema, store.all_result_keys(), answer)

    def record(self, record: dict[str, Any]) -> None:
        try:
            self.journal.append(record)
        except OSError as error:
            raise OutputUnwritable.from_error(error, "the journal") from error
        self.pending.append(record)

    def due(self) -> bool:
        return len(self.pending) >= policy.COMMIT_EVERY_ROWS or (
            bool(self.pending) and time.monotonic() - self.last_commit >= policy.COMMIT_EVERY_S
        )

    async def commit_if_due(self) -> None:
        if self.due():
            await self.commit(only_if_due=True)

    async def commit(self, only_if_due: bool = False) -> None:
        """Publish what is pending. Runs in a thread so responses keep flowing meanwhile."""
        async with self._lock:
            # Callers queued behind a commit find little pending; with `only_if_due` they
            # leave it for later instead of publishing a handful of rows each.
            if not self.pending or (only_if_due and not self.due()):
                return
            try:
                segment = self.journal.rotate()
            except OSError as error:
                raise OutputUnwritable.from_error(error, "the journal") from error
            records, self.pending = self.pending, []
            self.last_commit = time.monotonic()
            publishing = asyncio.ensure_future(asyncio.to_thread(self._publish, records, [segment]))
            try:
                await asyncio.shield(publishing)
            except asyncio.CancelledError:
                # A chunk stopped mid-commit (SIGTERM, a stop): its thread publishes on, so
                # the lock is held until it is done; the run's last commit must not publish
                # beside it or find the dataset half-way through.
                await publishing
                raise

    def fold_in(self) -> int:
        """Commit what earlier runs journaled but did not publish (they crashed)."""
        segments = [p for directory in self.store.journal_dirs_to_recover()
                    for p in journal_segments(directory) if p != self.journal.path]  # fmt: skip
        records = [r for path in segments for r in read_segment(path)]
        before = self.rows_published
        # A crash after the failures were published but before the segment was removed
        # leaves them in both places: publish only those not already there.
        published_failures = (
            self.store.failure_keys() if any(r.get("kind") == "failed" for r in records)
            else set()
        )  # fmt: skip
        self._publish(records, segments, published_failures)
        return self.rows_published - before

    def close(self) -> None:
        self.journal.close()

    def _publish(
        self,
        records: list[dict[str, Any]],
        segments: Sequence[Any],
        published_failures: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> None:
        ok: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        failed: dict[tuple[str, str], dict[str, Any]] = {}
        for record in records:
            kind = record.get("kind")
            if kind == "ok":
                key = (record["id"], record["job"], record["model"], record["prompt_version"])
                if key not in self.committed:
                    ok.setdefault(key, record)  # no id twice, even if journaled twice
            elif kind == "failed":
                failure = (record["id"], record["run_id"])
                if failure not in published_failures:
                    failed.setdefault(failure, record)
        if not (ok or failed or segments):
            return
        try:
            if ok:
                rows = list(ok.values())
                answer = self.answer_columns.arrays([r["result"] for r in rows])
                table = results_table(rows, self.carried, self.schema, self.run_date, answer)
                self.files_published += len(
                    self.store.publish(table, self.store.results_dir, self.run_id)
                )
                self.committed.update(ok)
                self.rows_published += len(ok)
            crashpoints.reached("commit:results-published")
            if failed:
                table = failures_table(list(failed.values()), self.run_date)
                self.store.publish(table, self.store.failures_dir, self.run_id)
            crashpoints.reached("commit:published")
            remove(segments)  # only now: their rows are in the datasets
        except OSError as error:
            raise OutputUnwritable.from_error(error, f"results to {self.store.root}") from error


@dataclass
class ChunkReport:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    unfinished: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"ok": self.ok, "failed": self.failed, "skipped": self.skipped,
                "unfinished": self.unfinished}  # fmt: skip


# The RunStats counter each error cause adds to (the other causes have no counter).
_COUNTER_OF_CAUSE = {
    Cause.RATE_LIMITED: "http_429",
    Cause.OVERLOADED: "http_529",
    Cause.SERVER: "server_errors",
    Cause.CONNECTION: "connection_errors",
}


@dataclass
class TicketAttempts:
    """One ticket's attempts so far."""

    id: str
    text: str
    params: dict[str, Any]  # the request (max_tokens grows when answers are cut short)
    raw_tokens: float
    attempt: int = 0  # failed attempts so far
    grown: int = 0  # times max_tokens was grown
    billed: float | None = 0.0  # what this ticket's answers cost so far (None: unknown)

    def decide(self, error: BaseException, rng: random.Random) -> policy.Decision:
        return policy.decide(error, self.attempt, rng, self.grown)

    def bill(self, cost: float | None) -> None:
        self.billed = None if self.billed is None or cost is None else self.billed + cost


class TicketProcessor:
    """Sends tickets; shared by every chunk of a run (one client, one admission, one recorder).

    Per request: the `Admission` lets it go (wait at the shared 429 gate, take an in-flight
    slot, hold the budget, take a request from the allowance shared with other processes,
    wait for the pacer's buckets), then send; the `Recorder` bills and journals what comes
    back. Waiting after an error never holds a slot.
    """

    def __init__(
        self,
        backend: MessagesBackend,
        admission: Admission,
        recorder: Recorder,
        *,
        max_attempts: int = policy.MAX_ATTEMPTS,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.backend = backend
        self.spec = recorder.spec  # one job for the requests and their records
        self.admission = admission
        self.recorder = recorder
        self.committer = recorder.committer
        self.stats = recorder.stats
        self.max_attempts = max_attempts
        self.rng = rng or random.Random()
        self.sleep = sleep  # the wait between attempts (the admission has its own)
        self.finished: set[str] = set()
        # Failed attempts per unfinished row, kept across its chunk's retries: one budget.
        self.attempts_made: dict[str, int] = {}
        self.stop_reason: str | None = None
        self.last_error = ""

    @classmethod
    def with_defaults(
        cls,
        backend: MessagesBackend,
        spec: JobSpec,
        committer: Committer,
        run_id: str,
        *,
        stats: RunStats | None = None,
        max_concurrency: int | None = policy.DEFAULT_MAX_CONCURRENCY,
        max_attempts: int = policy.MAX_ATTEMPTS,
        pacer: Pacer | None = None,
    ) -> TicketProcessor:
        """The engine on its own, as the tests and the benchmark run it: list prices, no
        budget, no allowance shared with other processes, and (unless given one) a pacer
        that learns its limits."""
        prices = PriceBook.load()
        worst_case = WorstCase(prices, spec.model)
        admission = Admission(pacer or Pacer(), max_concurrency, worst_case)
        recorder = Recorder(spec, run_id, committer, stats or RunStats(), prices, "realtime")
        return cls(backend, admission, recorder, max_attempts=max_attempts)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    async def process_chunk(
        self,
        tickets: Sequence[tuple[str, str]],
        width: int | None = None,
        chunk_run: int | None = None,
        chunk_retries: int = 0,
    ) -> ChunkReport:
        """Process every ticket not finished yet; raise if any is left unfinished.

        `width` caps this chunk's own requests in flight (its share of a limit held across
        processes); the run-wide cap applies as well. `chunk_run` is this run of the chunk
        (0: the first) of 1 + `chunk_retries`: each row keeps one attempt for every retry
        still to come (None: outside Prefect, every attempt in this run).
        """
        report = ChunkReport()
        todo = [(i, t) for i, t in tickets if i not in self.finished]
        report.skipped = len(tickets) - len(todo)
        own = asyncio.Semaphore(width) if width is not None else None
        cap = policy.attempt_cap(self.max_attempts, chunk_run, chunk_retries)
        outcomes = await asyncio.gather(
            *(self._process_then_commit(i, t, own, cap) for i, t in todo)
        )
        for outcome in outcomes:
            if outcome == "ok":
                report.ok += 1
            elif outcome == "failed":
                report.failed += 1
            else:
                report.unfinished += 1
        await self.committer.commit_if_due()
        if self.stop_reason is not None:
            raise RunStopped(self.stop_reason)
        if report.unfinished:
            retryable = sum(
                1 for i, _ in todo
                if i not in self.finished and self.attempts_made.get(i, 0) < self.max_attempts
            )  # fmt: skip
            raise ChunkIncomplete(report.unfinished, self.last_error, self.max_attempts, retryable)
        return report

    async def _process_then_commit(
        self,
        ticket_id: str,
        text: str,
        chunk_slots: asyncio.Semaphore | None,
        cap: int | None = None,
    ) -> str:
        # Commit as rows come in, not only when a chunk ends: a large chunk at a slow rate
        # would otherwise keep its results out of the dataset for minutes.
        outcome = await self._process(ticket_id, text, chunk_slots, cap)
        await self.committer.commit_if_due()
        return outcome

    async def _process(
        self,
        ticket_id: str,
        text: str,
        chunk_slots: asyncio.Semaphore | None = None,
        cap: int | None = None,
    ) -> str:
        """Attempt one ticket until it is answered, failed for good, out of the attempts
        this run of its chunk may make (`cap`, of the row's whole budget), or the run
        stops: "ok", "failed" or "unfinished"."""
        params = self.spec.request(text)
        ticket = TicketAttempts(ticket_id, text, params, self.admission.estimator.raw(params))
        ticket.attempt = self.attempts_made.get(ticket_id, 0)
        try:
            return await self._attempts(ticket, chunk_slots, cap or self.max_attempts)
        finally:
            if ticket_id in self.finished:
                self.attempts_made.pop(ticket_id, None)
            elif ticket.attempt:
                self.attempts_made[ticket_id] = ticket.attempt

    async def _attempts(
        self, ticket: TicketAttempts, chunk_slots: asyncio.Semaphore | None, cap: int
    ) -> str:
        if ticket.attempt >= cap:
            return "unfinished"  # this run of the chunk has no attempt left for it
        while True:
            try:
                outcome = await self._attempt(ticket, chunk_slots)
            except APIUnavailable as error:
                self.stop(str(error))
                return "unfinished"
            if outcome is None:  # a storm began while this one queued: not now
                continue
            if isinstance(outcome, str):
                return outcome
            decision, sent_at = outcome
            # Outside the slot: waiting never holds one.
            verdict = self._after_error(ticket, decision, sent_at, cap)
            if verdict is not None:
                return verdict
            await self.sleep(decision.delay_s)

    async def _attempt(
        self, ticket: TicketAttempts, chunk_slots: asyncio.Semaphore | None
    ) -> str | tuple[policy.Decision, float] | None:
        """One send, holding a slot: "ok" or "unfinished" when that settles the ticket, else
        the error's decision and when the request went; None if it never went."""
        admission = self.admission
        async with admission.slot(chunk_slots) as probe:
            if self.stop_reason is not None:
                return "unfinished"
            input_estimate = admission.estimator.estimate(ticket.raw_tokens)
            try:
                held = await admission.hold_budget(input_estimate, ticket.params["max_tokens"])
            except BudgetExhausted as error:
                self.stop(str(error))
                return "unfinished"
            reservation = await admission.pace(input_estimate, probe)
            if reservation is None:
                await admission.settle_budget(held, 0.0)
                return None
            started = time.monotonic()
            admission.sending(started)
            self.stats.http_requests += 1
            cost: float | None = 0.0
            try:
                reply = await self.backend.create(ticket.params)
            except (anthropic.AnthropicError, InvalidModelOutput) as error:
                admission.pacer.release(reservation)
                return ticket.decide(error, self.rng), started
            else:
                admission.learn(reply, reservation, ticket.raw_tokens, started)
                cost = self.recorder.bill(reply.message.usage)
                ticket.bill(cost)
                try:
                    result = self.spec.parse(reply.message, ticket.params["max_tokens"])
                except InvalidModelOutput as error:  # refused, cut short, or off-shape
                    return ticket.decide(error, self.rng), started
                latency_ms = (time.monotonic() - started) * 1000
                usage = reply.message.usage
                answered = ticket.attempt + 1
                if self._settled(ticket.id, lambda: self.recorder.ok(
                    ticket.id, result, usage, answered, ticket.billed, latency_ms
                )):  # fmt: skip
                    return "ok"
                return "unfinished"  # answered but not journaled: the run stops
            finally:
                admission.answered()
                # An error is not billed; a timeout might be, unknowably (see README).
                await admission.settle_budget(held, cost or 0.0)

    def _after_error(
        self, ticket: TicketAttempts, decision: policy.Decision, sent_at: float, cap: int
    ) -> str | None:
        """React to a failed attempt: "failed" or "unfinished" if the ticket is settled,
        None to try again after `decision.delay_s`."""
        self._count_error(decision)
        self.last_error = f"{decision.error_type}: {decision.message}"
        self.admission.on_error(decision, sent_at)
        if decision.action is Action.STOP_RUN:
            self.stop(decision.message)
            return "unfinished"
        if decision.action is Action.FAIL_TICKET:
            journaled = self._settled(ticket.id, lambda: self.recorder.failed(
                ticket.id, decision.error_type, decision.status_code, decision.message,
                ticket.attempt + 1, ticket.billed, decision.stop_reason,
            ))  # fmt: skip
            return "failed" if journaled else "unfinished"
        ticket.attempt += 1
        if decision.action is Action.GROW:
            ticket.grown += 1
            self.stats.truncated_retries += 1
            ticket.params = self.spec.request(ticket.text, ticket.grown)
        if ticket.attempt >= cap:
            return "unfinished"
        self.stats.retries += 1
        return None

    def _settled(self, ticket_id: str, record: Callable[[], None]) -> bool:
        """Journal a ticket's outcome; if the output cannot take it, stop the run (False)."""
        try:
            record()
        except OutputUnwritable as error:
            self.stop(str(error))
            return False
        self.finished.add(ticket_id)
        return True

    def _count_error(self, decision: policy.Decision) -> None:
        name = _COUNTER_OF_CAUSE.get(decision.cause)
        if name is not None:
            setattr(self.stats, name, getattr(self.stats, name) + 1)
