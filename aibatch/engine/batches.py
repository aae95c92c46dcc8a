"""Message Batches mode: the pending rows as batches at half price, collected into the
same results and failures datasets as realtime answers.

Paying twice is the risk a batch brings: a batch, once created, is processed and billed
whether or not its creator is still alive. So every submission is written to a ledger
(OUTPUT/_aibatch/batches/) before the batch is created, and its batch id as soon as it is
known; a re-run resumes polling the batches of the ledger instead of creating new ones, and
never submits a row that an open batch already carries. If a crash fell between creating
a batch and recording its id, the batch is found among the key's newest batches by its
creation time and request count.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import anthropic
import orjson

from aibatch.cost.budget import Budget, WorstCase
from aibatch.cost.pricing import PriceBook
from aibatch.engine import policy
from aibatch.engine.backend import BatchesBackend, BatchOutcome, BatchStatus
from aibatch.engine.pacer import InputEstimator
from aibatch.engine.recorder import Escalated, Recorder
from aibatch.engine.stats import RunStats
from aibatch.errors import BatchGone
from aibatch.jobs.outputs import InvalidModelOutput
from aibatch.jobs.spec import JobSpec
from aibatch.output import crashpoints
from aibatch.output.committer import Committer
from aibatch.storage.location import Location, location

Sleep = Callable[[float], Awaitable[None]]
SubmissionState = Literal["submitting", "submitted", "collected", "abandoned"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def custom_id_for(row_id: str) -> str:
    """A `custom_id` the API accepts (`^[a-zA-Z0-9_-]{1,64}$`) for any row id.

    The readable part helps a person find a row in the console; the hash keeps ids that
    clean to the same text (`a/b`, `a_b`) apart. The ledger maps it back exactly.
    """
    readable = _UNSAFE.sub("_", row_id)[:40]
    digest = hashlib.blake2b(row_id.encode(), digest_size=8).hexdigest()
    return f"{readable}-{digest}" if readable else digest


@dataclass
class Submission:
    """One batch as the ledger keeps it."""

    key: str
    job: str
    model: str
    prompt_version: str
    round: int  # 0 for a first submission, n for the n-th resubmission of its rows
    recorded_at: str
    custom_ids: dict[str, str]  # custom_id -> row id
    reserved_usd: float = 0.0
    grown: int = 0  # times its rows' answers were cut short and max_tokens grown
    state: SubmissionState = "submitting"
    batch_id: str | None = None
    cancel_requested: bool = False
    note: str = ""
    # A cascade's escalation batch (model: the stronger one): per row, what the first model
    # left, so a collection (even after a crash) records it: [first model, reason, the first
    # answer of a catch-all label or None, what the first call cost].
    escalations: dict[str, list[Any]] = field(default_factory=dict)

    def belongs_to(self, spec: JobSpec) -> bool:
        models = {spec.model} | ({spec.escalation.model} if spec.escalation else set())
        return (self.job, self.prompt_version) == (spec.job, spec.prompt_version) and (
            self.model in models
        )

    @property
    def open(self) -> bool:
        return self.state in ("submitting", "submitted")


class BatchLedger:
    """Submissions, one JSON file each under OUTPUT/_aibatch/batches (outside the datasets),
    replaced atomically (on a disk a temporary file renamed over it; in a bucket one PUT)."""

    def __init__(self, directory: Location | Path | str) -> None:
        self.directory = directory if isinstance(directory, Location) else location(directory)

    def save(self, submission: Submission) -> None:
        (self.directory / f"{submission.key}.json").write_bytes(orjson.dumps(asdict(submission)))

    def load(self) -> list[Submission]:
        if self.directory.is_local and self.directory.local.is_dir():
            for stale in self.directory.local.glob(".*.tmp"):  # a crash mid-save: the old
                stale.unlink(missing_ok=True)  # file stands
        found = self.directory.files(".json", recursive=False)
        subs = [Submission(**orjson.loads(p.read_bytes())) for p in found]
        return sorted(subs, key=lambda s: (s.recorded_at, s.key))

    def open_for(self, spec: JobSpec) -> list[Submission]:
        return [s for s in self.load() if s.open and s.belongs_to(spec)]


@dataclass
class BatchRequest:
    custom_id: str
    row_id: str
    params: dict[str, Any]
    size_bytes: int
    worst_usd: float = 0.0


@dataclass
class CollectReport:
    succeeded: int = 0
    failed: int = 0
    to_resubmit: list[str] = field(default_factory=list)  # row ids (errored, expired)
    to_grow: list[str] = field(default_factory=list)  # cut short: submit with more room
    canceled: list[str] = field(default_factory=list)  # never processed: submit again
    gone: int = 0  # rows of a batch the API no longer has: a re-run submits them
    # A cascade's rows for its stronger model: row id -> [first model, reason, first answer
    # of a catch-all label or None, first call's cost] (as Submission.escalations).
    to_escalate: dict[str, list[Any]] = field(default_factory=dict)


class BatchRunner:
    """Submits, polls, collects and cancels the batches of one run (plain asyncio)."""

    def __init__(
        self,
        api: BatchesBackend,
        spec: JobSpec,
        committer: Committer,
        ledger: BatchLedger,
        run_id: str,
        stats: RunStats,
        prices: PriceBook,
        budget: Budget | None = None,
        max_requests: int = policy.BATCH_MAX_REQUESTS,
        max_bytes: int = policy.BATCH_MAX_BYTES,
        poll_first_s: float = policy.BATCH_POLL_FIRST_S,
        poll_max_s: float = policy.BATCH_POLL_MAX_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.api = api
        self.spec = spec
        self.committer = committer
        self.ledger = ledger
        self.run_id = run_id
        self.stats = stats
        self.prices = prices
        self.budget = budget
        self.max_requests = max_requests
        self.max_bytes = int(max_bytes * policy.BATCH_BYTES_HEADROOM)
        self.poll_first_s = poll_first_s
        self.poll_max_s = poll_max_s
        self.sleep = sleep
        self.worst_case = WorstCase(prices, spec.model, batch=True)
        self.recorder = Recorder(spec, run_id, committer, stats, prices, "batch")
        self.estimator = InputEstimator()
        self.rng = random.Random()
        self.statuses: dict[str, BatchStatus] = {}  # batch id -> last poll
        self.budget_note: str | None = None  # why the last plan left rows out
        self.left_out: list[tuple[str, str]] = []  # rows the budget kept out, for now

    # -- submitting ----------------------------------------------------------------------

    def plan(
        self, rows: Sequence[tuple[str, str]], grown: int = 0, escalating: bool = False
    ) -> list[list[BatchRequest]]:
        """Split rows into batches within the API's request and size limits (and the
        budget: rows whose worst case does not fit are left out, and noted). `grown`:
        how many times these rows' answers were cut short (max_tokens grows with it);
        `escalating`: asked of the cascade's stronger model."""
        spec = self.spec.escalation if escalating and self.spec.escalation else self.spec
        worst_case = WorstCase(self.prices, spec.model, batch=True)
        self.budget_note = None
        groups: list[list[BatchRequest]] = []
        current: list[BatchRequest] = []
        size = 0
        seen: dict[str, str] = {}
        for position, (row_id, text) in enumerate(rows):
            params = spec.request(text, grown, cache_ttl="1h")
            custom_id = custom_id_for(row_id)
            if seen.setdefault(custom_id, row_id) != row_id:  # 2^-64: but never silent
                raise ValueError(f"rows {seen[custom_id]!r} and {row_id!r} share a custom_id")
            body = orjson.dumps({"custom_id": custom_id, "params": params})
            request = BatchRequest(custom_id, row_id, params, len(body) + 1)
            if self.budget is not None:
                request.worst_usd = worst_case.cost_usd(
                    self.estimator.estimate(self.estimator.raw(params)), params["max_tokens"]
                )
                if not self.budget.try_reserve(request.worst_usd):
                    self.budget_note = self.budget.exhausted_message(request.worst_usd)
                    self.left_out.extend(rows[position:])
                    break
            if current and (
                len(current) >= self.max_requests or size + request.size_bytes > self.max_bytes
            ):
                groups.append(current)
                current, size = [], 0
            current.append(request)
            size += request.size_bytes
        if current:
            groups.append(current)
        return groups

    async def submit(
        self,
        group: Sequence[BatchRequest],
        round_: int,
        grown: int = 0,
        escalations: Mapping[str, list[Any]] | None = None,
    ) -> Submission:
        """Record the submission, create the batch, record its id: in that order.
        `escalations`: a cascade's rows for its stronger model (see Submission)."""
        model = group[0].params["model"] if group else self.spec.model
        submission = Submission(
            key=datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f") + "-" + uuid.uuid4().hex[:8],
            job=self.spec.job,
            model=model,
            prompt_version=self.spec.prompt_version,
            round=round_,
            recorded_at=datetime.now(UTC).isoformat(),
            custom_ids={r.custom_id: r.row_id for r in group},
            reserved_usd=sum(r.worst_usd for r in group),
            grown=grown,
            escalations={
                r.row_id: list(escalations[r.row_id])
                for r in group
                if escalations and r.row_id in escalations
            },
        )
        self.ledger.save(submission)
        crashpoints.reached("batch:recorded")
        status = await self.api.create_batch(
            [{"custom_id": r.custom_id, "params": r.params} for r in group]
        )
        crashpoints.reached("batch:created")
        submission.batch_id, submission.state = status.id, "submitted"
        self.ledger.save(submission)
        self.statuses[status.id] = status
        return submission

    async def recover(self, submission: Submission, claimed: set[str]) -> Submission:
        """A submission recorded without a batch id: adopt its batch if the API has one,
        else mark it abandoned (its rows are then pending again)."""
        recorded = datetime.fromisoformat(submission.recorded_at)
        earliest = recorded - timedelta(seconds=policy.BATCH_RECOVERY_SKEW_S)
        candidates = []
        async for status in self.api.recent_batches(policy.BATCH_RECOVERY_SCAN):
            if status.created_at is not None and status.created_at < earliest:
                break  # newest first: the rest are older still
            if status.id not in claimed and status.request_total == len(submission.custom_ids):
                candidates.append(status)
        if len(candidates) > 1:
            raise RuntimeError(
                f"batch submission {submission.key} has no recorded batch id and "
                f"{len(candidates)} batches could be it ({', '.join(c.id for c in candidates)}); "
                f"set its batch_id in {self.ledger.directory / submission.key}.json"
            )
        if candidates:
            submission.batch_id, submission.state = candidates[0].id, "submitted"
            submission.note = "batch id recovered from the API's batch list"
        else:
            submission.state = "abandoned"
            submission.note = "no batch was created (none found in the API's batch list)"
        self.ledger.save(submission)
        return submission

    # -- waiting -------------------------------------------------------------------------

    async def wait(self, submission: Submission) -> BatchStatus:
        """Poll until the batch ends: often at first, then every `poll_max_s` at most."""
        assert submission.batch_id is not None
        interval = self.poll_first_s
        while True:
            try:
                status = await self.api.retrieve_batch(submission.batch_id)
            except anthropic.NotFoundError:
                # Deleted at the API (or not this key's): nothing to collect, ever. Its
                # rows are pending again for the next run.
                submission.state, submission.note = "abandoned", "the API no longer has it"
                self.ledger.save(submission)
                raise BatchGone(
                    f"batch {submission.batch_id} is gone from the API (deleted?); its "
                    f"{len(submission.custom_ids)} rows will be submitted again by a re-run"
                ) from None
            self.statuses[status.id] = status
            self.stats.status = self.describe()
            if status.ended:
                return status
            await self.sleep(interval)
            interval = min(self.poll_max_s, interval * policy.BATCH_POLL_GROWTH)

    def describe(self) -> str:
        """One line for the progress bar: batches by status, and their request counts."""
        by_status: dict[str, int] = {}
        counts: dict[str, int] = {}
        for status in self.statuses.values():
            by_status[status.processing_status] = by_status.get(status.processing_status, 0) + 1
            for name, count in status.counts.items():
                counts[name] = counts.get(name, 0) + count
        batches = ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
        kinds = ("processing", "succeeded", "errored", "expired", "canceled")
        shown = ", ".join(f"{counts[k]} {k}" for k in kinds if counts.get(k))
        return f"batches: {batches}" + (f" ({shown})" if shown else "")

    # -- collecting ----------------------------------------------------------------------

    async def collect(self, submission: Submission, finished: set[str]) -> CollectReport:
        """Journal every result of an ended batch; say which rows to submit again.

        `finished` holds ids already in results: a batch collected twice (a crash during
        collection) journals them again, and publishing keeps each id once.
        """
        assert submission.batch_id is not None
        report = CollectReport()
        spent = 0.0
        async for outcome in self.api.batch_results(submission.batch_id):
            row_id = submission.custom_ids.get(outcome.custom_id)
            if row_id is None:
                continue  # not ours: cannot happen unless the ledger was edited
            spent += self._take(outcome, row_id, submission, finished, report)
            await self.committer.commit_if_due()
        await self.committer.commit()
        crashpoints.reached("batch:collected")
        submission.state = "collected"
        self.ledger.save(submission)
        if self.budget is not None:
            self.budget.settle_now(submission.reserved_usd, spent)
        return report

    def _take(
        self,
        outcome: BatchOutcome,
        row_id: str,
        submission: Submission,
        finished: set[str],
        report: CollectReport,
    ) -> float:
        """Journal one result; return what it cost."""
        attempts = submission.round + 1
        if row_id in finished:
            return 0.0  # collected before a crash: published, and counted in what was spent
        if outcome.kind == "succeeded" and outcome.message is not None:
            spec = self._spec_of(submission)
            cost = self.recorder.bill(outcome.message.usage, spec.model)
            note = submission.escalations.get(row_id)
            escalated = Escalated(note[0], note[1]) if note else None
            billed = None if cost is None or (note and note[3] is None) else (
                cost + (note[3] if note else 0.0))  # fmt: skip
            try:
                result = spec.parse(outcome.message, spec.max_tokens(submission.grown))
            except InvalidModelOutput as error:
                decision = policy.decide(error, 0, self.rng, submission.grown)
                if decision.action is policy.Action.GROW:
                    self.stats.truncated_retries += 1
                    report.to_grow.append(row_id)  # paid for, and asked again larger
                    return cost or 0.0
                if note is None and self.spec.escalation is not None:  # the stronger model
                    report.to_escalate[row_id] = [spec.model, decision.error_type, None, cost]
                    self.stats.count_escalated(decision.error_type)
                    return cost or 0.0
                if note is not None and note[2] is not None:  # keep the first model's answer
                    self.recorder.ok(row_id, note[2], outcome.message.usage, attempts, billed)
                    report.succeeded += 1
                else:
                    self.recorder.failed(
                        row_id, decision.error_type, None, decision.message, attempts, billed,
                        decision.stop_reason, escalated,
                    )  # fmt: skip
                    report.failed += 1
            else:
                if note is None and self.spec.escalates(result):
                    report.to_escalate[row_id] = [spec.model, f"label: {result}", result, cost]
                    self.stats.count_escalated(f"label: {result}")
                    return cost or 0.0
                self.recorder.ok(
                    row_id, result, outcome.message.usage, attempts, billed, escalated=escalated
                )
                report.succeeded += 1
            finished.add(row_id)
            return cost or 0.0
        if outcome.kind == "errored" and outcome.error_type in policy.BATCH_PERMANENT_ERRORS:
            error_type = outcome.error_type or "errored"
            self.recorder.failed(
                row_id, error_type, None, outcome.error_message or "", attempts, 0.0
            )
            finished.add(row_id)
            report.failed += 1
        elif outcome.kind in ("errored", "expired"):
            report.to_resubmit.append(row_id)  # neither is billed
        else:
            report.canceled.append(row_id)  # an earlier run was cancelled before it ran
        return 0.0

    def _spec_of(self, submission: Submission) -> JobSpec:
        """The spec a submission's requests were asked with: the cascade's stronger model's
        for an escalation batch."""
        stronger = self.spec.escalation
        return (
            stronger if stronger is not None and submission.model == stronger.model else self.spec
        )

    # -- cancelling ----------------------------------------------------------------------

    async def cancel_open(self, submissions: Iterable[Submission]) -> list[str]:
        """Ask the API to cancel every open batch (the flow is being cancelled)."""
        cancelled = []
        for submission in submissions:
            if submission.state != "submitted" or submission.batch_id is None:
                continue
            status = self.statuses.get(submission.batch_id)
            if status is not None and status.ended:
                continue
            await self.api.cancel_batch(submission.batch_id)
            submission.cancel_requested = True
            self.ledger.save(submission)
            cancelled.append(submission.batch_id)
        return cancelled


