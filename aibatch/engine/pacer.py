"""Client-side pacing: run at the API's limit without tripping it, untold.

`Pacer` holds one token bucket per limit (requests, input tokens, output tokens per
minute, or the combined `tokens` limit when a gateway states only that), shared by every
call of a run. It learns the limits from the `anthropic-ratelimit-*-limit` headers of the
first responses (explicit limits override), reserves input tokens from an estimate and
output tokens from the sizes actually seen, and settles the difference when each response
arrives. Buckets hold one second's worth, so the send rate stays smooth enough for limits
the API enforces over short windows.

A stated limit is the key's, not this run's: other runs and other clients of the key spend
from it too. So a 429 always teaches a send rate below it (just under the rate that drew
one, then probing past it), stated limits or none, and `remaining` keeps the probe from
pushing while the server's bucket is (nearly) empty: runs sharing a key settle to shares
of it, with no coordination between them.

`ConcurrencyController` decides how many requests may be in flight (`auto`): it starts low
(the API has acceleration limits), grows while answers come back fast and clean, backs off
multiplicatively on 529s and recovers.

`StormGate` closes every new send only while the API answers nothing but 429s;
`OutageGate` while it answers nothing but overload, server or connection errors.

All are plain objects on an injectable clock, so they are tested without a network.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aibatch.engine import policy

Clock = Callable[[], float]


class TokenBucket:
    """`limit` per minute, holding at most `policy.BUCKET_SECONDS` of it; may go into debt."""

    def __init__(
        self,
        limit_per_min: float,
        clock: Clock,
        full: bool = True,
        seconds: float = policy.BUCKET_SECONDS,
    ) -> None:
        self.clock = clock
        self.seconds = seconds
        self.limit_per_min = float(limit_per_min)
        self.level = self.capacity if full else 0.0
        self.updated = clock()

    @property
    def rate_per_s(self) -> float:
        return self.limit_per_min / 60.0

    @property
    def capacity(self) -> float:
        return max(1.0, self.rate_per_s * self.seconds)

    def refill(self) -> float:
        now = self.clock()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate_per_s)
        self.updated = now
        return self.level

    def wait_s(self, amount: float) -> float:
        """Seconds until `amount` (at most a full bucket) can be taken."""
        missing = min(amount, self.capacity) - self.refill()
        return 0.0 if missing <= 0 else missing / self.rate_per_s

    def take(self, amount: float) -> None:
        self.refill()
        self.level -= amount

    def give_back(self, amount: float) -> None:
        self.refill()
        self.level = min(self.capacity, self.level + amount)

    def set_limit(self, limit_per_min: float) -> None:
        self.refill()
        self.limit_per_min = float(limit_per_min)
        self.level = min(self.level, self.capacity)


@dataclass
class Reservation:
    """What one request took from the buckets, settled when its answer arrives."""

    input_tokens: float
    output_tokens: float


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None


class Pacer:
    """Shared request/input-token/output-token buckets, learned from headers or given."""

    def __init__(
        self,
        rpm: int | None = None,
        itpm: int | None = None,
        otpm: int | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.clock = clock
        # A given token limit leaves the combined header nothing to add.
        self.fixed = {"requests": rpm, "input": itpm, "output": otpm, "tokens": itpm or otpm}
        self.requests = TokenBucket(rpm, clock) if rpm else None
        self.input_tokens = TokenBucket(itpm, clock) if itpm else None
        self.output_tokens = TokenBucket(otpm, clock) if otpm else None
        # The combined `anthropic-ratelimit-tokens-*` limit, when it is the only token limit
        # stated: it may be the input or the output limit, so input + output count against it.
        self.tokens: TokenBucket | None = None
        self.output_estimate: float | None = None  # mean output tokens seen, per request
        self.input_mean = 0.0  # mean input tokens counted against the limits, per request
        self.headers_seen = False
        self.server_low = False  # the last answer's `remaining`: the server's bucket ~empty
        # A request rate found from 429s, below any stated limit (None: no 429 yet).
        self.aimd_rate: float | None = None
        self.aimd_probe_per_s = policy.AIMD_PROBE_PER_S
        self.aimd_last_cut = -math.inf
        self.aimd_quiet_since = -math.inf  # the probe speeds up from here: a cut or a hold
        self.aimd_last_step_back: float | None = None  # the rate a probe last stepped back from
        self.aimd_last_fall: float | None = None  # the rate the last fall found
        self.aimd_fell_from: float | None = None  # ... and the rate that drew it
        self.aimd_first_climb = (
            False  # climbing back from the first cut (policy.AIMD_FIRST_CLIMB_TO)
        )
        self.aimd_unanswered_since: float | None = None  # cuts since, with no clean answer
        self.aimd_draining = False  # the first cut, and no clean answer sent since
        self.aimd_pauses = 0
        self._aimd: TokenBucket | None = None
        self._ramp: TokenBucket | None = None  # the slow start's pacing, while nothing paces
        self.aimd_last_change = clock()
        self._sent: deque[float] = deque(maxlen=4096)  # when requests were let through

    @property
    def limits_known(self) -> bool:
        buckets = (self.requests, self.input_tokens, self.output_tokens, self.tokens)
        return any(b is not None for b in buckets)

    # -- reserving ---------------------------------------------------------------------------

    def pace_ramp(self, rate_per_s: float | None) -> None:
        """Spread sends at `rate_per_s` while no limit, stated or found, paces them (None:
        not yet known, sends go as slots allow)."""
        if rate_per_s is None or self.limits_known or self.aimd_rate is not None:
            self._ramp = None
        elif self._ramp is None:
            self._ramp = TokenBucket(
                rate_per_s * 60, self.clock, seconds=policy.RAMP_BURST / rate_per_s
            )
        else:
            self._ramp.seconds = policy.RAMP_BURST / rate_per_s
            self._ramp.set_limit(rate_per_s * 60)

    def wait_s(self, input_estimate: float) -> float:
        """How long the next request must wait for every bucket to have room."""
        output_estimate = self.output_estimate or 0.0
        waits = [bucket.wait_s(n) for bucket, n in self._charges(input_estimate, output_estimate)]
        waits.append(0.0)
        if self.requests is not None:
            waits.append(self.requests.wait_s(1))
        if self.aimd_rate is not None:
            waits.append(self._aimd_bucket().wait_s(1))
        if self._ramp is not None:
            waits.append(self._ramp.wait_s(1))
        return max(waits)

    def reserve(self, input_estimate: float, output_estimate: float | None = None) -> Reservation:
        """Take a request of these sizes from every bucket. Output: the mean seen so far,
        unless given (what a draw from a shared limit took, so both settle alike)."""
        if output_estimate is None:
            output_estimate = self.output_estimate or 0.0
        self._sent.append(self.clock())
        if self.requests is not None:
            self.requests.take(1)
        if self.aimd_rate is not None:
            self._aimd_bucket().take(1)
        if self._ramp is not None:
            self._ramp.take(1)
        for bucket, tokens in self._charges(input_estimate, output_estimate):
            bucket.take(tokens)
        return Reservation(input_estimate, output_estimate)

    def settle(self, reservation: Reservation, input_tokens: int, output_tokens: int) -> None:
        """Charge (or refund) the difference between the estimate and what was used."""
        used = self._charges(input_tokens, output_tokens)
        held = self._charges(reservation.input_tokens, reservation.output_tokens)
        for (bucket, spent), (_, reserved) in zip(used, held, strict=True):
            self._adjust(bucket, spent - reserved)
        seen = float(output_tokens)
        first = self.output_estimate is None
        self.output_estimate = seen if first else 0.9 * (self.output_estimate or 0.0) + 0.1 * seen
        self.input_mean = input_tokens if first else 0.9 * self.input_mean + 0.1 * input_tokens

    def release(self, reservation: Reservation) -> None:
        """A request that was never answered (an error): return its token reservations."""
        for bucket, tokens in self._charges(reservation.input_tokens, reservation.output_tokens):
            bucket.give_back(tokens)

    def _charges(
        self, input_tokens: float, output_tokens: float
    ) -> list[tuple[TokenBucket, float]]:
        """What a request of these sizes takes from each token bucket there is: input and
        output from their own, both from the combined one."""
        charges = []
        if self.input_tokens is not None:
            charges.append((self.input_tokens, input_tokens))
        if self.output_tokens is not None:
            charges.append((self.output_tokens, output_tokens))
        if self.tokens is not None:
            charges.append((self.tokens, input_tokens + output_tokens))
        return charges

    @staticmethod
    def _adjust(bucket: TokenBucket, extra: float) -> None:
        if extra >= 0:
            bucket.take(extra)
        else:
            bucket.give_back(-extra)

    # -- learning ----------------------------------------------------------------------------

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Learn limits from `anthropic-ratelimit-*` headers; given limits always win."""
        learned = {name: _header_int(headers, f"anthropic-ratelimit-{name}-limit")
                   for name in _HEADER_OF}  # fmt: skip
        if any(v is not None for v in learned.values()):
            self.headers_seen = True
        if learned["input-tokens"] is not None or learned["output-tokens"] is not None:
            learned["tokens"] = None  # the specific limits say more than the combined one
            self.tokens = None
        for name, limit in learned.items():
            if limit is None or self.fixed[_FIXED_OF[name]]:
                continue
            attribute = _HEADER_OF[name]
            current: TokenBucket | None = getattr(self, attribute)
            if current is None:
                # Start empty: the requests that taught us the limit already used it.
                setattr(self, attribute, TokenBucket(limit, self.clock, full=False))
            elif current.limit_per_min != limit:
                if name == "requests" and self.aimd_rate is not None:
                    # The key's limit moved (a new tier): our found share moves with it.
                    self._set_aimd_rate(self.aimd_rate * limit / current.limit_per_min)
                current.set_limit(limit)
        self._follow_remaining(headers)

    def _follow_remaining(self, headers: Mapping[str, str]) -> None:
        """Keep in step with what the server says is left: other clients of the same key
        spend from it too. Ours never holds more than the server has (token counts come
        rounded down to thousands, so allow for the rounding)."""
        low = False
        rate = self.send_rate()
        for name, attribute in _HEADER_OF.items():
            remaining = _header_int(headers, f"anthropic-ratelimit-{name}-remaining")
            bucket: TokenBucket | None = getattr(self, attribute)
            if remaining is None or bucket is None:
                continue
            slack = 0 if name == "requests" else 999
            bucket.refill()
            bucket.level = min(bucket.level, float(remaining + slack))
            # What we send in policy.SERVER_LOW_S, of this limit (requests, or tokens at our mean).
            per_request = self._per_request(name)
            if remaining + slack < max(1.0, policy.SERVER_LOW_S * rate * per_request):
                low = True
        self.server_low = low

    def _per_request(self, limit: str) -> float:
        """What one of our requests takes from `limit`, on average so far."""
        output = self.output_estimate or 0.0
        per = {"requests": 1.0, "input-tokens": self.input_mean, "output-tokens": output}
        return max(1.0, per.get(limit, self.input_mean + output))

    # -- a send rate found from 429s, for when no limit is known --------------------------

    def _aimd_bucket(self) -> TokenBucket:
        if self._aimd is None:
            rate = (self.aimd_rate or policy.AIMD_START_RPS) * 60
            self._aimd = TokenBucket(rate, self.clock, seconds=policy.AIMD_BUCKET_S)
        return self._aimd

    def on_rate_limited(
        self, observed_rps: float, sent_at: float | None = None, round_trip_s: float = 0.0
    ) -> float:
        """A 429 for a request sent at `sent_at`: send at just under the limit it shows,
        whatever limit was stated (the key's other clients spend from it too). Returns how
        long every send should pause (0: none).

        Probing past a rate that went through clean, the limit lies just below the rate
        that drew the 429: most of what was sent still got through (`observed_rps`,
        requests answered per second lately), so the rate steps back by policy.AIMD_MARGIN only;
        if it stepped back from about this rate before, the limit is still there and the
        probe slows. When far less got through (the limit fell, or another client of the
        key took its share), what got through is the limit as near as the client can see
        it. Nothing answered lately: the rate is cut by policy.AIMD_CUT. A 429 for a request sent
        before the last cut says nothing about the rate since (as TCP cuts once per
        window): it is ignored. Cuts for `round_trip_s` with no clean answer since pause
        every send.
        """
        if sent_at is not None and sent_at <= self.aimd_last_cut:
            return 0.0
        now = self.clock()
        if not self.aimd_draining:
            self._cut(observed_rps, now)
        self.aimd_last_cut = now
        if self.aimd_unanswered_since is None:
            self.aimd_unanswered_since = now
            return 0.0
        if now - self.aimd_unanswered_since < round_trip_s:
            return 0.0
        self.aimd_unanswered_since = None
        self.aimd_pauses += 1
        return policy.AIMD_PAUSE_S

    def _cut(self, observed_rps: float, now: float) -> None:
        """The rate after a 429 that says something about it (see `on_rate_limited`)."""
        allowed = self.aimd_rate
        if allowed is None and self.requests is not None:
            allowed = self.requests.rate_per_s  # a stated limit: what we were allowed
        sent = self.send_rate()
        if allowed is not None and sent > 0:
            # What drew the 429 is what we sent, if less than allowed (a climb counts what
            # was sent while answers lag behind it, or rows ran short): what got through
            # is measured against it, or a 429 mid-climb looks like a fall.
            allowed = min(allowed, sent)
        if (
            allowed is not None
            and observed_rps >= policy.AIMD_THROUGH * allowed - policy.AIMD_THROUGH_SLACK_RPS
        ):
            rate = policy.AIMD_MARGIN * allowed
            last = self.aimd_last_step_back
            if self.aimd_unanswered_since is None:  # a fresh overshoot, not more of one
                if last is not None and allowed <= (1 + policy.AIMD_SAME_LIMIT) * last:
                    self.aimd_probe_per_s = max(policy.AIMD_PROBE_PER_S, self.aimd_probe_per_s / 2)
                self.aimd_last_step_back = allowed
            self.aimd_fell_from = None
        else:
            if observed_rps > 0:
                rate = (
                    policy.AIMD_MARGIN if allowed is not None else policy.AIMD_FIRST_CUT
                ) * observed_rps
            elif allowed is not None:
                rate = policy.AIMD_CUT * allowed
            else:
                rate = policy.AIMD_START_RPS
            # The first cut, nothing known but some answered: the window is full of the
            # start's burst, and every request refused until it drains would cut again, to
            # a fraction of what the limit admits. They only pause, until a clean answer
            # shows it drained. (Nothing ever answered is no burst: a storm, say.)
            first = allowed is None and observed_rps > 0
            self.aimd_draining = self.aimd_first_climb = first
            last_fall = self.aimd_last_fall
            if last_fall is not None and abs(rate - last_fall) <= policy.AIMD_SAME_FALL * last_fall:
                self.aimd_probe_per_s = max(policy.AIMD_PROBE_PER_S, self.aimd_probe_per_s / 2)
            else:
                self.aimd_probe_per_s = policy.AIMD_PROBE_AFTER_FALL_PER_S
            self.aimd_last_fall = rate
            self.aimd_fell_from = policy.AIMD_FIRST_CLIMB_TO * observed_rps if first else allowed
            self.aimd_last_step_back = None
        self._set_aimd_rate(rate)
        self.aimd_last_change = self.aimd_quiet_since = now

    def _set_aimd_rate(self, rate: float) -> None:
        self.aimd_rate = max(0.2, rate)
        self._aimd_bucket().set_limit(self.aimd_rate * 60)

    def send_rate(self, window_s: float = 2.0) -> float:
        """Requests let through per second, lately."""
        cutoff = self.clock() - window_s
        count = 0
        for sent in reversed(self._sent):  # newest first: stop at the first one too old
            if sent < cutoff:
                break
            count += 1
        return count / window_s

    def probe_growth_per_s(self) -> float:
        """How fast the rate grows now: slowly just after a 429 (or a hold), doubling every
        policy.AIMD_PROBE_DOUBLING_S without one."""
        climbing_back = self.aimd_fell_from is not None and (
            (self.aimd_rate or 0.0) < self.aimd_fell_from
        )
        if climbing_back and self.aimd_first_climb:
            return policy.AIMD_FIRST_CLIMB_PER_S
        if climbing_back and self.requests is None:
            # Climbing back to where the last fall came from, untold: steadily, not faster
            # and faster, or runs sharing a key overshoot together every few seconds. (With
            # a stated limit, `remaining` holds the probe when the key's bucket is empty.)
            return self.aimd_probe_per_s
        quiet = self.clock() - self.aimd_quiet_since
        doublings = (
            min(quiet, policy.AIMD_PROBE_QUIET_S) / policy.AIMD_PROBE_DOUBLING_S
            + max(0.0, quiet - policy.AIMD_PROBE_QUIET_S) / policy.AIMD_PROBE_LATE_DOUBLING_S
        )
        growth = self.aimd_probe_per_s * 2**doublings
        return min(policy.AIMD_PROBE_MAX_PER_S, growth)

    def on_success(self, sent_at: float | None = None) -> None:
        """A clean answer (for a request sent at `sent_at`): probe past the rate, faster
        the longer it has been clean; hold while the server says its bucket is about empty
        (we are at the key's limit, with or without company)."""
        if self.aimd_rate is None:
            return
        if sent_at is None or sent_at > self.aimd_last_cut:
            self.aimd_unanswered_since = None
            self.aimd_draining = False
        now = self.clock()
        elapsed = min(now - self.aimd_last_change, 1.0)
        if elapsed < 0.1:
            return
        self.aimd_last_change = now
        if self.server_low:
            self.aimd_quiet_since = now  # the probe starts slowly again once there is room
            return
        # (Over the last second too: after a pause, two seconds of sending would pass
        # before the rate could grow.)
        if max(self.send_rate(), self.send_rate(1.0)) < policy.AIMD_IN_USE * self.aimd_rate:
            # Not sending at this rate (fewer rows left, or concurrency holds us): clean
            # answers say nothing about a higher one, so do not raise it (as TCP does not
            # grow a window the application leaves unused).
            return
        if self.aimd_fell_from is not None and self.aimd_rate >= self.aimd_fell_from:
            self.aimd_fell_from = None  # back where it fell from: probe past it as usual
            self.aimd_quiet_since = now
        rate = self.aimd_rate * (1 + self.probe_growth_per_s()) ** elapsed
        if self.requests is not None and rate >= self.requests.rate_per_s:
            # Back at the stated limit: nobody else takes a share now; the limit governs.
            self.aimd_rate = self._aimd = None
            return
        self._set_aimd_rate(rate)


