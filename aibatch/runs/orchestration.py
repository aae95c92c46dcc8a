"""How a run is spread over Prefect: chunk sizes and their retries, and the names and sizes
of what aibatch keeps on a Prefect server (limits, work pool, Secret block).

Plain values, no Prefect import: the run's parameters describe them (the UI's form), the
Prefect layer (flows/, tasks/, aibatch/prefect_server/) acts on them. The engine knows
none of them: a chunk's retries reach it only as a number (`policy.attempt_cap`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Per chunk (a Prefect task run).
MIN_CHUNK_SIZE = 50
MAX_CHUNK_SIZE = 500
CHUNK_RETRIES = 3
CHUNK_RETRY_DELAYS_S: list[float] = [5.0, 15.0, 45.0]

# Chunks running at once, across every run on the server: the concurrency limit of a tag.
CHUNK_LIMIT_TAG = "aibatch-chunks"
CHUNK_LIMIT_NAME = f"tag:{CHUNK_LIMIT_TAG}"  # how Prefect names a tag's concurrency limit
DEFAULT_CHUNK_SLOTS = 4

# On a Prefect server (`aibatch setup` creates these; prefect.yaml names the pool).
WORK_POOL = "aibatch-process"
API_KEY_BLOCK = "anthropic-api-key"  # a Secret block, read when the environment has no key

# Requests in flight across every run and worker: a Prefect concurrency limit; each chunk
# holds its share (limit // chunk slots) of it while it runs, and sends no more at once.
IN_FLIGHT_LIMIT_NAME = "aibatch-in-flight"

# Several processes, one API key: Prefect rate limits (global concurrency limits with slot
# decay) grant requests, input tokens and output tokens to every run and worker that uses
# this server, each limit on its own and each only if it exists.
SHARED_RATE_LIMIT_NAME = "aibatch-requests"
SHARED_INPUT_TOKENS_LIMIT_NAME = "aibatch-input-tokens"
SHARED_OUTPUT_TOKENS_LIMIT_NAME = "aibatch-output-tokens"
# One slot is a tenth of a request: the server decays whole slots only, and drops the
# fraction at every update, so coarse slots would lose a visible share of the rate.
SLOTS_PER_REQUEST = 10
# One slot is a token: token limits run to hundreds a second and more, so the fraction
# dropped is a small share of them.
SLOTS_PER_TOKEN = 1


@dataclass(frozen=True)
class SharedRate:
    """A rate shared across runs and workers: its limit's name on the server, what it
    counts (for messages) and how many of the limit's slots one of those takes."""

    name: str
    unit: str
    slots_per_unit: int


SHARED_REQUESTS = SharedRate(SHARED_RATE_LIMIT_NAME, "requests", SLOTS_PER_REQUEST)
SHARED_INPUT_TOKENS = SharedRate(SHARED_INPUT_TOKENS_LIMIT_NAME, "input tokens", SLOTS_PER_TOKEN)
SHARED_OUTPUT_TOKENS = SharedRate(SHARED_OUTPUT_TOKENS_LIMIT_NAME, "output tokens", SLOTS_PER_TOKEN)
# Each acquisition costs a round trip to the server (~100 ms): fetch about this many
# seconds of the shared rate at once, never per request.
SHARED_BATCH_S = 0.5
# The limit's burst (its slot count) in seconds of the rate: what may go at once after a
# pause. Two batches, so one process can hold a batch while the next decays.
SHARED_BURST_S = 1.0


def auto_chunk_size(rows: int, chunk_slots: int) -> int:
    """Rows per chunk when none is given: the pending rows spread over the chunk slots,
    within MIN_CHUNK_SIZE..MAX_CHUNK_SIZE. Few task runs: each costs API calls and database
    rows on the Prefect server, and a chunk waits for its task run to start (seconds, on a
    busy local server) while the others' rows keep the engine busy."""
    return max(MIN_CHUNK_SIZE, min(MAX_CHUNK_SIZE, math.ceil(rows / max(1, chunk_slots))))


# Events a run sends to Prefect for what an operator acts on (automations match them):
# `aibatch.run.<kind>`, about the resource `aibatch.job.<job>`.
EVENT_PREFIX = "aibatch.run."


def operator_events(
    summary: dict[str, object], stop_kind: str | None, storms: int
) -> list[tuple[str, dict[str, object]]]:
    """(event name, payload) for what happened in a run that someone may need to act on:
    a stop (budget reached, outage, key or spend cap refused, output unwritable), 429
    storms, refusals, every row failed."""
    figures = {k: summary.get(k) for k in (
        "run_id", "job", "model", "ok", "failed", "refusals", "http_429", "cost_usd",
    )}  # fmt: skip
    events: list[tuple[str, dict[str, object]]] = []
    if stop_kind is not None:
        events.append((EVENT_PREFIX + stop_kind, figures))
    if storms:
        events.append((EVENT_PREFIX + "storm", {**figures, "storms": storms}))
    refusals = summary.get("refusals")
    if isinstance(refusals, int) and refusals:
        events.append((EVENT_PREFIX + "refusals", figures))
    if summary.get("failed") and not summary.get("ok"):
        events.append((EVENT_PREFIX + "all-failed", figures))
    return events
