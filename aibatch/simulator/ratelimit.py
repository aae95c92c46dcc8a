"""Server-side rate limits, modelled on how Anthropic documents them.

Each limit is a continuously refilling bucket that holds `burst_seconds` worth of the
per-minute limit, so a 600 RPM limit with a 2 s burst admits 20 at once and 10 more every
second. The requests limit can instead be a sliding window (`window="sliding"`): at most
`burst_seconds` worth in any span of `burst_seconds`, stricter than a bucket, which refills
as it goes: after a burst of 20 the window admits nothing for 2 s. A client that runs at
the limit against a window must send smoothly, not in bursts.

Requests and input tokens are taken when a request is admitted; output tokens are
taken when the answer is produced and may push the bucket into debt, which blocks new
requests until it refills (the API counts output as it is generated, not `max_tokens`).

The limits belong to the key, not to a connection: every client of one simulator shares
them, and `set_other_client` adds a colleague on the same key who steadily takes requests
and input tokens, as far as the limits let it (it is rate limited too, and does not queue
what it could not send). It is worked out lazily, whenever a limit is consulted.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache

Clock = Callable[[], float]


@dataclass
class Bucket:
    """One continuously refilling bucket: `limit` per minute, `capacity` at most."""

    limit: int
    burst_seconds: float
    clock: Clock = time.monotonic
    level: float = field(init=False)
    updated: float = field(init=False)
    other_per_minute: float = 0.0  # another client of the key, taking from this bucket

    def __post_init__(self) -> None:
        self.level = self.capacity
        self.updated = self.clock()

    @property
    def capacity(self) -> float:
        # A bucket can never be smaller than one request's worth, or nothing would pass.
        return max(1.0, self.limit * self.burst_seconds / 60.0)

    @property
    def rate_per_second(self) -> float:
        return self.limit / 60.0

    def refill(self) -> float:
        now = self.clock()
        elapsed = now - self.updated
        self.updated = now
        if self.other_per_minute:
            self.level = self._refill_shared(self.level, elapsed)
        else:
            self.level = min(self.capacity, self.level + elapsed * self.rate_per_second)
        return self.level

    def _refill_shared(self, level: float, elapsed: float) -> float:
        """The level `elapsed` seconds on while another client takes its share whenever
        there is some: a debt is repaid at the full rate first, then the bucket moves at
        the rate minus the other's, between empty and full."""
        rate = self.rate_per_second
        if level < 0:
            repaying = min(elapsed, -level / rate)
            level += repaying * rate
            elapsed -= repaying
        if elapsed <= 0:
            return level
        net = rate - self.other_per_minute / 60.0
        return min(self.capacity, max(0.0, level + elapsed * net))

    def set_other(self, per_minute: float) -> None:
        """Another client takes `per_minute` from now on (0: none)."""
        self.refill()  # what it took so far, at the old rate
        self.other_per_minute = per_minute

    def seconds_until(self, amount: float) -> float:
        """How long until `amount` could be taken (0 if it can be now), at the bucket's
        own rate: like the API, it cannot foresee what another client will take first."""
        missing = min(amount, self.capacity) - self.refill()
        return max(0.0, missing / self.rate_per_second)

    def take(self, amount: float) -> None:
        self.refill()
        self.level -= amount

    def seconds_until_full(self) -> float:
        return max(0.0, (self.capacity - self.refill()) / self.rate_per_second)

    def set_limit(self, limit: int) -> None:
        """A new limit from now on (another client of the key came or went): what is in
        the bucket stays, up to the new capacity."""
        self.refill()
        self.limit = limit
        self.level = min(self.level, self.capacity)


@dataclass
class SlidingWindow:
    """At most `burst_seconds` worth of `limit` (per minute) in any `burst_seconds`."""

    limit: int
    burst_seconds: float
    clock: Clock = time.monotonic
    admitted: deque[float] = field(default_factory=deque)
    other_per_minute: float = 0.0  # another client of the key, sending into this window
    other_since: float = 0.0
    other_owed: float = 0.0  # a part of the other's next request, carried over

    @property
    def capacity(self) -> float:
        return max(1.0, math.floor(self.limit * self.burst_seconds / 60.0))

    @property
    def rate_per_second(self) -> float:
        return self.limit / 60.0

    def refill(self) -> float:
        """Room left in the window now."""
        now = self.clock()
        horizon = now - self.burst_seconds
        while self.admitted and self.admitted[0] <= horizon:
            self.admitted.popleft()
        if self.other_per_minute:
            self._let_other_send(now)
        return self.capacity - len(self.admitted)

    def _let_other_send(self, now: float) -> None:
        """Admit the other client's requests since it was last seen, spread over that
        span (only those still inside the window matter), as far as there is room."""
        start = max(self.other_since, now - self.burst_seconds)
        self.other_since = now
        owed = self.other_owed + max(0.0, now - start) * self.other_per_minute / 60.0
        count = min(int(owed), max(0, int(self.capacity) - len(self.admitted)))
        self.other_owed = min(1.0, owed - count)  # what found no room is not queued
        floor = self.admitted[-1] if self.admitted else start
        step = (now - start) / count if count else 0.0
        self.admitted.extend(max(floor, start + (i + 1) * step) for i in range(count))

    def set_other(self, per_minute: float) -> None:
        """Another client sends `per_minute` requests from now on (0: none)."""
        self.refill()
        self.other_per_minute = per_minute
        self.other_since = self.clock()
        self.other_owed = 0.0

    def seconds_until(self, amount: float) -> float:
        if self.refill() >= min(amount, self.capacity):
            return 0.0
        # The oldest admissions must leave the window first.
        leaving = int(min(amount, self.capacity) - self.refill())
        return max(0.0, self.admitted[leaving - 1] + self.burst_seconds - self.clock())

    def take(self, amount: float) -> None:
        self.refill()  # first: the other client's requests, if any, come before ours
        self.admitted.extend([self.clock()] * int(amount))

    def seconds_until_full(self) -> float:
        if not self.admitted:
            return 0.0
        return max(0.0, self.admitted[-1] + self.burst_seconds - self.clock())

    def set_limit(self, limit: int) -> None:
        self.limit = limit