_HEADER_OF = {"requests": "requests", "input-tokens": "input_tokens",
              "output-tokens": "output_tokens", "tokens": "tokens"}  # fmt: skip
# The given limit (`--rpm`, `--itpm`, `--otpm`) that overrides each header's.
_FIXED_OF = {"requests": "requests", "input-tokens": "input", "output-tokens": "output",
             "tokens": "tokens"}  # fmt: skip


class ConcurrencyController:
    """How many requests may be in flight: fixed, or `auto` (slow start, then AIMD)."""

    def __init__(
        self,
        fixed: int | None = None,
        start: int = policy.START_CONCURRENCY,
        maximum: int = policy.MAX_CONCURRENCY,
        clock: Clock = time.monotonic,
    ) -> None:
        self.fixed = fixed
        self.clock = clock
        self.maximum = fixed or maximum
        self.limit = float(fixed or start)
        self.slow_start = fixed is None
        self.last_backoff = -math.inf
        self.latency_floor_s = math.inf
        self.latency_recent_s = 0.0
        self.lagging_since: float | None = None
        self.clean_since = clock()  # the growth after slow start speeds up from here

    @property
    def current(self) -> int:
        return max(1, int(self.limit))

    def on_success(
        self,
        latency_s: float,
        in_flight: int,
        target_rate: float | None,
        loop_lag_s: float = 0.0,
    ) -> None:
        if self.fixed is not None:
            return
        self.latency_recent_s = (
            latency_s
            if not self.latency_recent_s
            else 0.9 * self.latency_recent_s + 0.1 * latency_s
        )
        # The floor is the lowest smoothed latency: one lucky fast answer must not make
        # ordinary jitter look like queueing.
        self.latency_floor_s = min(self.latency_floor_s, self.latency_recent_s)
        busy = max(policy.LOOP_LAG_BUSY_MIN_S, policy.LOOP_LAG_BUSY_SHARE * self.latency_recent_s)
        if loop_lag_s > busy:
            # The client is short of CPU: hold where we are. Only when that lasts a round
            # trip does slow start end (a spike, say while connections open, is not it),
            # and a lag twice the bound then sheds a tenth per round trip: slow start may
            # have doubled well past the point where the client saturated.
            now = self.clock()
            self.clean_since = now
            if self.lagging_since is None:
                self.lagging_since = now
            elif now - self.lagging_since >= self.latency_recent_s:
                self.slow_start = False
                round_trip = self.latency_recent_s or 0.2
                if loop_lag_s > 2 * busy and now - self.last_backoff >= round_trip:
                    self.last_backoff = now
                    self.limit = max(
                        float(policy.START_CONCURRENCY), self.limit * policy.LOOP_LAG_SHED
                    )
            return
        self.lagging_since = None
        if in_flight < self.current - 1:
            return  # the limit is not what holds us back: no reason to raise it
        queueing = self.latency_recent_s > policy.LATENCY_QUEUEING_FACTOR * max(
            self.latency_floor_s, 0.005
        )
        if queueing:
            # Answers slow down as we add load: more in flight would only queue.
            self.slow_start = False
            self.clean_since = self.clock()
            return
        ceiling = float(self.maximum)
        if target_rate is not None and self.latency_recent_s > 0:
            # Little's law: what a known rate needs in flight, with room for jitter.
            ceiling = min(ceiling, target_rate * self.latency_recent_s * 1.5 + 2)
        if self.slow_start:
            self.limit = min(ceiling, self.limit + policy.SLOW_START_GROWTH)
        else:
            # +5% per round trip (at least +1), faster the longer it stays clean: reaches a
            # new operating point in seconds where +1 per round trip would need minutes.
            step = max(1.0 / self.limit, self.growth_per_round_trip())
            self.limit = min(ceiling, self.limit + step)

    def growth_per_round_trip(self) -> float:
        round_trip = self.latency_recent_s or 0.2
        clean_rtts = (self.clock() - self.clean_since) / round_trip
        growth = policy.CONGESTION_AVOIDANCE_GROWTH * 2 ** (
            clean_rtts / policy.CONGESTION_AVOIDANCE_DOUBLING_RTTS
        )
        return min(policy.CONGESTION_AVOIDANCE_MAX_GROWTH, growth)

    def on_congestion(self) -> None:
        """A 529 (the API overloaded): back off multiplicatively, once per round trip at most.
        (A 429 is the send rate's business: fewer in flight would not send less per second.)"""
        if self.fixed is not None:
            return
        now = self.clock()
        round_trip = self.latency_recent_s or 0.2
        if now - self.last_backoff < round_trip:
            return
        self.last_backoff = self.clean_since = now
        self.slow_start = False
        self.limit = max(1.0, self.limit * policy.BACKOFF_FACTOR)


