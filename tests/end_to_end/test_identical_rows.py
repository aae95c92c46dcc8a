"""Identical rows through the whole flow: one call for each distinct request, every id
answered, the cost on one of them, and the summary counting the calls saved."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd

from aibatch.flows.process_rows import process_rows
from aibatch.runs.parameters import RunParameters
from tests.conftest import FlowSimulator
from tests.helpers import job_dataset


def test_rows_with_the_same_request_make_one_call(
    flow_simulator: FlowSimulator, tmp_path: Path
) -> None:
    server = flow_simulator()
    texts = ["The export fails with error 7.", "Please add a dark mode.", "Refund my order."]
    rows = pd.DataFrame({"id": [f"r{i}" for i in range(300)],
                         "text": [texts[i % 3] for i in range(300)]})  # fmt: skip
    rows.to_csv(tmp_path / "rows.csv", index=False)
    params = RunParameters(input_path=str(tmp_path / "rows.csv"), output_dir=str(tmp_path / "out"),
                           job="classify", chunk_size=50)  # fmt: skip
    summary = asyncio.run(process_rows(params))
    assert server.stats()["requests_total"] == 3
    assert summary["ok"] == 300 and summary["calls_saved"] == 297
    results = pd.read_parquet(job_dataset(tmp_path / "out")).set_index("id")
    assert len(results) == 300 and results.index.is_unique
    by_text = rows.set_index("id")["text"]
    assert results.groupby(by_text.reindex(results.index))["result"].nunique().eq(1).all()
    assert (results["cost_usd"] > 0).sum() == 3
