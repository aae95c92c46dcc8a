"""With a warm prompt cache, the pacer charges its input-token bucket what the API's ITPM
limit counts (uncached input and cache writes), not the cache reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aibatch.engine.pacer import Pacer, Reservation
from tests.conftest import Simulate
from tests.engine.test_processor import Harness, tickets


def test_cache_reads_are_not_charged_to_the_input_token_limit(
    simulate: Simulate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pacer = Pacer(itpm=50_000_000)  # a limit, so the input bucket exists; never binding
    reserved: list[float] = []
    settled: list[int] = []
    reserve, settle = pacer.reserve, pacer.settle

    def record_reserve(estimate: float, output: float | None = None) -> Reservation:
        reserved.append(estimate)
        return reserve(estimate, output)

    def record_settle(reservation: Reservation, input_tokens: int, output_tokens: int) -> None:
        settled.append(input_tokens)
        settle(reservation, input_tokens, output_tokens)

    monkeypatch.setattr(pacer, "reserve", record_reserve)
    monkeypatch.setattr(pacer, "settle", record_settle)
    h = Harness(simulate(cache_min_tokens=50), tmp_path, pacer=pacer, max_concurrency=1)
    try:
        h.run(tickets(40))
        rows = h.results().sort_values("completed_at")
    finally:
        h.close()
    counted = (rows["input_tokens"] + rows["cache_creation_input_tokens"]).tolist()
    prompts = (counted + rows["cache_read_input_tokens"]).tolist()
    assert rows["cache_read_input_tokens"].iloc[1:].gt(0).all()
    assert settled == counted  # what each answer took from the ITPM bucket
    # Reservations learn the cached share: the last ones are near the uncached part of a
    # prompt, far below the whole prompt.
    tail: list[Any] = list(zip(reserved[-10:], counted[-10:], prompts[-10:], strict=True))
    for estimate, uncached, whole in tail:
        assert estimate < 0.6 * whole
        assert abs(estimate - uncached) < 0.35 * whole