class StormGate:
    """Closed to every new send only while the API answers nothing but 429s.

    One 429 is the pacer's business (it slows the send rate) and its own request's (which
    waits its `retry-after`); the others go on. When 429s are all that has come back for
    policy.STORM_EVIDENT_S (a storm: an acceleration limit, another client of the key bursting),
    more requests would only collect more 429s, so the gate closes for the whole
    `retry-after` for everyone, and then lets one request through as a probe: until an
    answer comes, nobody else goes. An answer ends the storm.
    """

    def __init__(
        self,
        evident_after_s: float = policy.STORM_EVIDENT_S,
        max_pause_s: float = policy.STORM_MAX_PAUSE_S,
        clock: Clock = time.monotonic,
    ) -> None:
        self.evident_after_s = evident_after_s
        self.max_pause_s = max_pause_s
        self.clock = clock
        self.open_at = -math.inf
        self.first_429_at: float | None = None  # of the 429s since the last answer
        self.evidence_from = -math.inf  # the end of the last pause we asked for ourselves
        self.probe_out = False
        self.storms = 0

    @property
    def in_storm(self) -> bool:
        first = self.first_429_at
        if first is None:
            return False
        # While we paused ourselves nothing was sent, so no answer could come: that
        # silence is not evidence.
        return self.clock() - max(first, self.evidence_from) >= self.evident_after_s

    def pause(self, seconds: float) -> None:
        """Hold every new send for `seconds` (the pacer's call, not a storm)."""
        self.open_at = max(self.open_at, self.clock() + seconds)
        self.evidence_from = max(self.evidence_from, self.open_at)

    def on_answer(self) -> None:
        self.first_429_at = None

    def on_rate_limited(self, wait_s: float) -> None:
        """A 429 whose request will wait `wait_s` (its `retry-after`)."""
        now = self.clock()
        if self.first_429_at is None:
            self.first_429_at = now
        if self.in_storm:
            if self.open_at < now:
                self.storms += 1
            self.open_at = max(self.open_at, now + min(wait_s, self.max_pause_s))

    def wait_s(self) -> float:
        """Seconds until a request may go: the pause, or (in a storm) the probe's answer."""
        pause = self.open_at - self.clock()
        if pause > 0:
            return pause
        return policy.STORM_PROBE_POLL_S if self.in_storm and self.probe_out else 0.0

    def enter(self) -> bool:
        """Call when `wait_s` is 0: whether this request is the storm's probe (then
        `leave` it after its attempt)."""
        if self.in_storm:
            self.probe_out = True
            return True
        return False

    def leave(self) -> None:
        self.probe_out = False


