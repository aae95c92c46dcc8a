"""The outage gate on a fake clock: every rule, deterministic and fast."""

from __future__ import annotations

import asyncio
import random

import anthropic
import pytest

from aibatch.cost.budget import WorstCase
from aibatch.cost.pricing import PriceBook
from aibatch.engine import policy
from aibatch.engine.admission import Admission
from aibatch.engine.pacer import OutageGate, Pacer
from aibatch.errors import APIUnavailable
from tests.engine.test_pacer import FakeClock
from tests.engine.test_policy import status_error


def fail(
    gate: OutageGate, clock: FakeClock, times: int, server_wait_s: float | None = None
) -> None:
    for _ in range(times):
        gate.on_failure(sent_at=clock.now - 0.01, server_wait_s=server_wait_s)
        clock.advance(0.01)


def test_only_errors_in_a_row_close_the_gate() -> None:
    clock = FakeClock()
    gate = OutageGate(clock=clock)
    for _ in range(20):  # sporadic 529s between answers: the pacer's and the row's business
        fail(gate, clock, policy.OUTAGE_EVIDENT_ERRORS - 1)
        gate.on_answer(sent_at=clock.now)
    assert not gate.down and gate.wait_s() == 0
    fail(gate, clock, policy.OUTAGE_EVIDENT_ERRORS)
    assert gate.down and gate.outages == 1
    assert gate.wait_s() == pytest.approx(policy.OUTAGE_PROBE_FIRST_S, abs=0.02)


def test_an_answer_to_a_request_sent_before_the_errors_does_not_reopen_it() -> None:
    clock = FakeClock()
    gate = OutageGate(clock=clock)
    sent_early = clock.now
    clock.advance(0.1)
    fail(gate, clock, policy.OUTAGE_EVIDENT_ERRORS)
    gate.on_answer(sent_at=sent_early)  # in flight when the outage began: no news
    assert gate.down
    gate.on_answer(sent_at=clock.now)  # sent since: the API answers again
    assert not gate.down and gate.wait_s() == 0


def test_one_probe_at_a_time_after_a_wait_that_grows_to_its_cap() -> None:
    clock = FakeClock()
    gate = OutageGate(clock=clock)
    fail(gate, clock, policy.OUTAGE_EVIDENT_ERRORS)
    waits = []
    for _ in range(8):
        wait = gate.wait_s()
        waits.append(round(wait))
        clock.advance(wait)
        assert gate.wait_s() == 0 and gate.enter()  # this request is the probe
        assert gate.wait_s() > 0  # the others wait for its answer
        gate.leave()
        gate.on_failure(sent_at=clock.now)  # the probe met the outage too
    assert waits == [1, 2, 4, 8, 15, 15, 15, 15]
    assert gate.probes == 8


def test_the_servers_retry_after_stretches_the_wait() -> None:
    clock = FakeClock()
    gate = OutageGate(clock=clock)
    fail(gate, clock, policy.OUTAGE_EVIDENT_ERRORS, server_wait_s=30.0)
    assert gate.wait_s() == pytest.approx(30.0, abs=0.1)


def test_an_outage_past_its_deadline_stops_the_admission() -> None:
    clock = FakeClock()
    admission = Admission(Pacer(clock=clock), 4, WorstCase(PriceBook.load(), "claude-haiku-5-5"),
                          outage_deadline_s=60.0)  # fmt: skip
    admission.outage.clock = clock
    error = status_error(anthropic.OverloadedError, 529, "overloaded_error")
    decision = policy.decide(error, 0, random.Random(1))
    for _ in range(policy.OUTAGE_EVIDENT_ERRORS):
        admission.on_error(decision, sent_at=clock.now)
    assert admission.gate_wait_s() > 0
    clock.advance(61.0)
    with pytest.raises(APIUnavailable, match=r"overload.*61 s.*OverloadedError"):
        admission.gate_wait_s()


def test_waiting_rows_sleep_until_the_probe_not_in_a_busy_loop() -> None:
    """Rows at a closed gate sleep to the probe's time (or the deadline), then one goes."""
    clock = FakeClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)

    admission = Admission(Pacer(clock=clock), 4, WorstCase(PriceBook.load(), "claude-haiku-5-5"),
                          sleep=sleep)  # fmt: skip
    admission.outage.clock = clock
    error = status_error(anthropic.OverloadedError, 529, "overloaded_error")
    for _ in range(policy.OUTAGE_EVIDENT_ERRORS):
        admission.on_error(policy.decide(error, 0, random.Random(1)), sent_at=clock.now)

    async def one() -> bool:
        async with admission.slot(None) as probe:
            return probe

    assert asyncio.run(one()) is True
    assert slept == [pytest.approx(policy.OUTAGE_PROBE_FIRST_S)]
