"""The journal's records, typed: what a run writes for each row it settles, and reads back.

One JSON object per line in a journal segment; the committer publishes `OkRecord`s as
result rows and `FailedRecord`s as failure rows, with the same names as those columns.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict, TypeGuard


class OkRecord(TypedDict):
    """An answer, as a results row before the answer's typed columns are filled in."""

    kind: Literal["ok"]
    id: str
    job: str
    result: str
    model: str
    prompt_version: str
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int
    cache_read_input_tokens: int
    attempts: int
    latency_ms: float | None  # None in batch mode: no request of its own to time
    cost_usd: float | None  # every billed answer for the row; None: price unknown
    mode: Literal["realtime", "batch"]
    run_id: str
    completed_at: str  # ISO 8601, UTC
    # A cascade's first model, when the answer is the next one's (absent before cascades).
    escalated_from: NotRequired[str | None]
    escalation_reason: NotRequired[str | None]


class FailedRecord(TypedDict):
    """A row that failed for good on this model (a 400, a refusal, an answer off-shape)."""

    kind: Literal["failed"]
    id: str
    job: str
    model: str
    prompt_version: str
    error_type: str
    status_code: int | None
    message: str
    attempts: int
    cost_usd: float | None  # answers billed before it failed
    stop_reason: str | None
    run_id: str
    failed_at: str  # ISO 8601, UTC


JournalRecord = OkRecord | FailedRecord

# The keys without which a record cannot be published, those the committer keys it by (and
# an answer's text). Others may be missing from a line an older aibatch journaled: their
# columns are null then, and the answer is not lost.
_KEYS = {
    "ok": frozenset({"id", "job", "model", "prompt_version", "result"}),
    "failed": frozenset({"id", "run_id"}),
}


def is_record(value: object) -> TypeGuard[JournalRecord]:
    """Whether a value read from a journal line is a record of a known kind with the keys
    it is published by."""
    if not isinstance(value, dict):
        return False
    keys = _KEYS.get(value.get("kind"))  # type: ignore[arg-type]
    return keys is not None and keys <= value.keys()
