"""What the admission learns from answers and 429s, on a fake clock."""

from __future__ import annotations

import random

import anthropic
import pytest

from aibatch.cost.budget import WorstCase
from aibatch.cost.pricing import PriceBook
from aibatch.engine import policy
from aibatch.engine.admission import RATE_SPAN_MIN_S, Admission
from aibatch.engine.pacer import Pacer
from tests.engine.test_pacer import FakeClock
from tests.engine.test_policy import status_error


def admission_on(clock: FakeClock, max_concurrency: int | None = None) -> Admission:
    admission = Admission(
        Pacer(clock=clock), max_concurrency, WorstCase(PriceBook.load(), "claude-haiku-5-5")
    )
    admission.concurrency.clock = clock
    return admission


def test_the_first_429_counts_what_got_through_over_a_second_at_least() -> None:
    """A run 0.2 s old has had 8 answers: the burst an empty window lets through, not 40
    per second. The first cut counts them over RATE_SPAN_MIN_S."""
    clock = FakeClock()
    admission = admission_on(clock)
    admission.first_send = clock.now  # the first request went out now
    clock.advance(0.2)
    admission.recent_ok.extend([clock.now] * 8)
    assert admission.recent_rate() == pytest.approx(8 / RATE_SPAN_MIN_S)
    error = status_error(anthropic.RateLimitError, 429, "rate_limit_error")
    admission.on_error(policy.decide(error, 0, random.Random(1)), sent_at=clock.now - 0.01)
    assert admission.pacer.aimd_rate == pytest.approx(policy.AIMD_FIRST_CUT * 8 / RATE_SPAN_MIN_S)
    clock.advance(3.0)  # later, the last two seconds count
    admission.recent_ok.extend([clock.now] * 10)
    assert admission.recent_rate() == pytest.approx(10 / 2.0)


def test_slow_start_sends_ramp_at_twice_what_the_slots_sustain() -> None:
    clock = FakeClock()
    admission = admission_on(clock)
    assert admission.ramp_rate() is None  # no round trip yet: the first slots go at once
    admission.concurrency.on_success(latency_s=0.2, in_flight=8, target_rate=None)
    slots = admission.concurrency.current
    assert admission.ramp_rate() == pytest.approx(policy.RAMP_PACING_GAIN * slots / 0.2)
    admission.concurrency.slow_start = False  # latency climbed, say: slow start is over
    assert admission.ramp_rate() is None
