"""Settings of the Messages API simulator: limits, latency and injected faults.

Every field can be set from the `aibatch simulate-api` command line, from the in-process
fixture, or changed while the server runs (`POST /_sim/config`), so one test can, say,
lift a spend cap and show that a re-run then completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field


class TimeWindow(BaseModel):
    """A span of time, in seconds after the server started."""

    model_config = ConfigDict(frozen=True)
    kind: ClassVar[str] = "time window"  # named in the error for a bad START:DURATION

    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)

    @classmethod
    def parse(cls, spec: str) -> Self:
        """Read `START:DURATION` (seconds), as given on the command line."""
        try:
            start, duration = spec.split(":")
            return cls(start_s=float(start), duration_s=float(duration))
        except ValueError as exc:
            raise ValueError(f"{cls.kind} {spec!r} is not START:DURATION in seconds") from exc

    def left(self, seconds_since_start: float) -> float | None:
        """Seconds until the window ends, or None when it is not open now."""
        end = self.start_s + self.duration_s
        if self.start_s <= seconds_since_start < end:
            return end - seconds_since_start
        return None


class StormWindow(TimeWindow):
    """A span of time in which every message is a 429."""

    kind: ClassVar[str] = "storm window"


class OutageWindow(TimeWindow):
    """A span of time in which every message is an overload (529, or 503 as a gateway
    answers); a long duration stands for an outage that never ends."""

    kind: ClassVar[str] = "outage window"


def _open(windows: Sequence[TimeWindow], seconds_since_start: float) -> list[float]:
    """The seconds left of each window open now."""
    return [left for w in windows if (left := w.left(seconds_since_start)) is not None]


class SimulatorConfig(BaseModel):
    """What the simulated API enforces and how it misbehaves. `None` limits mean unlimited."""

    model_config = ConfigDict(validate_assignment=True, extra="forbid")

    # Rate limits, per minute, enforced as token buckets that hold `burst_seconds` worth.
    rpm: int | None = Field(default=None, ge=1, description="requests per minute")
    itpm: int | None = Field(default=None, ge=1, description="input tokens per minute")
    otpm: int | None = Field(default=None, ge=1, description="output tokens per minute")
    burst_seconds: float = Field(
        default=60.0, gt=0, le=60, description="window a minute's limit is enforced over"
    )
    window: Literal["bucket", "sliding"] = Field(
        default="bucket",
        description="how the requests limit is enforced: a refilling bucket, as documented, "
        "or a sliding window of burst_seconds (stricter: no refill within the window)",
    )
    send_ratelimit_headers: bool = Field(
        default=True, description="send anthropic-ratelimit-* headers (proxies may strip them)"
    )
    send_retry_after: bool = Field(
        default=True, description="send retry-after on 429s (whole seconds, as the API does)"
    )
    ratelimit_header_set: Literal["full", "tokens"] = Field(
        default="full",
        description="'full': requests, tokens, input-tokens and output-tokens headers; "
        "'tokens': only the combined anthropic-ratelimit-tokens-* ones, as some gateways send",
    )
    # A colleague on the same key (one organisation shares the buckets) who steadily takes
    # this much, as far as the buckets allow: `remaining` falls and 429s come sooner.
    other_client_rpm: int | None = Field(
        default=None, ge=1, description="requests per minute another client of the key takes"
    )
    other_client_itpm: int | None = Field(
        default=None, ge=1, description="input tokens per minute another client of the key takes"
    )

    # Latency: lognormal around a median, plus a cost per generated token.
    latency_ms: float = Field(default=0.0, ge=0, description="median latency of a message")
    latency_sigma: float = Field(default=0.0, ge=0, description="lognormal spread (0 = fixed)")
    ms_per_output_token: float = Field(default=0.0, ge=0)

    # Faults, each a probability per message request.
    p529: float = Field(default=0.0, ge=0, le=1, description="overloaded_error")
    first_529s: int = Field(
        default=0, ge=0, description="answer the first N messages overloaded_error (529)"
    )
    p500: float = Field(default=0.0, ge=0, le=1, description="api_error")
    p503: float = Field(
        default=0.0, ge=0, le=1, description="503 api_error Service Unavailable (a gateway's)"
    )
    overload_retry_after_s: float | None = Field(
        default=None,
        gt=0,
        description="send retry-after (whole seconds) and retry-after-ms on 529s and 503s",
    )
    p_drop: float = Field(default=0.0, ge=0, le=1, description="connection closed, no answer")
    p_slow: float = Field(default=0.0, ge=0, le=1, description="answer after slow_seconds")
    slow_seconds: float = Field(default=30.0, ge=0)
    storms: list[StormWindow] = Field(default_factory=list)
    outages: list[OutageWindow] = Field(default_factory=list)
    outage_status: Literal[529, 503] = Field(
        default=529, description="the answer during an outage: 529 overloaded_error or 503"
    )
    send_should_retry: bool = Field(
        default=False,
        description="x-should-retry on every error: true for 408, 409, 429 and 5xx, false for "
        "other 4xx (off: only on 500 and 529, as before)",
    )
    spend_cap_after: int | None = Field(
        default=None, ge=0, description="successful messages before the spend cap is hit"
    )

    revoke_key_after: int | None = Field(
        default=None, ge=0, description="successful messages before the key is refused (401)"
    )

    # Request validation.
    api_key: str | None = Field(default=None, description="when set, requests must carry it")
    # The per-model limits default to each model's own (see rules.py); a number overrides
    # them for every model.
    context_window: int | None = Field(
        default=None, ge=1, description="prompt + max_tokens limit (None: the model's own)"
    )
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    cache_min_tokens: int | None = Field(
        default=None, ge=0, description="shortest cacheable prefix (None: the model's own)"
    )
    cache_ttl_seconds: float = Field(default=300.0, gt=0)

    # Behaviour of the fake model.
    obey_injection: bool = Field(
        default=False, description="follow instructions found inside tickets (for tests)"
    )
    thinking_scale: float = Field(
        default=1.0, ge=0, description="multiplies thinking tokens (tests force long thinking)"
    )
    p_refusal: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of tickets refused (stop_reason refusal), by a hash of the ticket",
    )
    seed: int = 0

    # Message Batches.
    batch_processing_seconds: float = Field(default=2.0, ge=0)
    batch_p_errored: float = Field(default=0.0, ge=0, le=1)
    batch_p_expired: float = Field(default=0.0, ge=0, le=1)

    def storm_active(self, seconds_since_start: float) -> bool:
        return bool(_open(self.storms, seconds_since_start))

    def storm_left(self, seconds_since_start: float) -> float | None:
        """Seconds until the first open storm window ends, or None when none is open."""
        return min(_open(self.storms, seconds_since_start), default=None)

    def outage_active(self, seconds_since_start: float) -> bool:
        return bool(_open(self.outages, seconds_since_start))
