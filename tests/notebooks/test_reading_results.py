"""The example notebook, executed against output the flow made on the simulator, so it
cannot rot: every cell runs, the dtypes are the ones analysis needs, the figures are saved."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from aibatch.flows.evaluate import evaluate
from aibatch.flows.process_rows import process_rows
from aibatch.jobs.spec import load_job_file
from aibatch.runs.evaluation import EvalParameters
from aibatch.runs.parameters import RunParameters
from tests.conftest import FlowSimulator
from tests.helpers import ROOT, job_dataset, write_invoices, write_tickets

ARTIFACTS = ROOT / "ci-artifacts" / "notebook"
FIGURES = ["answers-summarize", "answers-classify", "answers-invoice-extract", "latency",
           "throughput", "tokens_cost", "failures", "eval"]  # fmt: skip


def outputs_of(notebook: nbformat.NotebookNode) -> str:
    """Everything the cells printed or displayed, as text."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text", ""))
            data = output.get("data", {})
            texts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(texts)


@pytest.mark.timeout(900)
def test_the_notebook_runs_on_a_fresh_output_and_saves_its_figures(
    flow_simulator: FlowSimulator,
    tmp_path: Path,
) -> None:
    write_tickets(tmp_path / "tickets.csv", 200, long_ids=3)
    flow_simulator(latency_ms=20, latency_sigma=0.4, p529=0.05, p500=0.02,
                   context_window=2_000, seed=3, accuracy={})  # fmt: skip
    output = tmp_path / "out"
    for job in ("summarize", "classify"):
        asyncio.run(process_rows(RunParameters(
            input_path=str(tmp_path / "tickets.csv"), output_dir=str(output), job=job,
            chunk_size=100,
        )))  # fmt: skip
    write_invoices(tmp_path / "invoices.jsonl", 50)  # a json job: typed fields
    asyncio.run(process_rows(RunParameters(
        input_path=str(tmp_path / "invoices.jsonl"), output_dir=str(output),
        job_definition=load_job_file(ROOT / "jobs" / "invoice-extract.toml"),
    )))  # fmt: skip
    # Is the cheap model good enough? Two models on 60 products with known categories.
    asyncio.run(evaluate(EvalParameters(
        input_path=str(ROOT / "data/products.csv"),
        job_file=str(ROOT / "jobs/product-category.toml"),
        truth_path=str(ROOT / "data/products-truth.csv"),
        models=["claude-haiku-5-5", "claude-sonnet-5-5"], sample=60, output_dir=str(output),
    )))  # fmt: skip
    for name in FIGURES:
        (ARTIFACTS / f"{name}.png").unlink(missing_ok=True)

    executed = ARTIFACTS / "reading-results.ipynb"
    run = subprocess.run(
        [sys.executable, "scripts/render_notebook.py", "--output", str(output), "--input",
         str(tmp_path / "tickets.csv"), "--figures", str(ARTIFACTS), "--executed",
         str(executed)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-4000:]

    notebook = nbformat.read(executed, as_version=4)
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    shown = outputs_of(notebook)
    # 200 per job, 50 invoices, 60 products per model; 3 tickets too long
    assert "570 results, 6 failure records" in shown
    assert "Recommended:" in shown and "meets_target" in shown
    assert "aibatch.run answered 20 of 20 rows (0 failed)" in shown  # a job run from a cell
    assert "INV-2026-40034" in shown  # the json job's typed fields, shown as a table
    for dtype in ("Int64", "datetime64[us, UTC]", "category", "string"):
        assert dtype in shown, dtype
    summaries = pd.read_parquet(job_dataset(output, job="summarize")).head(3)
    assert all(summary in shown for summary in summaries["result"].str[:40])  # joined back
    for name in FIGURES:
        png = (ARTIFACTS / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000, name
