"""Prices (built-in, overridden, unknown) and the budget's reserve/settle arithmetic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aibatch.cost.budget import Budget, WorstCase
from aibatch.cost.pricing import BUILT_IN_PRICES, PRICES_CHECKED, PriceBook, Usage
from aibatch.errors import BudgetExhausted, PriceFileError


def test_the_default_models_have_a_dated_price_and_batches_cost_half() -> None:
    book = PriceBook.load()
    assert book.checked == PRICES_CHECKED
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    for model in ("claude-haiku-5-5", "claude-sonnet-5-5"):
        realtime = book.cost_usd(model, usage)
        assert realtime is not None and realtime > 0
        assert book.cost_usd(model, usage, batch=True) == pytest.approx(realtime / 2)
    assert book.cost_usd("claude-sonnet-5-5", usage) == pytest.approx(2.0 + 10.0)
    # A dated snapshot shares its alias's price.
    assert book.price_for("claude-haiku-4-5-20251001") == BUILT_IN_PRICES["claude-haiku-4-5"]


def test_cache_reads_cost_less_than_the_same_tokens_uncached() -> None:
    book = PriceBook.load()
    uncached = book.cost_usd("claude-haiku-5-5", Usage(1_500, 60))
    cached = book.cost_usd("claude-haiku-5-5", Usage(500, 60, cache_read_tokens=1_000))
    assert uncached is not None and cached is not None and cached < uncached


def test_one_hour_cache_writes_bill_at_twice_the_input_rate_five_minute_ones_at_1_25() -> None:
    book = PriceBook.load()
    million = 1_000_000
    five = book.cost_usd("claude-sonnet-5-5", Usage(0, 0, cache_write_tokens=million))
    hour = book.cost_usd(
        "claude-sonnet-5-5", Usage(0, 0, cache_write_tokens=million, cache_write_1h_tokens=million)
    )
    mixed = book.cost_usd(
        "claude-sonnet-5-5",
        Usage(0, 0, cache_write_tokens=million, cache_write_1h_tokens=million // 4),
    )
    assert five == pytest.approx(2.0 * 1.25) and hour == pytest.approx(2.0 * 2)
    assert mixed == pytest.approx(0.75 * 2.0 * 1.25 + 0.25 * 2.0 * 2)
    all_hour = Usage(0, 0, cache_write_tokens=million, cache_write_1h_tokens=million)
    assert book.cost_usd("claude-sonnet-5-5", all_hour, batch=True) == pytest.approx(2.0)

    class SdkUsage:  # as the SDK's Usage reports a 1-hour write
        input_tokens, output_tokens = 10, 5
        cache_creation_input_tokens, cache_read_input_tokens = 1_000, 0

        class cache_creation:
            ephemeral_1h_input_tokens, ephemeral_5m_input_tokens = 600, 400

    assert Usage.of(SdkUsage()) == Usage(10, 5, 1_000, 0, 600)


def test_a_long_prompt_bills_the_whole_request_at_the_higher_rates() -> None:
    book = PriceBook.load()
    short = book.cost_usd("claude-haiku-5-5", Usage(100_000, 1_000))
    long = book.cost_usd("claude-haiku-5-5", Usage(100_001, 1_000))
    assert short == pytest.approx((100_000 * 0.10 + 1_000 * 0.50) / 1e6)
    assert long == pytest.approx((100_001 * 0.50 + 1_000 * 2.50) / 1e6)


def test_every_model_of_the_capability_table_has_a_price_but_fable_5_2() -> None:
    from aibatch.jobs.models import ModelBook

    book = PriceBook.load()
    unpriced = [m for m in ModelBook.load().rules if book.price_for(m) is None]
    assert unpriced == ["claude-fable-5-2"]  # not published yet: its cost shows as unknown
    assert book.cost_usd("claude-opus-4-8", Usage(1_000_000, 1_000_000)) == pytest.approx(30.0)


def test_an_unknown_model_costs_unknown_not_zero() -> None:
    assert PriceBook.load().cost_usd("claude-imaginary-9", Usage(10, 10)) is None


def test_a_price_file_overrides_and_adds_models(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        'checked = "2026-12-01"\n'
        "[models.claude-sonnet-5-5]\ninput = 1.0\noutput = 4.0\n"
        '[models."claude-imaginary-9"]\ninput = 2.0\noutput = 8.0\ncache_read = 0.5\n'
    )
    book = PriceBook.load(path)
    assert book.checked == "2026-12-01" and str(path) in book.source
    assert book.cost_usd("claude-sonnet-5-5", Usage(1_000_000, 0)) == pytest.approx(1.0)
    imaginary = book.price_for("claude-imaginary-9")
    assert imaginary is not None
    assert imaginary.cache_write == pytest.approx(2.5) and imaginary.cache_read == 0.5
    # the rest of the table stays
    assert book.price_for("claude-haiku-5-5") == BUILT_IN_PRICES["claude-haiku-5-5"]


def test_the_environment_names_the_price_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.toml"
    path.write_text("[models.claude-x]\ninput = 1\noutput = 2\n")
    monkeypatch.setenv("AIBATCH_PRICES", str(path))
    assert PriceBook.load().price_for("claude-x") is not None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[models.m]\noutput = 1\n", "models.m.input: Field required"),
        ("[models.m]\ninput = -1\noutput = 1\n", "models.m.input: Input should be greater"),
        ("[models.m]\ninput = 1\noutput = 1\ncolour = 3\n", "models.m.colour: Extra inputs"),
        ("[models.m\n", "not a TOML price file"),
    ],
)
def test_a_bad_price_file_is_refused_naming_the_file_and_entry(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceFileError) as caught:
        PriceBook.load(path)
    assert str(path) in str(caught.value) and expected in str(caught.value)


def test_a_missing_price_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="cannot read"):
        PriceBook.load(tmp_path / "nope.toml")


def test_the_budget_waits_for_requests_in_flight_then_stops_within_one_request() -> None:
    async def scenario() -> tuple[Budget, list[str]]:
        budget = Budget(limit_usd=1.0, spent_before_usd=0.2)
        events: list[str] = []
        await budget.reserve(0.5)  # 0.7 committed
        waiting = asyncio.ensure_future(budget.reserve(0.5))  # does not fit yet
        await asyncio.sleep(0)
        assert not waiting.done()
        await budget.settle(0.5, 0.1)  # the first cost less: 0.3 committed, now it fits
        await waiting
        events.append("second sent")
        await budget.settle(0.5, 0.4)  # 0.7 spent
        with pytest.raises(BudgetExhausted, match="higher --budget-usd"):
            await budget.reserve(0.5)  # nothing in flight and it cannot fit: stop
        events.append("stopped")
        return budget, events

    budget, events = asyncio.run(scenario())
    assert events == ["second sent", "stopped"]
    assert budget.spent_usd == pytest.approx(0.5) and budget.reserved_usd == 0
    assert budget.limit_usd - (budget.spent_before_usd + budget.spent_usd) < 0.5


def test_the_worst_case_covers_a_full_answer_and_needs_a_price() -> None:
    book = PriceBook.load()
    worst = WorstCase(book, "claude-sonnet-5-5")
    actual = book.cost_usd("claude-sonnet-5-5", Usage(1_000, 300))
    assert actual is not None and worst.cost_usd(1_000, 300) >= actual
    # Thinking is billed as output: a larger max_tokens (room for it) is a larger worst case.
    thinking = book.cost_usd("claude-sonnet-5-5", Usage(1_000, 2_300))
    assert thinking is not None and worst.cost_usd(1_000, 2_300) >= thinking > actual
    batch = WorstCase(book, "claude-sonnet-5-5", batch=True)
    assert batch.cost_usd(1_000, 300) == pytest.approx(worst.cost_usd(1_000, 300) / 2)
    with pytest.raises(ValueError, match="needs a price for claude-imaginary-9"):
        WorstCase(book, "claude-imaginary-9").cost_usd(1, 10)
