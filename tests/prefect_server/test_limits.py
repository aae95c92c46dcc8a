"""The rates shared across processes, on a real Prefect server: token limits made and read
as the request limit is, and allowances of several processes drawing from one limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator

import pytest

from aibatch.engine.shared import SharedAllowance
from aibatch.prefect_server.limits import (
    ensure_shared_rate_limit,
    prepare_shared_limits,
    read_shared_rate_limit,
    shared_allowance,
)
from aibatch.prefect_server.setup import setup_server
from aibatch.runs.orchestration import (
    SHARED_BATCH_S,
    SHARED_INPUT_TOKENS,
    SHARED_INPUT_TOKENS_LIMIT_NAME,
    SHARED_OUTPUT_TOKENS,
    SHARED_OUTPUT_TOKENS_LIMIT_NAME,
    SHARED_RATE_LIMIT_NAME,
    SLOTS_PER_TOKEN,
    SharedRate,
)
from aibatch.runs.parameters import RunParameters

# A token limit of this test's own: the session's server is shared with the flow tests.
TEST_TOKENS = SharedRate("aibatch-test-tokens", "tokens", SLOTS_PER_TOKEN)
CREATED = (SHARED_INPUT_TOKENS_LIMIT_NAME, SHARED_OUTPUT_TOKENS_LIMIT_NAME, TEST_TOKENS.name)


@pytest.fixture
def drop_token_limits(prefect_api: str) -> Iterator[None]:
    """Remove the token limits after the test, or every later flow test on this server would
    be paced by them."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    yield

    async def drop() -> None:
        async with get_client() as client:
            for name in CREATED:
                with contextlib.suppress(ObjectNotFound):
                    await client.delete_global_concurrency_limit_by_name(name)

    asyncio.run(drop())


def busiest(spends: list[tuple[float, float]], width_s: float) -> float:
    """The most spent in any `width_s` seconds."""
    return max(sum(n for t, n in spends if start <= t < start + width_s) for start, _ in spends)


def test_two_allowances_drawing_tokens_from_one_prefect_limit_stay_under_it(
    drop_token_limits: None,
) -> None:
    """Two processes' allowances (here two in one process, each with its own credit) draw
    requests of different sizes, one larger than a batch, from one limit of 1,000 tokens
    a second: together they spend no more than the limit grants, and most of it."""
    rate_per_s, run_s = 1_000, 6.0

    async def scenario() -> tuple[list[tuple[float, float]], list[SharedAllowance], int]:
        limit = await ensure_shared_rate_limit(rate_per_s * 60, TEST_TOKENS)
        allowances = [shared_allowance(limit, SLOTS_PER_TOKEN) for _ in range(2)]
        spends: list[tuple[float, float]] = []
        until = time.monotonic() + run_s

        async def draw(allowance: SharedAllowance, tokens: int) -> None:
            while time.monotonic() < until:
                await allowance.take(tokens)
                spends.append((time.monotonic(), tokens))

        await asyncio.gather(draw(allowances[0], 137), draw(allowances[1], 700))
        return spends, allowances, limit.limit

    spends, allowances, burst = asyncio.run(scenario())
    batch = round(rate_per_s * SHARED_BATCH_S)
    assert burst == rate_per_s  # one second of the rate
    assert [a.batch for a in allowances] == [batch, batch]
    assert {n for _, n in spends} == {137, 700}  # both got their share
    # Spent in any window: the rate over it, the limit's burst, and what each allowance
    # fetched ahead and holds (less than a batch).
    for width_s in (1.0, 2.0, 4.0):
        assert busiest(spends, width_s) <= rate_per_s * width_s + burst + 2 * batch, width_s
    total = sum(n for _, n in spends)
    assert total <= rate_per_s * run_s + burst + 2 * batch
    assert total >= 0.5 * rate_per_s * run_s, total


def test_token_limits_are_made_when_given_and_read_as_they_are_when_not(
    drop_token_limits: None, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("aibatch-test")

    async def scenario() -> None:
        # A run that gives the token rates makes their limits; no request limit is there.
        given = RunParameters(shared_itpm=120_000, shared_otpm=24_000)
        with caplog.at_level(logging.INFO, logger.name):
            shared = await prepare_shared_limits(given, logger)
        assert shared is not None and shared.requests is None
        assert shared.input_tokens is not None and shared.output_tokens is not None
        assert shared.input_tokens.batch == round(2_000 * SHARED_BATCH_S)
        assert shared.output_tokens.batch == round(400 * SHARED_BATCH_S)
        assert await read_shared_rate_limit(SHARED_RATE_LIMIT_NAME) is None
        made = await read_shared_rate_limit(SHARED_INPUT_TOKENS_LIMIT_NAME)
        assert made is not None and made.slot_decay_per_second == 2_000 and made.limit == 2_000

        # A run that gives none uses them as they are on the server.
        later = await prepare_shared_limits(RunParameters(), logger)
        assert later is not None and later.requests is None
        assert later.output_tokens is not None and later.output_tokens.batch == 200

        # Gone from the server: read as absent, the run paces those rates on its own.
        from prefect.client.orchestration import get_client

        async with get_client() as client:
            for name in (SHARED_INPUT_TOKENS_LIMIT_NAME, SHARED_OUTPUT_TOKENS_LIMIT_NAME):
                await client.delete_global_concurrency_limit_by_name(name)
        assert await prepare_shared_limits(RunParameters(), logger) is None

    asyncio.run(scenario())
    assert "Sharing 120000 input tokens/min with every run on this Prefect server" in caplog.text
    assert "Sharing 24000 output tokens/min" in caplog.text


def test_setup_makes_the_token_limits_and_says_so(drop_token_limits: None) -> None:
    async def scenario() -> list[str]:
        report = await setup_server("aibatch-test-pool", shared_itpm=60_000, shared_otpm=12_000)
        for rate, per_s in ((SHARED_INPUT_TOKENS, 1_000), (SHARED_OUTPUT_TOKENS, 200)):
            limit = await read_shared_rate_limit(rate.name)
            assert limit is not None and limit.slot_decay_per_second == per_s
        return report.lines()

    lines = asyncio.run(scenario())
    assert (
        f"rate limit {SHARED_INPUT_TOKENS_LIMIT_NAME!r}: 60000 input tokens/min shared by "
        "every run and worker"
    ) in lines
    assert any(line.startswith(f"rate limit {SHARED_OUTPUT_TOKENS_LIMIT_NAME!r}: 12000 output")
               for line in lines)  # fmt: skip
    assert not any(SHARED_RATE_LIMIT_NAME in line for line in lines)
