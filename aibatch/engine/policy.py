"""The retry and limit policy: every number of the engine and every per-error decision.

The numbers of a run on Prefect (chunks, limits on the server) are in run/orchestration.py;
a job's room for answers in jobs/; the commit cadence in output/committer.py.

aibatch owns the only retry loop (the SDK client is built with `max_retries=0`, so its
retries and ours never multiply). For each failed attempt `decide` says what to do:

- 429 rate limit: wait `retry-after` plus jitter, without holding an in-flight slot;
- 529, 5xx, timeouts, dropped connections: the server's `retry-after` when it sends one
  (as the SDK honours it on every status), else exponential backoff with full jitter;
- 400, 404, 413, 422 and other client errors: a permanent failure of that row;
- `x-should-retry: true|false` from the server overrides the status, as in the SDK;
- 401, 403, the spend-cap 429: stop the whole run, since no retry can succeed;
- an answer cut short by `max_tokens`: asked again with more room, a bounded number of times;
- a refusal: a permanent failure of that row on this model (asking again gets the same).

`MAX_ATTEMPTS` bounds the requests for one row across every layer that retries: the engine's
loop spends them, keeping one for each retry of the row's chunk that Prefect may still make
(`attempt_cap`), so a chunk retried three times never multiplies them. A row still failing
after all of them is left unfinished: a re-run sends it again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import Enum

import anthropic

from aibatch.jobs.outputs import InvalidModelOutput, Refused, Truncated

# Per request.
MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 20.0
RETRY_AFTER_JITTER = 0.25  # up to this share of `retry-after` is added, so waiters spread out
RETRY_AFTER_FALLBACK_S = 1.0
# A server's wait longer than this is not followed as given (the SDK ignores one over 60 s):
# the attempt waits this long instead, and the outage gate keeps probing meanwhile.
RETRY_AFTER_MAX_S = 60.0
REQUEST_TIMEOUT_S = 60.0

# Answers cut short by `max_tokens` (thinking took more room than planned, or a long
# answer): asked again with max_tokens × TRUNCATION_GROWTH (a job's room: jobs/spec.py), at
# most TRUNCATION_RETRIES times.
# Bounded because each try is billed in full, and an answer that still does not fit in 4×
# the planned room is running away (repeating itself), not about to finish.
# `model_context_window_exceeded` is not retried: the prompt and answer filled the model's
# whole window, and more max_tokens cannot make the window larger; it fails as truncated.
TRUNCATION_RETRIES = 2

# An outage: when nothing but overload, server or connection errors come back (this many in
# a row, for requests sent after the first of them), one gate holds every send and lets a
# single probe through, after a wait that grows from the first to the cap (or the server's
# `retry-after`, if longer). Still down after the deadline: the run stops (exit 3).
OUTAGE_EVIDENT_ERRORS = 8
OUTAGE_PROBE_FIRST_S = 1.0
OUTAGE_PROBE_GROWTH = 2.0
OUTAGE_PROBE_MAX_S = 15.0
OUTAGE_DEADLINE_S = 600.0

# Pacing and concurrency (engine/pacer.py, engine/admission.py).
DEFAULT_MAX_CONCURRENCY = 16
# The bucket of each limit holds this many seconds of it: small enough that we never
# burst past a limit enforced over short windows, large enough to absorb jitter.
BUCKET_SECONDS = 1.0
# Without headers, a send rate found from 429s (`Pacer.on_rate_limited`): after a 429, the
# rate that got through (what the server admitted) less a margin; then probing past it, at
# first barely, faster the longer no 429 comes (so a limit that rose is found in seconds),
# like TCP's window probing. Its bucket holds a quarter of a second: a limit enforced over a
# sliding window refuses bursts a refilling bucket would take.
AIMD_START_RPS = 2.0
AIMD_MARGIN = 0.97  # after a 429: this share of the rate that drew it (or that got through)
AIMD_THROUGH = 0.85  # "most got through": answered at this share of the rate, or more
# ... less this: the rates are counts over 2 s, and at a few per second a request or two
# more or less (one answer still on its way) is noise, not a fall.
AIMD_THROUGH_SLACK_RPS = 1.0
AIMD_CUT = 0.7  # ... or of the allowed rate, when nothing got through to measure
# The first 429 with no rate known: what got through so far includes the burst an empty
# window admits at the start (twice the limit, or more), so half of it; a rate found too low
# climbs back in seconds, one too high costs a 429 per request over it.
AIMD_FIRST_CUT = 0.5
# ... which is only a guess: under a limit enforced over a sliding window what got through
# was the limit, not twice it. So the rate climbs back fast (this much a second) to this
# share of what got through, and probes on from there: a burst-filled bucket costs a few
# more 429s as the climb passes the limit; a window no longer costs ten seconds below it.
AIMD_FIRST_CLIMB_TO = 0.9
AIMD_FIRST_CLIMB_PER_S = 0.35
AIMD_PROBE_PER_S = 0.0005  # growth per second just after a step back from a probe
# ... and after a cut to what got through: that estimate is rough (it counts the lull the
# limit's fall caused), so the rate climbs back faster
AIMD_PROBE_AFTER_FALL_PER_S = 0.03
AIMD_PROBE_DOUBLING_S = 2.5  # ... doubling every this many seconds without a 429
# ... and twice as often once it has been quiet this long: a run at the limit (its own or
# a share of a key) meets a 429 every few seconds, so a longer calm says the limit rose or
# the key's other client left, and the run should take what is free within seconds.
AIMD_PROBE_QUIET_S = 6.0
AIMD_PROBE_LATE_DOUBLING_S = 1.25
AIMD_PROBE_MAX_PER_S = 0.5
AIMD_IN_USE = 0.85  # the rate only grows while we send at least this share of it
AIMD_BUCKET_S = 0.25
# A step back that lands within this share of the rate of the previous one: the limit is
# where it was, so the probe slows (halving, down to AIMD_PROBE_PER_S).
AIMD_SAME_LIMIT = 0.05
# A fall to within this share of the rate the last fall found: not a new limit (another
# client of the key keeps taking its share), so the probe slows instead of climbing fast.
AIMD_SAME_FALL = 0.15
# Cuts for a whole round trip with no clean answer between (for a request sent after a
# cut): the server's window is still full of what we sent before, and any rate would be
# refused until it drains. (Quicker ones can come from one overshoot: a 429 comes back in
# milliseconds, a clean answer only after the model's latency.) Everyone pauses this long:
# the API's retry-after comes in whole seconds, at least one.
AIMD_PAUSE_S = 1.0
# `remaining` below this many seconds of our own send rate: the server's bucket is about
# empty, shared or not, so the found rate holds instead of probing past it.
SERVER_LOW_S = 0.5
# While nothing paces the sends (no limit stated or found), they are spread at this many
# times the rate the concurrency sustains, as TCP paces its slow start, not sent in the
# bursts that answers release: a burst into a limit's window draws a 429 for every request
# past it before the first 429 is back to say so. RAMP_BURST go at once.
RAMP_PACING_GAIN = 2.0
RAMP_BURST = 4.0
# Concurrency. The API has acceleration limits, so it starts low, but it triples every
# round trip while answers come back fast and clean: 8, 24, 72, 216 in three round trips.
START_CONCURRENCY = 8
SLOW_START_GROWTH = 2.0  # per answer while slow-starting: triples every round trip
MAX_CONCURRENCY = 512
BACKOFF_FACTOR = 0.7
# After slow start: growth per answer, i.e. 5% per round trip at first, doubling every
# CONGESTION_AVOIDANCE_DOUBLING_RTTS clean round trips up to the cap, like the rate's probe
# (a lag spike that ended slow start early must not leave minutes of +5% steps).
CONGESTION_AVOIDANCE_GROWTH = 0.05
CONGESTION_AVOIDANCE_MAX_GROWTH = 0.4
CONGESTION_AVOIDANCE_DOUBLING_RTTS = 4.0
LATENCY_QUEUEING_FACTOR = 2.0  # latency this far above its floor means we queue: stop growing
# Our own event loop running callbacks late means the client is short of CPU: more in flight
# would only queue here, so stop growing. Each answer then waits about that lag before its
# slot passes on, so lag as a share of the round trip is the throughput lost to it.
LOOP_LAG_BUSY_SHARE = 0.1
LOOP_LAG_BUSY_MIN_S = 0.002  # below this, timer jitter
LOOP_LAG_SHED = 0.9
# A 429 storm: only 429s for this long (no answer between) closes the gate for everyone.
STORM_EVIDENT_S = 1.0
STORM_MAX_PAUSE_S = 60.0
STORM_PROBE_POLL_S = 0.05

# Spend caps come as 429s, but retrying them cannot succeed until the cap resets.
SPEND_CAP_CODES = frozenset({"enforced_spend_limit_reached", "contract_spend_limit_reached"})


class Action(Enum):
    RETRY_AFTER = "retry_after"  # the server said when
    GROW = "grow"  # cut short: ask again at once with a larger max_tokens
    BACKOFF = "backoff"  # transient: exponential backoff with full jitter
    FAIL_ROW = "fail_row"  # permanent for this row: record it, never retry
    STOP_RUN = "stop_run"  # nothing can succeed: stop everything now


class Cause(Enum):
    """What went wrong, as the engine counts it and the pacer reacts to it."""

    RATE_LIMITED = "rate_limited"  # 429: we (or the key's other users) are too fast
    OVERLOADED = "overloaded"  # 529: the API is too busy
    SERVER = "server"  # other 5xx, 408, 409
    CONNECTION = "connection"  # no answer: dropped connection or timeout
    REFUSED = "refused"  # bad key, no permission, spend cap
    REQUEST = "request"  # this request can never succeed (400, 404, 413, ...)
    OUTPUT = "output"  # the model answered, but not in the shape asked for
    OTHER = "other"


@dataclass(frozen=True)
class Decision:
    action: Action
    delay_s: float
    error_type: str
    message: str
    status_code: int | None = None
    cause: Cause = Cause.OTHER
    stop_reason: str | None = None  # for answers that were not complete
    fallback_credit: str | None = None  # a refusal's credit for a retry on another model

    @property
    def congestion(self) -> bool:
        """A sign to send less: 429s slow the send rate (pacer), 529s the concurrency."""
        return self.cause in (Cause.RATE_LIMITED, Cause.OVERLOADED)


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] (attempt counts from 0)."""
    return rng.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))


