"""The engine: send rows through the Messages API with one retry loop and one in-flight cap.

Plain asyncio, no Prefect: the flow hands it chunks, and every response it gets is
handed to the `Committer` at once, so nothing paid for is lost when something fails later.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anthropic

from aibatch.cost.budget import WorstCase
from aibatch.cost.pricing import PriceBook
from aibatch.engine import policy
from aibatch.engine.admission import Admission
from aibatch.engine.backend import MessagesBackend
from aibatch.engine.pacer import Pacer
from aibatch.engine.policy import Action, Cause
from aibatch.engine.recorder import Escalated, Recorder
from aibatch.engine.stats import ChunkReport, RunStats
from aibatch.errors import (
    APIUnavailable,
    BudgetExhausted,
    ChunkIncomplete,
    OutputUnwritable,
    RunStopped,
)
from aibatch.jobs.outputs import InvalidModelOutput
from aibatch.jobs.spec import JobSpec
from aibatch.output.committer import Committer

Sleep = Callable[[float], Awaitable[None]]

# The beta that makes a refusal carry a fallback credit, sent on every request of a cascade:
# "the retry needs the header", and a header on only one of the two fails the match
# (https://platform.claude.com/docs/en/build-with-claude/fallback-credit).
FALLBACK_CREDIT_BETA = "fallback-credit-2026-07-01"


# The RunStats counter each error cause adds to (the other causes have no counter).
_COUNTER_OF_CAUSE = {
    Cause.RATE_LIMITED: "http_429",
    Cause.OVERLOADED: "http_529",
    Cause.SERVER: "server_errors",
    Cause.CONNECTION: "connection_errors",
}


@dataclass
class RowAttempts:
    """One row's attempts so far, on the model now asked (a cascade's first, or after an
    escalation the stronger one)."""

    id: str
    text: str
    spec: JobSpec  # the job as asked of the model now asked
    admission: Admission  # that model's pacing (rate limits are per model)
    params: dict[str, Any]  # the request (max_tokens grows when answers are cut short)
    raw_tokens: float
    attempt: int = 0  # failed attempts so far, on this model
    grown: int = 0  # times max_tokens was grown
    billed: float | None = 0.0  # what this row's answers cost so far (None: unknown)
    answered: int = 0  # attempts on the models asked before this one
    escalated: Escalated | None = None
    # The first model's own answer when a catch-all label was escalated: kept if the
    # stronger model cannot answer (refuses, say), so the row still has an answer.
    first_answer: tuple[str, Any] | None = None

    def decide(self, error: BaseException, rng: random.Random) -> policy.Decision:
        return policy.decide(error, self.attempt, rng, self.grown)

    def bill(self, cost: float | None) -> None:
        self.billed = None if self.billed is None or cost is None else self.billed + cost


class RowProcessor:
    """Sends rows; shared by every chunk of a run (one client, one admission, one recorder).

    Per request: the `Admission` lets it go (wait at the shared 429 gate, take an in-flight
    slot, hold the budget, take a request and its tokens from the limits shared with other
    processes, wait for the pacer's buckets), then send; the `Recorder` bills and journals
    what comes back. Waiting after an error never holds a slot.
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
        escalation_admission: Admission | None = None,
    ) -> None:
        self.backend = backend
        self.spec = recorder.spec  # one job for the requests and their records
        self.admission = admission
        # A cascade's stronger model is paced on its own: its rate limits are its own.
        self.escalation_admission = escalation_admission or admission
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
        self.stop_kind: str | None = None  # budget-reached, outage, refused, output-unwritable
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
    ) -> RowProcessor:
        """The engine on its own, as the tests and the benchmark run it: list prices, no
        budget, no allowance shared with other processes, and (unless given one) a pacer
        that learns its limits."""
        prices = PriceBook.load()
        worst_case = WorstCase(prices, spec.model)
        admission = Admission(pacer or Pacer(), max_concurrency, worst_case)
        recorder = Recorder(spec, run_id, committer, stats or RunStats(), prices, "realtime")
        stronger = None
        if spec.escalation is not None:
            stronger = Admission(Pacer(), max_concurrency, WorstCase(prices, spec.escalation.model))
        return cls(
            backend, admission, recorder, max_attempts=max_attempts, escalation_admission=stronger
        )

    def stop(self, reason: str, kind: str = "stopped") -> None:
        if self.stop_reason is None:
            self.stop_reason, self.stop_kind = reason, kind

    async def process_chunk(
        self,
        rows: Sequence[tuple[str, str]],
        width: int | None = None,
        chunk_run: int | None = None,
        chunk_retries: int = 0,
    ) -> ChunkReport:
        """Process every row not finished yet; raise if any is left unfinished.

        `width` caps this chunk's own requests in flight (its share of a limit held across
        processes); the run-wide cap applies as well. `chunk_run` is this run of the chunk
        (0: the first) of 1 + `chunk_retries`: each row keeps one attempt for every retry
        still to come (None: outside Prefect, every attempt in this run).
        """
        report = ChunkReport()
        todo = [(i, t) for i, t in rows if i not in self.finished]
        report.skipped = len(rows) - len(todo)
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
        row_id: str,
        text: str,
        chunk_width: asyncio.Semaphore | None,
        cap: int | None = None,
    ) -> str:
        # Commit as rows come in, not only when a chunk ends: a large chunk at a slow rate
        # would otherwise keep its results out of the dataset for minutes.
        outcome = await self._process(row_id, text, chunk_width, cap)
        await self.committer.commit_if_due()
        return outcome

    async def _process(
        self,
        row_id: str,
        text: str,
        chunk_width: asyncio.Semaphore | None = None,
        cap: int | None = None,
    ) -> str:
        """Attempt one row until it is answered, failed for good, out of the attempts
        this run of its chunk may make (`cap`, of the row's whole budget), or the run
        stops: "ok", "failed" or "unfinished"."""
        params = self._request(self.spec, text)
        row = RowAttempts(
            row_id, text, self.spec, self.admission, params, self.admission.estimator.raw(params)
        )
        row.attempt = self.attempts_made.get(row_id, 0)
        try:
            return await self._attempts(row, chunk_width, cap or self.max_attempts)
        finally:
            if row_id in self.finished:
                self.attempts_made.pop(row_id, None)
            elif row.attempt:
                self.attempts_made[row_id] = row.attempt

    async def _attempts(
        self, row: RowAttempts, chunk_width: asyncio.Semaphore | None, cap: int
    ) -> str:
        if row.attempt >= cap:
            return "unfinished"  # this run of the chunk has no attempt left for it
        while True:
            try:
                outcome = await self._attempt(row, chunk_width)
            except APIUnavailable as error:
                self.stop(str(error), "outage")
                return "unfinished"
            if outcome is None:  # a storm began while this one queued: not now
                continue
            if isinstance(outcome, Escalated):
                self._escalate(row, outcome)
                continue
            if isinstance(outcome, str):
                return outcome
            decision, sent_at = outcome
            # Outside the slot: waiting never holds one.
            verdict = self._after_error(row, decision, sent_at, cap)
            if verdict is not None:
                return verdict
            await self.sleep(decision.delay_s)

    def _request(self, spec: JobSpec, text: str, credit: str | None = None) -> dict[str, Any]:
        """A row's request to `spec`'s model; in a cascade, with the fallback-credit beta
        (and a refusal's credit, echoed in best-effort mode: the stronger model's request
        differs from the refused one, and a credit that cannot apply must not fail it)."""
        params = spec.request(text)
        if self.spec.escalation is not None:
            params["extra_headers"] = {"anthropic-beta": FALLBACK_CREDIT_BETA}
            if credit is not None:
                params["extra_body"] = {
                    "fallback_credit_token": {"token": credit, "mode": "best_effort"}
                }
        return params

    def _escalate(self, row: RowAttempts, escalated: Escalated, credit: str | None = None) -> None:
        """Ask the row again of the cascade's stronger model, from a fresh attempt count."""
        stronger = self.spec.escalation
        assert stronger is not None  # only a cascade escalates
        self.stats.count_escalated(escalated.reason)
        row.answered += row.attempt + 1
        row.spec, row.admission, row.escalated = stronger, self.escalation_admission, escalated
        row.params = self._request(stronger, row.text, credit)
        row.raw_tokens = row.admission.estimator.raw(row.params)
        row.attempt = row.grown = 0

    def _escalation(self, row: RowAttempts, result: str) -> Escalated | None:
        """Whether a first model's answer is one the cascade re-asks."""
        if row.escalated is None and self.spec.escalates(result):
            return Escalated(self.spec.model, f"label: {result}")
        return None

    async def _attempt(
        self, row: RowAttempts, chunk_width: asyncio.Semaphore | None
    ) -> str | Escalated | tuple[policy.Decision, float] | None:
        """One send, holding a slot: "ok" or "unfinished" when that settles the row, an
        escalation, else the error's decision and when the request went; None if it never
        went."""
        admission = row.admission
        async with admission.slot(chunk_width) as probe:
            if self.stop_reason is not None:
                return "unfinished"
            input_estimate = admission.estimator.estimate(row.raw_tokens)
            try:
                held = await admission.hold_budget(input_estimate, row.params["max_tokens"])
            except BudgetExhausted as error:
                self.stop(str(error), "budget-reached")
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
                reply = await self.backend.create(row.params)
            except (anthropic.AnthropicError, InvalidModelOutput) as error:
                admission.release(reservation)
                return row.decide(error, self.rng), started
            else:
                admission.learn(reply, reservation, row.raw_tokens, started)
                cost = self.recorder.bill(reply.message.usage, row.spec.model)
                row.bill(cost)
                try:
                    result = row.spec.parse(reply.message, row.params["max_tokens"])
                except InvalidModelOutput as error:  # refused, cut short, or off-shape
                    return row.decide(error, self.rng), started
                if (escalated := self._escalation(row, result)) is not None:
                    row.first_answer = (result, reply.message.usage)
                    return escalated
                latency_ms = (time.monotonic() - started) * 1000
                usage = reply.message.usage
                answered = row.answered + row.attempt + 1
                if self._settled(row.id, lambda: self.recorder.ok(
                    row.id, result, usage, answered, row.billed, latency_ms, row.escalated
                )):  # fmt: skip
                    return "ok"
                return "unfinished"  # answered but not journaled: the run stops
            finally:
                admission.answered()
                # An error is not billed; a timeout might be, unknowably (see README).
                await admission.settle_budget(held, cost or 0.0)

    def _after_error(
        self, row: RowAttempts, decision: policy.Decision, sent_at: float, cap: int
    ) -> str | None:
        """React to a failed attempt: "failed" or "unfinished" if the row is settled,
        None to try again after `decision.delay_s`."""
        self._count_error(decision)
        self.last_error = f"{decision.error_type}: {decision.message}"
        row.admission.on_error(decision, sent_at)
        if decision.action is Action.STOP_RUN:
            self.stop(decision.message, "refused")
            return "unfinished"
        if decision.action is Action.FAIL_ROW:
            if (
                decision.cause is Cause.OUTPUT
                and row.escalated is None
                and self.spec.escalation is not None
            ):  # refused, cut short at the largest room, or off-shape: the stronger model
                self._escalate(row, Escalated(self.spec.model, decision.error_type),
                               decision.fallback_credit)  # fmt: skip
                return None
            if row.first_answer is not None:  # the stronger model failed: keep the first's
                result, usage = row.first_answer
                kept = self._settled(row.id, lambda: self.recorder.ok(
                    row.id, result, usage, row.answered + row.attempt + 1, row.billed,
                ))  # fmt: skip
                return "ok" if kept else "unfinished"
            journaled = self._settled(row.id, lambda: self.recorder.failed(
                row.id, decision.error_type, decision.status_code, decision.message,
                row.answered + row.attempt + 1, row.billed, decision.stop_reason, row.escalated,
            ))  # fmt: skip
            return "failed" if journaled else "unfinished"
        row.attempt += 1
        if decision.action is Action.GROW:
            row.grown += 1
            self.stats.truncated_retries += 1
            grown = row.spec.request(row.text, row.grown)
            row.params = {**row.params, **grown}
        if row.attempt >= cap:
            return "unfinished"
        self.stats.retries += 1
        return None

    def _settled(self, row_id: str, record: Callable[[], None]) -> bool:
        """Journal a row's outcome; if the output cannot take it, stop the run (False)."""
        try:
            record()
        except OutputUnwritable as error:
            self.stop(str(error), "output-unwritable")
            return False
        self.finished.add(row_id)
        return True

    def _count_error(self, decision: policy.Decision) -> None:
        name = _COUNTER_OF_CAUSE.get(decision.cause)
        if name is not None:
            setattr(self.stats, name, getattr(self.stats, name) + 1)
