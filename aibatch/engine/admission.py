"""Who may send now, and what each answer teaches: the admission half of the processor.

Per request: wait at the storm and outage gates, take an in-flight slot (its size fixed or
`auto`), hold the request's worst case under the budget, take a request and its estimated
tokens from the limits shared with other processes (if any), wait for the pacer's buckets.
Each answer or error then feeds the pacer, the shared limits, the concurrency controller
and the gates.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aibatch.cost.budget import Budget, WorstCase
from aibatch.engine import policy
from aibatch.engine.inflight import InFlightLimiter
from aibatch.engine.looplag import LoopLagProbe
from aibatch.engine.pacer import (
    ConcurrencyController,
    InputEstimator,
    OutageGate,
    Pacer,
    Reservation,
    StormGate,
)
from aibatch.engine.policy import Cause
from aibatch.engine.shared import SharedLimits
from aibatch.errors import APIUnavailable

Sleep = Callable[[float], Awaitable[None]]

# What ends an outage's wait: any of these means the API is serving again.
_OUTAGE_CAUSES = frozenset({Cause.OVERLOADED, Cause.SERVER, Cause.CONNECTION})


# The shortest time over which answers count as a rate (see `Admission.recent_rate`).
RATE_SPAN_MIN_S = 1.0


@dataclass(eq=False)  # one per run: compared by identity
class Admission:
    """The gate, the in-flight slots, the limits shared with other processes, the budget and
    the pacer of one run, shared by every chunk."""

    pacer: Pacer
    max_concurrency: int | None  # None: auto
    worst_case: WorstCase
    shared: SharedLimits | None = None
    budget: Budget | None = None
    sleep: Sleep = asyncio.sleep
    outage_deadline_s: float = policy.OUTAGE_DEADLINE_S

    def __post_init__(self) -> None:
        self.concurrency = ConcurrencyController(fixed=self.max_concurrency)
        self.slots = InFlightLimiter(lambda: self.concurrency.current)
        self.gate = StormGate()  # closed to everyone only while 429s are all that comes back
        self.outage = OutageGate(self.outage_deadline_s)  # ... or only overload and failures
        self.last_failure = ""
        self.loop_lag = LoopLagProbe()
        self.estimator = InputEstimator()
        # The share of a prompt that the input-token limit counts: cache reads are free, so
        # with a warm cache a request takes only its uncached part from the ITPM bucket.
        self.itpm_share = 1.0
        self._pace_lock = asyncio.Lock()
        self.http_in_flight = 0
        self.recent_ok: deque[float] = deque(maxlen=2000)
        self.first_send: float | None = None

    # -- letting a request go -------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def slot(self, chunk_width: asyncio.Semaphore | None) -> AsyncIterator[bool]:
        """Through the gates and into an in-flight slot (and the chunk's own, if capped);
        yields whether this request is a storm's or an outage's probe. Raises
        APIUnavailable once an outage has outlasted its deadline."""
        while (wait := self.gate_wait_s()) > 0:
            await self.sleep(min(wait, max(0.05, self.outage_left_s())))
        storm_probe, outage_probe = self.gate.enter(), self.outage.enter()
        if chunk_width is not None:
            await chunk_width.acquire()
        await self.slots.acquire()
        try:
            yield storm_probe or outage_probe
        finally:
            self.slots.release()
            if chunk_width is not None:
                chunk_width.release()
            if storm_probe:
                self.gate.leave()
            if outage_probe:
                self.outage.leave()

    def gate_wait_s(self) -> float:
        """How long the gates hold the next send (0: it may go now)."""
        if self.outage.expired:
            raise APIUnavailable(
                f"the API answered nothing but overload, server or connection errors for "
                f"{self.outage.down_for_s:.0f} s ({self.outage.probes} probe(s); last: "
                f"{self.last_failure}), the outage deadline: stopped"
            )
        return max(self.gate.wait_s(), self.outage.wait_s())

    def outage_left_s(self) -> float:
        return self.outage.deadline_s - self.outage.down_for_s

    async def hold_budget(self, input_estimate: float, max_tokens: int) -> float:
        """Hold this request's worst case under the budget (raises BudgetExhausted)."""
        if self.budget is None:
            return 0.0
        worst = self.worst_case.cost_usd(input_estimate, max_tokens)
        await self.budget.reserve(worst)
        return worst

    async def settle_budget(self, held: float, cost: float) -> None:
        if self.budget is not None:
            await self.budget.settle(held, cost)

    async def pace(self, input_estimate: float, probe: bool) -> Reservation | None:
        """Wait for the send rate to have room; None if the storm gate closed meanwhile
        (the request then waits at the gate again, without its slot, and gives back what
        it drew from the shared limits)."""
        # The tokens the pacer's own buckets take: the input the ITPM limit counts, and the
        # mean output so far (settled against the answer's usage in `learn`).
        drawn = Reservation(input_estimate * self.itpm_share, self.pacer.output_estimate or 0.0)
        if self.shared is not None:
            await self.shared.take(drawn)  # the part of each rate other processes leave us
        # One waiter at a time, so a freed bucket is not raced for by every coroutine.
        async with self._pace_lock:
            self.pacer.pace_ramp(self.ramp_rate())
            while (wait := self.pacer.wait_s(drawn.input_tokens)) > 0:
                await self.sleep(wait)
            if not probe and (self.gate.wait_s() > 0 or self.outage.wait_s() > 0):
                if self.shared is not None:
                    self.shared.cancel(drawn)
                return None
            return self.pacer.reserve(drawn.input_tokens, drawn.output_tokens)

    def release(self, reservation: Reservation) -> None:
        """A request sent and never answered (an error): its tokens back, here and in the
        limits shared with other processes."""
        self.pacer.release(reservation)
        if self.shared is not None:
            self.shared.release(reservation)

    def sending(self, started: float) -> None:
        if self.first_send is None:
            self.first_send = started
        self.http_in_flight += 1
        self.loop_lag.start()

    def answered(self) -> None:
        self.http_in_flight -= 1
        if not self.http_in_flight:
            self.loop_lag.stop()

    # -- learning -------------------------------------------------------------------------

    def learn(
        self, reply: Any, reservation: Reservation, raw_tokens: float, sent_at: float
    ) -> None:
        """Feed an answer to the pacer, the estimator, the gate and the concurrency."""
        latency_s = time.monotonic() - sent_at
        usage = reply.message.usage
        counted = usage.input_tokens + (usage.cache_creation_input_tokens or 0)
        prompt_tokens = counted + (usage.cache_read_input_tokens or 0)
        self.estimator.learn(raw_tokens, prompt_tokens)
        if prompt_tokens > 0:
            self.itpm_share = 0.8 * self.itpm_share + 0.2 * (counted / prompt_tokens)
        self.pacer.observe_headers(reply.headers)
        # The API counts uncached input and cache writes against ITPM, not cache reads.
        self.pacer.settle(reservation, counted, usage.output_tokens)
        if self.shared is not None:
            self.shared.settle(reservation, counted, usage.output_tokens)
        self.pacer.on_success(sent_at)
        self.gate.on_answer()
        self.outage.on_answer(sent_at)
        self.recent_ok.append(self.pacer.clock())
        self.concurrency.on_success(
            latency_s, self.http_in_flight, self.target_rate(), self.loop_lag.lag_s
        )
        self.slots.wake()

    def on_error(self, decision: policy.Decision, sent_at: float) -> None:
        """A 429 is the send rate's business (in a storm the rate is not what is wrong) and
        the gate's: fewer in flight would not send less per second. A 529 cuts concurrency.
        Overload, server and connection errors are the outage gate's evidence; any other
        error is an answer (the API is up)."""
        if decision.cause in _OUTAGE_CAUSES:
            self.last_failure = f"{decision.error_type}: {decision.message}"
            asked = decision.delay_s if decision.action is policy.Action.RETRY_AFTER else None
            self.outage.on_failure(sent_at, asked)
        else:
            self.outage.on_answer(sent_at)
        if decision.cause is Cause.RATE_LIMITED:
            self.gate.on_rate_limited(decision.delay_s)
            if not self.gate.in_storm:
                pause_s = self.pacer.on_rate_limited(
                    self.recent_rate(), sent_at, self.concurrency.latency_recent_s
                )
                if pause_s:
                    self.gate.pause(pause_s)
        elif decision.congestion:
            self.concurrency.on_congestion()

    def recent_rate(self, window_s: float = 2.0) -> float:
        """Answers per second over the last `window_s`, or since the first send, if that
        is sooner: a run a second old has not had two seconds to answer in, but at least
        RATE_SPAN_MIN_S: what a run 0.2 s old got answered is the burst an empty window
        admits, not a rate. (A pause of ours counts: over a limit's window, what got
        through is what the server admits.)"""
        if self.first_send is None:
            return 0.0
        now = self.pacer.clock()
        span = min(window_s, max(RATE_SPAN_MIN_S, now - self.first_send))
        return sum(1 for t in self.recent_ok if t >= now - span) / span

    def ramp_rate(self) -> float | None:
        """What slow start's sends are spread at while nothing else paces them: a multiple
        of the rate the concurrency sustains at the fastest round trip seen (None: none
        seen, or slow start is over). After it the slots grow by a share per round trip,
        released one answer at a time, with no bursts to spread; and pacing hundreds a
        second would cost a sleep per send where the client is short of CPU."""
        floor_s = self.concurrency.latency_floor_s
        if not self.concurrency.slow_start or not math.isfinite(floor_s):
            return None
        return policy.RAMP_PACING_GAIN * self.concurrency.current / max(floor_s, 0.001)

    def target_rate(self) -> float | None:
        rates = [self.pacer.aimd_rate]
        if self.pacer.requests is not None:
            rates.append(self.pacer.requests.rate_per_s)
        known = [r for r in rates if r is not None]
        return min(known) if known else None
