"""The estimate's arithmetic: extrapolating counted prompts, output defaults and history,
cost per request with a price file, unknown prices; and counting against the simulator."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pandas as pd
import pytest

from aibatch.cost.pricing import PriceBook, Usage
from aibatch.engine import policy
from aibatch.jobs.models import THINKING_EXPECTED
from aibatch.jobs.prompts import load_job_rows
from aibatch.jobs.spec import JobSpec, builtin_job
from aibatch.runs import estimate as est
from aibatch.testing.in_process import InProcessSimulator
from tests.conftest import Simulate
from tests.helpers import write_tickets

PRICE_FILE = """
checked = "2026-12-01"

[models.claude-test-1]
input = 2.0
output = 10.0
cache_write = 2.5
cache_read = 0.2
batch_discount = 0.4
"""


def price_book(tmp_path: Path) -> PriceBook:
    path = tmp_path / "prices.toml"
    path.write_text(PRICE_FILE, encoding="utf-8")
    return PriceBook.load(path)


# -- extrapolation --------------------------------------------------------------------------


def test_the_fit_recovers_overhead_and_ratio_and_extrapolates_to_every_ticket() -> None:
    lengths = [100, 180, 260, 40, 400, 220, 150, 90]
    counts = [85 + length // 4 for length in lengths]
    model = est.fit_prompt_model(85, lengths[:4], counts[:4])
    assert model.overhead == 85
    assert model.per_char == pytest.approx(0.25, abs=0.01)
    tokens = est.extrapolate(model, lengths, {0: counts[0], 1: counts[1]})
    assert tokens[:2] == counts[:2]  # counted tickets keep their count
    assert sum(tokens) == pytest.approx(sum(counts), rel=0.01)


def test_the_fit_reproduces_the_sample_total() -> None:
    lengths = [120, 121, 350, 95]
    counts = [130, 127, 190, 115]
    model = est.fit_prompt_model(100, lengths, counts)
    assert sum(model.predict(n) for n in lengths) == pytest.approx(sum(counts))
    with pytest.raises(ValueError):
        est.fit_prompt_model(100, [], [])


def test_spread_keeps_the_total_without_rounding_bias() -> None:
    whole = est.spread([14.4] * 5000)
    assert sum(whole) == 72_000
    assert set(whole) == {14, 15}
    assert est.spread([0.3, 0.3, 0.3]) == [0, 1, 0]


def test_a_sample_is_seeded_and_never_larger_than_the_input() -> None:
    assert est.sample_indices(5, 200) == [0, 1, 2, 3, 4]
    first = est.sample_indices(5000, 200, seed=7)
    assert first == est.sample_indices(5000, 200, seed=7)
    assert len(set(first)) == 200 and first == sorted(first)
    assert first != est.sample_indices(5000, 200, seed=8)


def test_candidates_are_the_defaults_or_only_the_models_given() -> None:
    defaults = est.candidate_models(builtin_job("classify"), None)
    assert defaults[0] == JobSpec.build("classify", None, None).model
    assert {"claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-1"} <= set(
        defaults
    )
    assert len(defaults) == len(set(defaults))
    assert est.candidate_models(
        builtin_job("summarize"), ["claude-opus-5-5", "claude-opus-5-5"]
    ) == ["claude-opus-5-5"]


# -- output tokens --------------------------------------------------------------------------


def test_a_summary_is_two_substantive_sentences_at_most_the_ticket() -> None:
    short = "The export fails. Please fix it."
    assert est.summary_characters(short) == len(short)
    long = (
        "Hi, the export to CSV fails every night. The error says timeout. "
        "We already tried a smaller range of dates. Can you look into it soon? Thanks, Dana"
    )
    substantive = [  # of four words or more: not "Thanks, Dana"
        "Hi, the export to CSV fails every night.",
        "The error says timeout.",
        "We already tried a smaller range of dates.",
        "Can you look into it soon?",
    ]
    mean = sum(map(len, substantive)) / len(substantive)
    assert est.summary_characters(long) == pytest.approx(2 * mean + 1)


def test_output_defaults_follow_the_prompt_the_tokenizer_and_thinking() -> None:
    labels = ["billing", "other"]
    answers = [len(json.dumps({"label": label})) for label in labels]  # {"label": "billing"}
    old = JobSpec.build("classify", "claude-haiku-4-5", labels)  # older tokenizer, no thinking
    tokens = est.default_output_tokens(old, ["a", "b"])
    whole = [math.ceil(n / 4) for n in answers]  # an answer bills whole tokens
    assert tokens[0] == tokens[1] == pytest.approx(sum(whole) / 2)
    new = JobSpec.build("classify", "claude-haiku-5-5", labels)  # ~30% more tokens, thinking off
    (newer,) = est.default_output_tokens(new, ["a"])
    assert newer == pytest.approx(sum(math.ceil(n * 1.3 / 4) for n in answers) / 2)
    thinking = JobSpec.build("classify", "claude-opus-5-5", labels)  # always thinks
    (thought,) = est.default_output_tokens(thinking, ["a"])
    assert thought == pytest.approx(newer + THINKING_EXPECTED["low"])
    summarize = JobSpec.build("summarize", "claude-haiku-5-5", None)
    huge = "This sentence has quite a few words in it. " * 2000
    (two_sentences,) = est.default_output_tokens(summarize, [huge])
    assert two_sentences == math.ceil(est.summary_characters(huge) * 1.3 / 4)
    long_summary = "A " + "very " * 400 + "long sentence with many words."
    (capped,) = est.default_output_tokens(summarize, [long_summary])
    assert capped == summarize.max_tokens()
    old_summary = JobSpec.build("summarize", "claude-haiku-4-5", None)
    (tiny,) = est.default_output_tokens(old_summary, ["Hi."])
    assert tiny == 1.0


def write_results(directory: Path, rows: list[dict[str, Any]]) -> None:
    part = directory / "summarize" / "results" / "run_date=2026-11-29"
    part.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(part / "part-0.parquet")


def test_history_is_the_mean_of_the_same_job_model_and_prompt_version(tmp_path: Path) -> None:
    spec = JobSpec.build("summarize", "claude-haiku-5-5", None)
    row = {"id": "1", "job": "summarize", "model": spec.model,
           "prompt_version": spec.prompt_version, "output_tokens": 20}  # fmt: skip
    write_results(
        tmp_path,
        [
            row,
            {**row, "id": "2", "output_tokens": 40},
            {**row, "id": "3", "model": "claude-opus-5-5", "output_tokens": 500},
            {**row, "id": "4", "prompt_version": "summarize-v0", "output_tokens": 500},
            {**row, "id": "5", "job": "classify", "output_tokens": 500},
        ],
    )
    assert est.output_history(tmp_path, spec) == est.OutputHistory(30.0, 2)
    other = JobSpec.build("summarize", "claude-sonnet-5-5", None)
    assert est.output_history(tmp_path, other) is None
    assert est.output_history(tmp_path / "nothing-here", spec) is None
    (tmp_path / "junk" / "summarize" / "results").mkdir(parents=True)
    (tmp_path / "junk" / "summarize" / "results" / "x.parquet").write_text("not parquet")
    assert est.output_history(tmp_path / "junk", spec) is None


# -- cost -----------------------------------------------------------------------------------


def test_cost_with_a_price_file_realtime_and_batch(tmp_path: Path) -> None:
    book = price_book(tmp_path)
    usages = list(est.request_usages([300, 500], [20, 40], prefix=200, caching=False))
    assert usages == [Usage(300, 20), Usage(500, 40)]
    realtime = est.total_cost(book, "claude-test-1", usages, batch=False)
    assert realtime is not None
    assert realtime == pytest.approx((800 * 2.0 + 60 * 10.0) / 1e6)
    batch = est.total_cost(book, "claude-test-1", usages, batch=True)
    assert batch == pytest.approx(realtime * 0.4)  # the file's batch discount


def test_with_caching_the_first_request_writes_the_prefix_and_the_rest_read_it(
    tmp_path: Path,
) -> None:
    book = price_book(tmp_path)
    usages = list(est.request_usages([1500, 1600, 1700], [10, 10, 10], 1200, caching=True))
    assert usages == [
        Usage(300, 10, cache_write_tokens=1200),
        Usage(400, 10, cache_read_tokens=1200),
        Usage(500, 10, cache_read_tokens=1200),
    ]
    expected = (1200 * 2.5 + 2 * 1200 * 0.2 + 1200 * 2.0 + 30 * 10.0) / 1e6
    assert est.total_cost(book, "claude-test-1", usages, batch=False) == pytest.approx(expected)


def test_rates_for_long_prompts_apply_per_request_not_to_the_whole_input() -> None:
    book = PriceBook.load(None)
    # 5,000 prompts of 300 tokens: 1.5M tokens in all, but each one far below 100k.
    usages = [Usage(300, 20)] * 5000
    cost = est.total_cost(book, "claude-haiku-5-5", usages, batch=False)
    assert cost == pytest.approx((1_500_000 * 0.10 + 100_000 * 0.50) / 1e6)


def test_an_unknown_price_is_unknown_never_zero(capsys: pytest.CaptureFixture[str]) -> None:
    book = PriceBook.load(None)
    assert book.price_for("claude-nobody-9") is None
    assert est.total_cost(book, "claude-nobody-9", [Usage(100, 10)], batch=False) is None
    row = est.ModelEstimate(
        "claude-nobody-9", rows=10, counted=10, input_tokens=1000, output_tokens=100,
        output_source="default", output_note="default",
    )  # fmt: skip
    assert row.as_json()["cost_usd"] == {"realtime": None, "batch": None}
    result = est.Estimate("t.csv", "summarize", "summarize-v1", 10, 10, "2026-11-29",
                          "built-in table", [row])  # fmt: skip
    est.render(result)
    out = capsys.readouterr().out
    assert "unknown" in out and "$0" not in out
    assert "[models.claude-nobody-9]" in out and "--prices FILE" in out


# -- counting -------------------------------------------------------------------------------


def count_on(
    simulator: InProcessSimulator,
    tmp_path: Path,
    rows: int,
    specs: list[JobSpec],
    sample_size: int,
) -> tuple[est.Estimate, list[str]]:
    """The estimate of `rows` sample tickets, counted on the simulator; and their prompts."""
    write_tickets(tmp_path / "t.csv", rows)
    tickets, prompts = load_job_rows(tmp_path / "t.csv", specs[0].template, "id")
    backend = simulator.target("k").connect()
    result = asyncio.run(est.estimate(
        tickets, prompts, specs, PriceBook.load(None), sample_size=sample_size, backend=backend
    ))  # fmt: skip
    return result, prompts


def test_every_ticket_counted_when_the_sample_covers_them(
    simulate: Simulate, tmp_path: Path
) -> None:
    simulator = simulate()
    spec = JobSpec.build("classify", "claude-haiku-5-5", None)
    result, prompts = count_on(simulator, tmp_path, 12, [spec], sample_size=50)
    stats = simulator.stats()
    assert stats["requests_total"] == 0  # no generation call
    assert stats["count_tokens_requests"] == result.count_tokens_calls == 12 + 2
    (row,) = result.models
    exact = sum(simulator.api.count_tokens(spec.request(t))["input_tokens"]
                for t in prompts)  # fmt: skip
    assert row.input_tokens == exact and row.counted == 12
    assert row.prefix_tokens > 0 and not row.caching


def test_a_sample_extrapolates_and_an_unknown_model_is_reported(
    simulate: Simulate, tmp_path: Path
) -> None:
    simulator = simulate()
    spec = JobSpec.build("summarize", "claude-sonnet-5-5", None)
    unknown = JobSpec.build("summarize", "claude-nobody-9", None)
    result, prompts = count_on(simulator, tmp_path, 300, [spec, unknown], sample_size=40)
    good, bad = result.models
    exact = sum(simulator.api.count_tokens(spec.request(t))["input_tokens"]
                for t in prompts)  # fmt: skip
    assert good.counted == 40
    assert good.input_tokens == pytest.approx(exact, rel=0.02)
    assert good.realtime_usd is not None and good.batch_usd == pytest.approx(good.realtime_usd / 2)
    assert bad.error is not None and "claude-nobody-9" in bad.error
    assert result.failed
    assert simulator.stats()["requests_total"] == 0


class FlakyCounter:
    """A backend whose count_tokens is rate limited, then overloaded, then answers."""

    def __init__(self) -> None:
        self.calls = 0

    async def count_tokens(self, params: dict[str, Any]) -> int:
        self.calls += 1
        request = httpx2.Request("POST", "http://127.0.0.1/v1/messages/count_tokens")
        if self.calls == 1:
            response = httpx2.Response(429, headers={"retry-after": "0"}, request=request)
            raise anthropic.RateLimitError("rate limited", response=response, body=None)
        if self.calls == 2:
            response = httpx2.Response(529, request=request)
            raise anthropic.OverloadedError("overloaded", response=response, body=None)
        return 42

    async def aclose(self) -> None:
        pass


def test_count_tokens_is_retried_on_429_and_529(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(policy, "backoff_delay", lambda attempt, rng: 0.0)
    flaky = FlakyCounter()
    counter = est.TokenCounter(flaky)
    spec = JobSpec.build("summarize", "claude-haiku-5-5", None)
    assert asyncio.run(counter.count(spec.request("hello"))) == 42
    assert flaky.calls == 3


def test_caching_is_assumed_only_at_each_models_own_minimum_and_the_tokenizer_counts(
    simulate: Simulate, tmp_path: Path
) -> None:
    """Instructions of about 1,000 tokens: past the 5.x models' 512-token minimum, short of
    Haiku 4.5's 4,096. The newer tokenizer counts the same text about 30% longer."""
    simulator = simulate()
    write_tickets(tmp_path / "t.csv", 20)
    instructions = "Always name the product and the customer's exact ask. " * 70
    models = ("claude-sonnet-5-5", "claude-haiku-4-5", "claude-haiku-5-5")
    specs = [JobSpec.build("summarize", model, None, instructions) for model in models]
    backend = simulator.target("k").connect()
    tickets, prompts = load_job_rows(tmp_path / "t.csv", specs[0].template, "id")
    result = asyncio.run(
        est.estimate(tickets, prompts, specs, PriceBook.load(None), backend=backend)
    )
    sonnet, old_haiku, new_haiku = result.models
    assert 512 <= sonnet.prefix_tokens < 4096
    assert sonnet.caching and sonnet.cache_min_tokens == 512
    assert not old_haiku.caching and old_haiku.cache_min_tokens == 4096
    assert new_haiku.caching
    assert new_haiku.input_tokens == pytest.approx(1.3 * old_haiku.input_tokens, rel=0.03)
    assert new_haiku.tokens_per_char == pytest.approx(1.3 * old_haiku.tokens_per_char, rel=0.05)
    assert sonnet.as_json()["tokenizer_factor"] == 1.3 and not sonnet.thinking
