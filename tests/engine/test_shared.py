"""Drawing on limits shared with other processes, with an in-process fake for the limit (in
the flow, a Prefect rate limit): batches fetched, token estimates drawn before a request
goes, and settled against what its answer used."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from aibatch.cost.budget import WorstCase
from aibatch.cost.pricing import PriceBook
from aibatch.engine.admission import Admission
from aibatch.engine.pacer import Pacer, Reservation
from aibatch.engine.shared import SharedAllowance, SharedLimits
from tests.conftest import Simulate
from tests.engine.test_processor import Harness, tickets


class FakeLimit:
    """A shared limit that grants at once and records each grant."""

    def __init__(self) -> None:
        self.grants: list[int] = []

    async def acquire(self, units: int) -> None:
        await asyncio.sleep(0.001)  # a round trip: other takers queue meanwhile
        self.grants.append(units)

    def allowance(self, batch: int) -> SharedAllowance:
        return SharedAllowance(self.acquire, batch)


def spent(allowance: SharedAllowance | None) -> float:
    """What the takers spent (or owe) of an allowance."""
    assert allowance is not None
    return allowance.acquired - allowance.credit


def test_requests_are_fetched_in_whole_batches_once_for_many_takers() -> None:
    limit = FakeLimit()

    async def scenario() -> SharedAllowance:
        allowance = SharedAllowance.for_rate(limit.acquire, per_min=600, batch_s=0.5)
        await asyncio.gather(*(allowance.take() for _ in range(23)))
        return allowance

    allowance = asyncio.run(scenario())
    assert allowance.batch == 5  # half a second of 10/s
    assert limit.grants == [5] * 5  # 23 requests: five batches, fetched one at a time
    assert allowance.credit == 2


def test_a_draw_larger_than_a_batch_fetches_batches_until_it_is_covered() -> None:
    limit = FakeLimit()
    allowance = limit.allowance(batch=100)
    asyncio.run(allowance.take(250))
    assert limit.grants == [100, 100, 100] and allowance.credit == 50
    asyncio.run(allowance.take(30))
    asyncio.run(allowance.take(0))  # no output estimate yet: nothing to fetch
    assert limit.grants == [100, 100, 100] and allowance.credit == 20


def test_a_debt_is_repaid_before_the_next_draw() -> None:
    limit = FakeLimit()
    allowance = limit.allowance(batch=100)
    asyncio.run(allowance.take(80))
    allowance.settle(150)  # the answer used 150 more than was drawn
    assert allowance.credit == -130
    asyncio.run(allowance.take(10))
    assert limit.grants == [100, 100, 100]  # the debt first, then this draw
    assert allowance.credit == 60
    assert spent(allowance) == 80 + 150 + 10


def test_a_refund_is_kept_as_credit_up_to_one_batch() -> None:
    limit = FakeLimit()
    allowance = limit.allowance(batch=100)
    asyncio.run(allowance.take(90))
    allowance.settle(-50)  # used 50 fewer than drawn: the next draws spend them
    assert allowance.credit == 60
    allowance.settle(-80)  # more would be spent later than the limit granted it
    assert allowance.credit == 100
    asyncio.run(allowance.take(100))
    assert limit.grants == [100]


def answer(
    input_tokens: int, output_tokens: int, cache_write: int = 0, cache_read: int = 0
) -> SimpleNamespace:
    usage = SimpleNamespace(
        input_tokens=input_tokens, output_tokens=output_tokens,
        cache_creation_input_tokens=cache_write, cache_read_input_tokens=cache_read,
    )  # fmt: skip
    return SimpleNamespace(message=SimpleNamespace(usage=usage), headers={})


def admission_sharing(limits: SharedLimits) -> Admission:
    worst_case = WorstCase(PriceBook.load(), "claude-haiku-5-5")
    return Admission(Pacer(), None, worst_case, limits)


def three_limits() -> SharedLimits:
    return SharedLimits(
        requests=FakeLimit().allowance(5),
        input_tokens=FakeLimit().allowance(1_000),
        output_tokens=FakeLimit().allowance(500),
    )


def test_a_request_draws_what_the_pacer_reserves_and_settles_with_its_usage() -> None:
    limits = three_limits()
    admission = admission_sharing(limits)
    assert limits.requests and limits.input_tokens and limits.output_tokens

    first = asyncio.run(admission.pace(400.0, probe=False))
    # The input estimate, and no output estimate before the first answer.
    assert first == Reservation(400.0, 0.0)
    assert limits.requests.credit == 4
    assert limits.input_tokens.credit == 600 and limits.output_tokens.credit == 0

    # The ITPM limit counts uncached input and cache writes (500), not cache reads.
    reply = answer(input_tokens=300, output_tokens=120, cache_write=200, cache_read=1_000)
    admission.learn(reply, first, raw_tokens=400.0, sent_at=time.monotonic())
    assert limits.input_tokens.credit == 500  # 100 more than drawn
    assert limits.output_tokens.credit == -120  # owed: drawn 0, used 120

    second = asyncio.run(admission.pace(400.0, probe=False))
    assert second is not None
    assert second.input_tokens == pytest.approx(400.0 * admission.itpm_share)
    assert second.input_tokens < 400  # the warm cache's reads are not drawn
    assert second.output_tokens == 120  # the output seen so far
    assert limits.output_tokens.acquired == 500  # the debt repaid, then this draw
    assert spent(limits.input_tokens) == pytest.approx(500 + second.input_tokens)
    assert spent(limits.output_tokens) == 120 + 120


def test_tokens_come_back_for_an_unanswered_request_and_the_request_if_never_sent() -> None:
    limits = three_limits()
    admission = admission_sharing(limits)
    assert limits.requests and limits.input_tokens and limits.output_tokens

    sent = asyncio.run(admission.pace(300.0, probe=False))
    assert sent is not None
    admission.release(sent)  # an error: the tokens come back, the request was made
    assert spent(limits.input_tokens) == 0 and spent(limits.output_tokens) == 0
    assert spent(limits.requests) == 1

    admission.gate.pause(10.0)  # the gate closes while the request waits to be paced
    assert asyncio.run(admission.pace(300.0, probe=False)) is None
    assert spent(limits.requests) == 1 and spent(limits.input_tokens) == 0


def test_a_run_draws_from_the_shared_limits_what_the_api_counted(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    """Every request drew one request and its estimated tokens, each answer settled the
    difference, each unanswered one gave its tokens back: in the end the run spent of each
    limit what the API counted (batches large enough that no refund is capped)."""
    server = simulate(p529=0.1, seed=7)
    h = harness(server, max_concurrency=8)
    limits = SharedLimits(
        requests=FakeLimit().allowance(1_000),
        input_tokens=FakeLimit().allowance(10_000_000),
        output_tokens=FakeLimit().allowance(10_000_000),
    )
    h.processor.admission.shared = limits
    h.run(tickets(60))

    stats = server.stats()
    assert len(h.results()) == 60
    assert stats["by_status"]["529"] > 0  # some requests were never answered
    counted = stats["input_tokens"] + stats["cache_creation_input_tokens"]
    assert spent(limits.requests) == h.stats.http_requests == stats["requests_total"]
    assert spent(limits.input_tokens) == pytest.approx(counted)
    assert spent(limits.output_tokens) == pytest.approx(stats["output_tokens"])