def server_wait_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait the server asked for: `retry-after-ms`, else `retry-after` (seconds or an
    HTTP date), as the SDK reads them; None if neither is there or readable."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def limit_reset_wait_s(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """For a 429 without `retry-after`: until the exhausted limit resets, by its
    `anthropic-ratelimit-*-reset` (RFC 3339). Of the limits with nothing remaining, the one
    that resets last; None if no such limit is stated."""
    wall = time.time() if now is None else now
    waits = []
    for name in ("requests", "tokens", "input-tokens", "output-tokens"):
        remaining = headers.get(f"anthropic-ratelimit-{name}-remaining")
        reset = headers.get(f"anthropic-ratelimit-{name}-reset")
        if remaining is None or reset is None or remaining.strip() not in ("0", "0.0"):
            continue
        try:
            at = datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        waits.append(max(0.0, at - wall))
    return max(waits) if waits else None


def should_retry(headers: Mapping[str, str]) -> bool | None:
    """The server's `x-should-retry` (the SDK obeys it over the status), or None."""
    value = headers.get("x-should-retry", "").strip().lower()
    return {"true": True, "false": False}.get(value)


def attempt_cap(max_attempts: int, chunk_run: int | None, retries: int = 0) -> int:
    """How many attempts a row may have made by the end of its chunk's run `chunk_run` (0:
    the first; None: outside Prefect, every attempt now). Each retry still to come keeps
    one, so the chunk's retries and the engine's loop share one budget per row."""
    if chunk_run is None:
        return max_attempts
    return min(max_attempts, max(chunk_run + 1, max_attempts - (retries - chunk_run)))


