"""A run opened from its plan, on the simulator in process: identical rows asked once, and a
cascade that stops at the budget with everything answered saved."""

from __future__ import annotations

import asyncio
import csv
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aibatch.errors import RunStopped
from aibatch.runs.builder import ask_once, open_run, raise_for_chunk_outcomes
from aibatch.runs.parameters import RunParameters
from aibatch.runs.plan import RunPlan
from tests.conftest import Simulate
from tests.helpers import ROOT, job_dataset

LOG = logging.getLogger("test")


def run_plan(
    params: RunParameters, simulate: Simulate, **config: Any
) -> tuple[dict[str, Any], Any]:
    """Run every chunk of the plan (realtime, no Prefect); the summary and the simulator."""
    server = simulate(**config)
    plan = RunPlan.build(params)

    async def go() -> dict[str, Any]:
        async with open_run(plan, server.target(), LOG) as run:
            processor = run.processor(None)
            outcomes: list[object] = []
            for chunk in run.chunks():
                try:
                    outcomes.append(await processor.process_chunk(chunk))
                except Exception as error:
                    outcomes.append(error)
        raise_for_chunk_outcomes(outcomes)
        return run.summary()

    return asyncio.run(go()), server


def test_rows_asking_the_same_are_asked_once_and_answered_for_each(
    tmp_path: Path, simulate: Simulate
) -> None:
    rows = [(f"r{i}", f"The export fails with error {i % 10}. Please fix it.") for i in range(40)]
    pd.DataFrame(rows, columns=["id", "text"]).to_csv(tmp_path / "rows.csv", index=False)
    params = RunParameters(input_path=str(tmp_path / "rows.csv"), output_dir=str(tmp_path / "out"))
    summary, server = run_plan(params, simulate)
    assert server.stats()["requests_total"] == 10  # ten distinct texts
    assert summary["ok"] == 40 and summary["calls_saved"] == 30
    results = pd.read_parquet(job_dataset(tmp_path / "out")).set_index("id")
    assert sorted(results.index) == sorted(i for i, _ in rows)
    assert str(results.loc["r0", "result"]) == str(results.loc["r10", "result"])
    assert (results["cost_usd"] > 0).sum() == 10  # the cost on one row of each ten
    assert results["cost_usd"].sum() == pytest.approx(summary["cost_usd"])

    each = RunParameters(input_path=str(tmp_path / "rows.csv"), output_dir=str(tmp_path / "each"),
                         ask_once=False)  # fmt: skip
    summary, server = run_plan(each, simulate)
    assert server.stats()["requests_total"] == 40 and summary["calls_saved"] == 0


def test_ask_once_keeps_the_first_row_of_each_prompt_in_input_order() -> None:
    sent, twins = ask_once([("a", "x"), ("b", "y"), ("c", "x"), ("d", "x")])
    assert sent == [("a", "x"), ("b", "y")] and twins == {"a": ["c", "d"]}


def test_a_budget_reached_during_escalation_stops_with_every_answer_saved(
    tmp_path: Path, simulate: Simulate
) -> None:
    with (ROOT / "data/products.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:300]
    with (tmp_path / "rows.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    params = RunParameters(
        input_path=str(tmp_path / "rows.csv"), output_dir=str(tmp_path / "out"),
        job_file=str(ROOT / "jobs/product-category.toml"), escalate_to="claude-sonnet-5-5",
        budget_usd=0.02, max_concurrency=4,
    )  # fmt: skip
    with pytest.raises(RunStopped, match="budget"):
        run_plan(params, simulate, accuracy={"claude-haiku-5-5": 0.7})
    results = pd.read_parquet(job_dataset(tmp_path / "out", job="product-category"))
    assert results["id"].is_unique and 0 < len(results) < 300
    assert results["escalated_from"].notna().any()  # it was escalating when it stopped
    assert results["cost_usd"].sum() <= 0.02
    # The same command with a higher budget finishes what is left, asking nothing twice.
    more = params.model_copy(update={"budget_usd": 5.0})
    summary, _ = run_plan(more, simulate, accuracy={"claude-haiku-5-5": 0.7})
    final = pd.read_parquet(job_dataset(tmp_path / "out", job="product-category"))
    assert final["id"].is_unique and len(final) == 300
    assert summary["already_done"] == len(results)
