"""What a run counts as it goes: read by the progress bar, the artifacts and the summary.

Apart from the processor that fills them in (realtime) and the batch runner (batch mode),
so that the run layer and the reports read them without importing either.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any


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
    escalated: int = 0  # rows a cascade re-asked of its stronger model
    escalation_reasons: dict[str, int] = field(default_factory=dict)
    calls_saved: int = 0  # rows answered by another row's call (the same request)
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

    def count_escalated(self, reason: str) -> None:
        self.escalated += 1
        self.escalation_reasons[reason] = self.escalation_reasons.get(reason, 0) + 1

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def all_failed(self, failures_dir: Any) -> str | None:
        """A plain message when every row this run finished failed (None otherwise): such
        a run must not look like a success."""
        if self.ok or not self.failed:
            return None
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(self.failures_by_type.items()))
        return (
            f"every row sent failed ({self.failed} of {self.failed}: {kinds}); no result "
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
            "rows": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "unfinished": self.total - self.done,
            "http_requests": self.http_requests,
            "retries": self.retries,
            "truncated_retries": self.truncated_retries,
            "refusals": self.refusals,
            "failures_by_type": dict(sorted(self.failures_by_type.items())),
            "escalated": self.escalated,
            "escalation_reasons": dict(sorted(self.escalation_reasons.items())),
            "calls_saved": self.calls_saved,
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
            "rows_per_s": round(self.done / elapsed, 2) if elapsed > 0 else None,
            "latency_p50_ms": percentile(0.50),
            "latency_p95_ms": percentile(0.95),
            "latency_mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        }


@dataclass
class ChunkReport:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    unfinished: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"ok": self.ok, "failed": self.failed, "skipped": self.skipped,
                "unfinished": self.unfinished}  # fmt: skip