Limit = Bucket | SlidingWindow


@dataclass
class Admission:
    """The verdict on one request: admitted, or refused with the seconds to wait."""

    admitted: bool
    retry_after_s: float = 0.0
    limited_by: str = ""


class RateLimiter:
    """The requests, input-token and output-token buckets of one simulated API key."""

    def __init__(
        self,
        rpm: int | None,
        itpm: int | None,
        otpm: int | None,
        burst_seconds: float,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        window: str = "bucket",
    ) -> None:
        self.clock = clock
        self.wall_clock = wall_clock
        self.requests: Limit | None = None
        if rpm and window == "sliding":
            self.requests = SlidingWindow(rpm, burst_seconds, clock)
        elif rpm:
            self.requests = Bucket(rpm, burst_seconds, clock)
        self.input_tokens = Bucket(itpm, burst_seconds, clock) if itpm else None
        self.output_tokens = Bucket(otpm, burst_seconds, clock) if otpm else None

    def set_other_client(self, rpm: int | None, itpm: int | None) -> None:
        """Another client of the key sends `rpm` requests and `itpm` input tokens a minute
        from now on (None: none); a rate that does not change goes on undisturbed."""
        for limit, per_minute in ((self.requests, rpm), (self.input_tokens, itpm)):
            if limit is not None and limit.other_per_minute != (per_minute or 0):
                limit.set_other(per_minute or 0)

    def admit(self, input_tokens: int) -> Admission:
        """Take one request and its input tokens, or say how long to wait for them."""
        waits: list[tuple[float, str]] = []
        if self.requests is not None:
            waits.append((self.requests.seconds_until(1), "requests"))
        if self.input_tokens is not None:
            waits.append((self.input_tokens.seconds_until(input_tokens), "input_tokens"))
        if self.output_tokens is not None:
            # Output debt from earlier answers blocks new requests until it is repaid.
            waits.append((self.output_tokens.seconds_until(1), "output_tokens"))
        blocking = [w for w in waits if w[0] > 0]
        if blocking:
            wait, name = max(blocking)
            return Admission(False, wait, name)
        if self.requests is not None:
            self.requests.take(1)
        if self.input_tokens is not None:
            self.input_tokens.take(input_tokens)
        return Admission(True)

    def set_limits(self, rpm: int | None, itpm: int | None, otpm: int | None) -> bool:
        """Change limits in place (each keeps what it holds); False if a limit appears or
        disappears, which needs a new limiter."""
        pairs = ((self.requests, rpm), (self.input_tokens, itpm), (self.output_tokens, otpm))
        if any((limit is None) != (value is None) for limit, value in pairs):
            return False
        for limit, value in pairs:
            if limit is not None and value is not None:
                limit.set_limit(value)
        return True

    def charge_output(self, output_tokens: int) -> None:
        if self.output_tokens is not None:
            self.output_tokens.take(output_tokens)

    def headers(self) -> dict[str, str]:
        """The anthropic-ratelimit-* headers as the API sends them on every response."""
        out: dict[str, str] = {}
        now_wall = self.wall_clock()
        token_views: list[tuple[int, int, str]] = []
        for name, bucket, rounded in (
            ("requests", self.requests, False),
            ("input-tokens", self.input_tokens, True),
            ("output-tokens", self.output_tokens, True),
        ):
            if bucket is None:
                continue
            remaining = max(0, math.floor(bucket.refill()))
            if rounded:
                # The API rounds token counts in these headers down to the thousand.
                remaining = remaining // 1000 * 1000
            reset = _rfc3339(now_wall + bucket.seconds_until_full())
            out[f"anthropic-ratelimit-{name}-limit"] = str(bucket.limit)
            out[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            out[f"anthropic-ratelimit-{name}-reset"] = reset
            if rounded:
                token_views.append((remaining, bucket.limit, reset))
        if token_views:
            # The combined "tokens" headers show the most restrictive token limit in force.
            remaining, limit, reset = min(token_views)
            out["anthropic-ratelimit-tokens-limit"] = str(limit)
            out["anthropic-ratelimit-tokens-remaining"] = str(remaining)
            out["anthropic-ratelimit-tokens-reset"] = reset
        return out


def _rfc3339(epoch_seconds: float) -> str:
    return _rfc3339_second(math.ceil(epoch_seconds))


@lru_cache(maxsize=512)
def _rfc3339_second(epoch_second: int) -> str:
    # Cached: formatting a datetime per header per response was a measurable share of the
    # simulator's CPU budget, and the header has one-second resolution anyway.
    return datetime.fromtimestamp(epoch_second, UTC).isoformat().replace("+00:00", "Z")
