"""Settings of the Messages API simulator: limits, latency and injected faults.

Every field can be set from the `aibatch simulate-api` command line, from the in-process
fixture, or changed while the server runs (`POST /_sim/config`), so one test can, say,
lift a spend cap and show that a re-run then completes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StormWindow(BaseModel):
    """A span of time, in seconds after the server started, in which every message is a 429."""

    model_config = ConfigDict(frozen=True)

    start_s: float = Field(ge=0)
    duration_s: float = Field(gt=0)

    @classmethod
    def parse(cls, spec: str) -> StormWindow:
        """Read `START:DURATION` (seconds), as given on the command line."""
        try:
            start, duration = spec.split(":")
            return cls(start_s=float(start), duration_s=float(duration))
        except ValueError as exc:
            raise ValueError(f"storm window {spec!r} is not START:DURATION in seconds") from exc


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
    p_drop: float = Field(default=0.0, ge=0, le=1, description="connection closed, no answer")
    p_slow: float = Field(default=0.0, ge=0, le=1, description="answer after slow_seconds")
    slow_seconds: float = Field(default=30.0, ge=0)
    storms: list[StormWindow] = Field(default_factory=list)
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
        return any(w.start_s <= seconds_since_start < w.start_s + w.duration_s for w in self.storms)
