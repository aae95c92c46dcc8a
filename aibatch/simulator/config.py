"""Settings of the Messages API simulator: limits, latency and injected faults.

Every field can be set from the `aibatch simulate-api` command line, from the in-process
fixture, or changed while the server runs (`POST /_sim/config`), so one test can, say,
lift a spend cap and show that a re-run then completes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    rpm: int | None = Field(
        default=None, ge=1, description="Requests per minute (default unlimited)."
    )
    itpm: int | None = Field(
        default=None, ge=1, description="Input tokens per minute (default unlimited)."
    )
    otpm: int | None = Field(
        default=None, ge=1, description="Output tokens per minute (default unlimited)."
    )
    burst_seconds: float = Field(
        default=60.0,
        gt=0,
        le=60,
        description="Window a minute's limit is enforced over, e.g. 2 for 1/30 of it.",
    )
    window: Literal["bucket", "sliding"] = Field(
        default="bucket",
        description="How the requests limit is enforced: a refilling 'bucket', as documented, or "
        "a 'sliding' window of burst_seconds (stricter: no refill within the window).",
    )
    send_ratelimit_headers: bool = Field(
        default=True, description="send anthropic-ratelimit-* headers (proxies may strip them)"
    )
    send_retry_after: bool = Field(
        default=True, description="send retry-after on 429s (whole seconds, as the API does)"
    )
    ratelimit_header_set: Literal["full", "tokens"] = Field(
        default="full",
        description="Rate-limit headers sent: 'full' (requests, tokens, input and output tokens), "
        "or only the combined 'tokens' ones, as some gateways send.",
    )
    # A colleague on the same key (one organisation shares the buckets) who steadily takes
    # this much, as far as the buckets allow: `remaining` falls and 429s come sooner.
    other_client_rpm: int | None = Field(
        default=None, ge=1, description="Requests per minute another client of the same key takes."
    )
    other_client_itpm: int | None = Field(
        default=None,
        ge=1,
        description="Input tokens per minute another client of the same key takes.",
    )

    # Latency: lognormal around a median, plus a cost per generated token.
    latency_ms: float = Field(default=0.0, ge=0, description="Median latency of a message, ms.")
    latency_sigma: float = Field(
        default=0.0, ge=0, description="Lognormal spread of latency (0 = always the median)."
    )
    ms_per_output_token: float = Field(
        default=0.0, ge=0, description="Extra latency per output token, ms."
    )

    # Faults, each a probability per message request.
    p529: float = Field(default=0.0, ge=0, le=1, description="Probability of 529 overloaded_error.")
    first_529s: int = Field(
        default=0, ge=0, description="Answer the first N messages with 529 overloaded_error."
    )
    p500: float = Field(default=0.0, ge=0, le=1, description="Probability of 500 api_error.")
    p503: float = Field(
        default=0.0, ge=0, le=1, description="Probability of 503 Service Unavailable (a gateway's)."
    )
    overload_retry_after_s: float | None = Field(
        default=None,
        gt=0,
        description="Send retry-after (whole seconds) and retry-after-ms, this many seconds, on "
        "529s and 503s.",
    )
    p_drop: float = Field(
        default=0.0, ge=0, le=1, description="Probability of closing the connection unanswered."
    )
    p_slow: float = Field(
        default=0.0, ge=0, le=1, description="Probability of answering after slow_seconds."
    )
    slow_seconds: float = Field(default=30.0, ge=0, description="Delay of a slow answer, seconds.")
    storms: list[StormWindow] = Field(default_factory=list)
    outages: list[OutageWindow] = Field(default_factory=list)
    outage_status: Literal[529, 503] = Field(
        default=529, description="Status of the answers during an outage: 529 or 503."
    )
    send_should_retry: bool = Field(
        default=False,
        description="x-should-retry on every error: true for 408, 409, 429 and 5xx, false for "
        "other 4xx (off: only on 500 and 529).",
    )
    spend_cap_after: int | None = Field(
        default=None,
        ge=0,
        description="Answer the spend-cap 429 after this many successful messages.",
    )

    revoke_key_after: int | None = Field(
        default=None, ge=0, description="Refuse the key (401) after this many successful messages."
    )

    # Request validation.
    api_key: str | None = Field(
        default=None, description="Require this key (x-api-key or Bearer); default: accept any."
    )
    # The per-model limits default to each model's own (see rules.py); a number overrides
    # them for every model.
    context_window: int | None = Field(
        default=None,
        ge=1,
        description="Prompt + max_tokens limit, tokens (default: each model's own).",
    )
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    cache_min_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Shortest cacheable prompt prefix (default: each model's own).",
    )
    cache_ttl_seconds: float = Field(default=300.0, gt=0)
    cache_ttl_1h_seconds: float = Field(default=3600.0, gt=0)  # `"ttl": "1h"` entries

    # Behaviour of the fake model.
    obey_injection: bool = Field(
        default=False, description="Let instructions inside rows steer answers (for tests)."
    )
    thinking_scale: float = Field(
        default=1.0, ge=0, description="Multiply thinking tokens (e.g. 100 forces long thinking)."
    )
    p_refusal: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of rows a 5.x model refuses (stop_reason refusal), by a hash of the "
        "model and the row: the same model refuses the same row again; the 4.x models run no "
        "safety classifiers and never refuse.",
    )
    accuracy: dict[str, float] = Field(
        default_factory=dict,
        description="Share of label and json answers a model gets right, as MODEL=SHARE "
        "(repeatable; * for every model); unnamed models keep their built-in share (about "
        "0.86 for Haiku 5.5, 0.96 for Sonnet 5.5). A wrong label is the catch-all (other) when "
        "the set has one.",
    )
    seed: int = Field(default=0, description="Seed for faults and latency.")

    # Message Batches.
    batch_processing_seconds: float = Field(
        default=2.0, ge=0, description="How long a Message Batch takes to end, seconds."
    )
    batch_p_errored: float = Field(
        default=0.0, ge=0, le=1, description="Share of batch requests errored."
    )
    batch_p_expired: float = Field(
        default=0.0, ge=0, le=1, description="Share of batch requests expired."
    )

    @field_validator("accuracy", mode="before")
    @classmethod
    def _accuracy_pairs(cls, value: object) -> object:
        """`MODEL=SHARE` strings, as the command line gives them, into a dict."""
        if isinstance(value, list | tuple):
            pairs: dict[str, object] = {}
            for item in value:
                model, sep, share = str(item).partition("=")
                if not sep or not model.strip():
                    raise ValueError(
                        f"accuracy {item!r} is not MODEL=SHARE (e.g. claude-haiku-5-5=0.8)"
                    )
                pairs[model.strip()] = share.strip()
            return pairs
        return value

    @field_validator("accuracy")
    @classmethod
    def _shares(cls, value: dict[str, float]) -> dict[str, float]:
        for model, share in value.items():
            if not 0 <= share <= 1:
                raise ValueError(f"accuracy of {model} must be between 0 and 1, not {share}")
        return value

    def storm_active(self, seconds_since_start: float) -> bool:
        return bool(_open(self.storms, seconds_since_start))

    def storm_left(self, seconds_since_start: float) -> float | None:
        """Seconds until the first open storm window ends, or None when none is open."""
        return min(_open(self.storms, seconds_since_start), default=None)

    def outage_active(self, seconds_since_start: float) -> bool:
        return bool(_open(self.outages, seconds_since_start))