def _describe(error: BaseException) -> str:
    if isinstance(error, anthropic.APIStatusError):
        return error.api_message or error.message
    return str(error) or type(error).__name__


def decide(error: BaseException, attempt: int, rng: random.Random, grown: int = 0) -> Decision:
    """What to do after `error` on attempt number `attempt` (0 for the first), when the
    request's max_tokens has been grown `grown` times already."""
    kind = type(error).__name__
    message = _describe(error)
    if isinstance(error, Refused):
        return Decision(
            Action.FAIL_ROW, 0.0, "refusal", message, cause=Cause.OUTPUT,
            stop_reason=error.stop_reason, fallback_credit=error.fallback_credit,
        )  # fmt: skip
    if isinstance(error, Truncated):
        if error.stop_reason == "max_tokens" and grown < TRUNCATION_RETRIES:
            return Decision(
                Action.GROW, 0.0, "truncated", message, cause=Cause.OUTPUT,
                stop_reason=error.stop_reason,
            )  # fmt: skip
        return Decision(
            Action.FAIL_ROW, 0.0, "truncated", message, cause=Cause.OUTPUT,
            stop_reason=error.stop_reason,
        )  # fmt: skip
    if isinstance(error, InvalidModelOutput):
        return Decision(Action.FAIL_ROW, 0.0, kind, message, cause=Cause.OUTPUT)
    if isinstance(error, anthropic.APIStatusError):
        status = error.status_code
        if isinstance(error, anthropic.RateLimitError) and error.error_code in SPEND_CAP_CODES:
            return Decision(
                Action.STOP_RUN, 0.0, kind, f"spend limit reached: {message}", status,
                Cause.REFUSED,
            )  # fmt: skip
        if isinstance(error, anthropic.AuthenticationError | anthropic.PermissionDeniedError):
            return Decision(
                Action.STOP_RUN, 0.0, kind, f"the API refused the key: {message}", status,
                Cause.REFUSED,
            )  # fmt: skip
        return _transient_or_not(error, kind, message, attempt, rng)
    if isinstance(error, anthropic.APIConnectionError):  # includes APITimeoutError
        return Decision(
            Action.BACKOFF, backoff_delay(attempt, rng), kind, message, cause=Cause.CONNECTION
        )
    # Any other SDK error (a response that fails validation, say): transient; the attempt
    # budget bounds it and a chunk retry makes it visible in Prefect.
    return Decision(Action.BACKOFF, backoff_delay(attempt, rng), kind, message)


