"""A cascade through the whole flow, on the simulator: realtime and Message Batches store
every row once, mark what the stronger model answered, and resume without asking again."""

from __future__ import annotations

import asyncio
import csv
from pathlib import Path

import pandas as pd
import pytest

from aibatch.engine.batches import BatchLedger
from aibatch.flows.process_rows import process_rows
from aibatch.runs.parameters import RunParameters
from tests.conftest import FlowSimulator
from tests.helpers import ROOT

CHEAP, STRONG = "claude-haiku-5-5", "claude-sonnet-5-5"


def write_products(path: Path, count: int) -> dict[str, str]:
    with (ROOT / "data/products.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:count]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {r["sku"]: r["category_hint"] for r in rows}


@pytest.mark.parametrize("mode", ["realtime", "batch"])
def test_a_cascade_stores_every_row_once_and_marks_the_escalated_ones(
    flow_simulator: FlowSimulator, tmp_path: Path, mode: str
) -> None:
    server = flow_simulator(
        accuracy={CHEAP: 0.8, STRONG: 1.0}, p_refusal=0.03, seed=4, batch_processing_seconds=0.5
    )
    truth = write_products(tmp_path / "products.csv", 400)
    params = RunParameters.model_validate({
        "input_path": str(tmp_path / "products.csv"), "output_dir": str(tmp_path / "out"),
        "job_file": str(ROOT / "jobs/product-category.toml"), "escalate_to": STRONG,
        "mode": mode, "batch_poll_max_s": 0.2,
    })  # fmt: skip
    summary = asyncio.run(process_rows(params))
    results = pd.read_parquet(tmp_path / "out" / "product-category" / "results").set_index("id")
    assert results.index.is_unique and set(results.index) == set(truth)
    escalated = results[results["escalated_from"].notna()]
    assert len(escalated) > 40 and (escalated["model"] == STRONG).all()
    assert set(escalated["escalation_reason"]) <= {"label: other", "refusal"}
    assert (results.loc[results["escalated_from"].isna(), "model"] == CHEAP).all()
    assert summary["escalated"] >= len(escalated)
    right = (results["result"] == pd.Series(truth).reindex(results.index)).mean()
    assert right > 0.93, right  # the cheap model alone is near 0.8 here
    assert set(results["mode"]) == {mode}
    if mode == "batch":
        ledger = BatchLedger(tmp_path / "out" / "_aibatch" / "batches").load()
        assert {s.model for s in ledger} == {CHEAP, STRONG}
        assert all(not s.open for s in ledger)

    # Resume: every row is settled, escalated ones included; nothing is asked again.
    before = server.stats()["requests_total"] + server.stats()["batch_requests"]
    again = asyncio.run(process_rows(params))
    assert again["already_done"] == 400 and again["rows"] == 0
    assert server.stats()["requests_total"] + server.stats()["batch_requests"] == before