def next_round(
    collected: Iterable[tuple[Submission, CollectReport]], resubmits: int
) -> tuple[dict[tuple[int, int], list[str]], int]:
    """What to submit again after a round of collections, grouped by (round, grown), and how
    many rows are left unfinished (in a batch the API no longer has, or errored and
    expired after `resubmits` resubmissions)."""
    again: dict[tuple[int, int], list[str]] = {}
    unfinished = 0
    for submission, outcome in collected:
        unfinished += outcome.gone
        round_, grown = submission.round, submission.grown
        # Cancelled requests were never processed (nor billed): they keep their round.
        again.setdefault((round_, grown), []).extend(outcome.canceled)
        # Cut short: asked again with more room (policy bounds how often).
        again.setdefault((round_, grown + 1), []).extend(outcome.to_grow)
        if round_ < resubmits:
            again.setdefault((round_ + 1, grown), []).extend(outcome.to_resubmit)
        else:
            unfinished += len(outcome.to_resubmit)
    return {key: ids for key, ids in sorted(again.items()) if ids}, unfinished


def rows_in(submissions: Iterable[Submission]) -> set[str]:
    return {t for s in submissions for t in s.custom_ids.values()}


def texts_of(ids: Iterable[str], texts: Mapping[str, str]) -> list[tuple[str, str]]:
    """(id, text) of each id whose text the input still has."""
    return [(i, texts[i]) for i in ids if i in texts]
