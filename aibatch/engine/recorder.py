"""Billing, journaling and counting what came back: the same for realtime and batch mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from aibatch.cost.pricing import PriceBook, Usage
from aibatch.engine.stats import RunStats
from aibatch.jobs.spec import JobSpec
from aibatch.output.committer import Committer
from aibatch.output.records import FailedRecord, OkRecord

Mode = Literal["realtime", "batch"]


@dataclass(frozen=True)
class _NoUsage:
    """The usage of a row answered by another row's call: nothing of its own."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


NO_USAGE = _NoUsage()


@dataclass(frozen=True)
class Escalated:
    """A row the first model of a cascade could not answer well, re-asked of the stronger
    one: that first model, and why."""

    from_model: str
    reason: str


@dataclass(eq=False)  # one per run: compared by identity
class Recorder:
    """Bills answers, journals outcomes and counts them in the run's stats.

    A journal that cannot take a record raises (`OutputUnwritable`): the caller stops.
    """

    spec: JobSpec
    run_id: str
    committer: Committer
    stats: RunStats
    prices: PriceBook
    mode: Mode
    # Rows asked once for several (identical requests): a row's id -> the ids of the rows
    # that take its outcome, journaled with it at no cost of their own.
    twins: dict[str, list[str]] = field(default_factory=dict)

    def bill(self, usage: Any, model: str | None = None) -> float | None:
        """What an answer of `model` (default: the job's) cost (None if the price is
        unknown), counted in the run's total."""
        model = model or self.spec.model
        cost = self.prices.cost_usd(model, Usage.of(usage), batch=self.mode == "batch")
        self.stats.add_cost(cost)
        return cost

    def ok(
        self,
        row_id: str,
        result: str,
        usage: Any,
        attempts: int,
        cost: float | None,
        latency_ms: float | None = None,
        escalated: Escalated | None = None,
    ) -> None:
        """Journal an answer; `cost` is what every billed answer for this row cost (both
        models' for an escalated row, whose answer is the stronger model's)."""
        spec = self.spec
        model = (
            spec.model if escalated is None or spec.escalation is None else spec.escalation.model
        )
        record = OkRecord({
            "kind": "ok", "id": row_id, "job": spec.job, "result": result,
            "model": model, "prompt_version": spec.prompt_version,
            "escalated_from": escalated.from_model if escalated else None,
            "escalation_reason": escalated.reason if escalated else None,
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
            "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
            "attempts": attempts,
            "latency_ms": round(latency_ms, 3) if latency_ms is not None else None,
            "cost_usd": cost, "mode": self.mode, "run_id": self.run_id,
            "completed_at": datetime.now(UTC).isoformat(),
        })  # fmt: skip
        self.committer.record(record)
        self.stats.count_ok(usage)
        if latency_ms is not None:
            self.stats.latencies_ms.append(latency_ms)
        for twin in self.twins.get(row_id, ()):
            self.committer.record(OkRecord({
                **record, "id": twin, "input_tokens": 0, "output_tokens": 0,
                "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "attempts": 0,
                "latency_ms": None, "cost_usd": 0.0,
            }))  # fmt: skip
            self.stats.count_ok(NO_USAGE)
            self.stats.calls_saved += 1

    def failed(
        self,
        row_id: str,
        error_type: str,
        status_code: int | None,
        message: str,
        attempts: int,
        cost: float | None,
        stop_reason: str | None = None,
        escalated: Escalated | None = None,
    ) -> None:
        """Journal a permanent failure. An escalated row's is kept under the cascade's
        first model (its resume key), the message naming the model that failed."""
        spec = self.spec
        model = spec.model
        if escalated is not None:
            stronger = spec.escalation.model if spec.escalation is not None else spec.model
            message = (
                f"{stronger} (escalated from {escalated.from_model}: {escalated.reason}): {message}"
            )
            model = escalated.from_model
        record = FailedRecord({
            "kind": "failed", "id": row_id, "job": spec.job, "model": model,
            "prompt_version": spec.prompt_version, "error_type": error_type,
            "status_code": status_code, "message": message[:2000], "attempts": attempts,
            "cost_usd": cost, "stop_reason": stop_reason, "run_id": self.run_id,
            "failed_at": datetime.now(UTC).isoformat(),
        })  # fmt: skip
        self.committer.record(record)
        self.stats.count_failed(cost, error_type)
        for twin in self.twins.get(row_id, ()):
            self.committer.record(FailedRecord({**record, "id": twin, "cost_usd": 0.0}))
            self.stats.count_failed(0.0, error_type)
            self.stats.calls_saved += 1