def _transient_or_not(
    error: anthropic.APIStatusError, kind: str, message: str, attempt: int, rng: random.Random
) -> Decision:
    """A status error that does not stop the run: retried after the server's wait (any
    status that carries one), else backed off; or the row's permanent failure."""
    status, headers = error.status_code, error.response.headers
    if isinstance(error, anthropic.RateLimitError):
        cause = Cause.RATE_LIMITED
    elif status in (503, 529):  # overloaded, or unavailable: the API is too busy
        cause = Cause.OVERLOADED
    elif status >= 500 or status in (408, 409):
        cause = Cause.SERVER
    else:
        cause = Cause.REQUEST
    retry = should_retry(headers)
    if retry is None:
        retry = cause is not Cause.REQUEST
    if not retry:
        said = " (the server said not to retry)" if cause is not Cause.REQUEST else ""
        return Decision(Action.FAIL_ROW, 0.0, kind, message + said, status, cause)
    wait = server_wait_s(headers)
    if wait is None and cause is Cause.RATE_LIMITED:
        wait = limit_reset_wait_s(headers)
    if wait is None:
        return Decision(Action.BACKOFF, backoff_delay(attempt, rng), kind, message, status, cause)
    wait = min(max(wait, 0.05), RETRY_AFTER_MAX_S) * (1.0 + rng.uniform(0.0, RETRY_AFTER_JITTER))
    return Decision(Action.RETRY_AFTER, wait, kind, message, status, cause)


# Message Batches (`--mode batch`): half price, answered within 24 h.
BATCH_MAX_REQUESTS = 100_000  # the API's limits per batch
BATCH_MAX_BYTES = 256 * 1024 * 1024
BATCH_BYTES_HEADROOM = 0.9  # the request body carries JSON framing beyond our own count
# Poll often at first (small batches end in minutes), then settle at a slow pace: a batch
# may take hours, and each poll is an API call.
BATCH_POLL_FIRST_S = 5.0
BATCH_POLL_GROWTH = 1.5
BATCH_POLL_MAX_S = 60.0
# Errored (retryable) and expired requests go into a new batch, at most this many times.
BATCH_RESUBMITS = 3
# Batch errors that resubmitting cannot mend: the row is a failure, as in realtime.
BATCH_PERMANENT_ERRORS = frozenset(
    {"invalid_request_error", "not_found_error", "request_too_large", "permission_error"}
)
# When a crash came between creating a batch and recording its id, look for it among the
# key's newest batches, created this long before the submission was recorded at most.
BATCH_RECOVERY_SKEW_S = 120.0
BATCH_RECOVERY_SCAN = 200