class OutageGate:
    """Closed to every send but one probe while the API answers nothing but overload,
    server or connection errors (an outage: 529s to everyone, for minutes).

    Retrying each row on its own schedule would multiply the requests into an API that is
    already down (attempts × rows); here one request probes at a time, after a wait that
    grows (or the server's `retry-after`, if longer), and the first answer opens the gate
    for all. The evidence is `evident_errors` such errors in a row, for requests sent after
    the first of them: answers to requests sent before it say nothing about now. Still
    down after `deadline_s`: `expired`, and the run stops.
    """

    def __init__(
        self,
        deadline_s: float = policy.OUTAGE_DEADLINE_S,
        evident_errors: int = policy.OUTAGE_EVIDENT_ERRORS,
        clock: Clock = time.monotonic,
    ) -> None:
        self.deadline_s = deadline_s
        self.evident_errors = evident_errors
        self.clock = clock
        self.streak = 0  # such errors in a row
        self.streak_sent_from: float | None = None  # when the first of them was sent
        self.streak_began: float | None = None  # when it came back
        self.down = False  # the gate is closed
        self.next_probe_at = -math.inf
        self.probe_wait_s = policy.OUTAGE_PROBE_FIRST_S
        self.probe_out = False
        self.outages = 0
        self.probes = 0

    @property
    def down_for_s(self) -> float:
        """How long nothing but such errors have come back (0: not an outage)."""
        if not self.down or self.streak_began is None:
            return 0.0
        return self.clock() - self.streak_began

    @property
    def expired(self) -> bool:
        return self.down and self.down_for_s >= self.deadline_s

    def on_failure(self, sent_at: float, server_wait_s: float | None = None) -> None:
        """An overload, server or connection error for a request sent at `sent_at`."""
        now = self.clock()
        if self.streak_sent_from is None:
            self.streak_sent_from, self.streak_began = sent_at, now
        self.streak += 1
        if not self.down:
            if self.streak < self.evident_errors:
                return
            self.down = True
            self.outages += 1
        else:  # a failed probe (or a straggler): the next one waits longer
            self.probe_wait_s = min(
                policy.OUTAGE_PROBE_MAX_S, self.probe_wait_s * policy.OUTAGE_PROBE_GROWTH
            )
        wait = max(self.probe_wait_s, min(server_wait_s or 0.0, policy.RETRY_AFTER_MAX_S))
        self.next_probe_at = max(self.next_probe_at, now + wait)

    def on_answer(self, sent_at: float) -> None:
        """The API answered (anything but such an error) a request sent at `sent_at`."""
        if self.streak_sent_from is not None and sent_at < self.streak_sent_from:
            return  # sent before the errors began: it says nothing about now
        self.streak = 0
        self.streak_sent_from = self.streak_began = None
        self.down = False
        self.probe_wait_s = policy.OUTAGE_PROBE_FIRST_S
        self.next_probe_at = -math.inf

    def wait_s(self) -> float:
        """Seconds until a request may go: 0 when open; else until the next probe (or,
        while one is out, a poll for its answer)."""
        if not self.down:
            return 0.0
        if self.probe_out:
            return policy.STORM_PROBE_POLL_S
        return max(0.0, self.next_probe_at - self.clock())

    def enter(self) -> bool:
        """Call when `wait_s` is 0: whether this request is the outage's probe (then
        `leave` it after its attempt)."""
        if not self.down:
            return False
        self.probe_out = True
        self.probes += 1
        return True

    def leave(self) -> None:
        self.probe_out = False


class InputEstimator:
    """Input tokens of a request before sending it: characters / 4, calibrated by answers.

    The ratio of counted to estimated tokens is learned from each response's usage, so the
    estimate converges on the API's own count without a count_tokens call per request.
    """

    def __init__(self) -> None:
        self.ratio = 1.0
        self.samples = 0

    @staticmethod
    def raw(params: Mapping[str, object]) -> float:
        size = 0
        for key in ("system", "messages", "tools"):
            value = params.get(key)
            if value is not None:
                size += len(str(value))
        return size / 4.0

    def estimate(self, raw: float) -> float:
        return raw * self.ratio

    def learn(self, raw: float, counted: int) -> None:
        if raw <= 0 or counted <= 0:
            return
        self.samples += 1
        weight = max(0.05, 1.0 / self.samples)
        self.ratio = (1 - weight) * self.ratio + weight * (counted / raw)
