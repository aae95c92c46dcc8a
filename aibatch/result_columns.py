"""The results' own columns: the output's contract (README, "Output").

A leaf below every layer: the input loader renames input columns that would take one of
these names, and a json job's answer properties must keep clear of them, long before the
output layer writes a row.
"""

from __future__ import annotations

import pyarrow as pa

RESULT_COLUMNS = pa.schema([
    ("id", pa.string()),
    ("job", pa.string()),
    ("result", pa.string()),
    ("model", pa.string()),
    ("prompt_version", pa.string()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("cache_creation_input_tokens", pa.int64()),
    ("cache_read_input_tokens", pa.int64()),
    ("attempts", pa.int32()),
    ("latency_ms", pa.float64()),
    ("cost_usd", pa.float64()),
    ("mode", pa.string()),  # realtime, or batch (Message Batches: half price, no latency)
    ("run_id", pa.string()),
    ("completed_at", pa.timestamp("us", tz="UTC")),
    # A cascade's rows that the first model could not answer well: that model, and why
    # (refusal, truncated, invalid, or "label: other"); null where the first model answered.
    ("escalated_from", pa.string()),
    ("escalation_reason", pa.string()),
])  # fmt: skip
# aibatch's own columns in every results dataset, the partition column included: input
# columns and answer properties of these names would overwrite one of them.
OWN_COLUMNS = frozenset([*RESULT_COLUMNS.names, "run_date"])
