"""A json job end to end on the simulator: invoice extraction from data/invoices.jsonl into
typed columns (realtime and batch mode, under a budget), and kill -9 then resume."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from aibatch.app.cli import app
from aibatch.errors import RunStopped
from aibatch.flows.process_rows import process_rows
from aibatch.jobs.spec import JobSpec, load_job_file
from aibatch.output import crashpoints
from aibatch.runs.parameters import RunParameters
from aibatch.simulator import SimulatorServer
from aibatch.simulator.process import SimulatorProcess
from tests.conftest import FlowSimulator, sim_config
from tests.helpers import (
    ROOT,
    assert_stopped_within_one_request,
    assert_typed_and_true,
    read_everywhere,
    write_invoices,
)

StartSimulator = Callable[..., SimulatorServer]
UseSimulator = Callable[[SimulatorServer], None]

JOB_FILE = ROOT / "jobs" / "invoice-extract.toml"


def params(tmp_path: Path, **options: Any) -> RunParameters:
    return RunParameters.model_validate({
        "input_path": str(tmp_path / "invoices.jsonl"), "output_dir": str(tmp_path / "out"),
        "job_definition": load_job_file(JOB_FILE), "chunk_size": 50, **options,
    })  # fmt: skip


def test_invoice_extraction_fills_typed_columns_each_from_its_own_invoice(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    flow_simulator(latency_ms=5)
    truth = write_invoices(tmp_path / "invoices.jsonl", 60)
    summary = asyncio.run(process_rows(params(tmp_path)))
    assert summary["ok"] == 60 and summary["job"] == "invoice-extract"
    realtime = assert_typed_and_true(tmp_path / "out" / "invoice-extract" / "results", truth)
    assert set(realtime.index) == set(truth)

    # Batch mode: the same typed columns, at half the price.
    batch = asyncio.run(process_rows(params(
        tmp_path, output_dir=str(tmp_path / "batch"), mode="batch", batch_poll_max_s=0.05,
    )))  # fmt: skip
    assert batch["ok"] == 60
    by_batch = assert_typed_and_true(tmp_path / "batch" / "invoice-extract" / "results", truth)
    assert by_batch.loc[realtime.index, "result"].tolist() == realtime["result"].tolist()
    assert set(by_batch["mode"]) == {"batch"}


def test_a_json_job_under_a_budget_stops_within_one_request_and_resumes(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator(latency_ms=5)
    truth = write_invoices(tmp_path / "invoices.jsonl", 120)
    cap = 0.004
    with pytest.raises(RunStopped, match="budget reached"):
        asyncio.run(process_rows(params(tmp_path, budget_usd=cap, max_concurrency=4)))
    results = pd.read_parquet(tmp_path / "out" / "invoice-extract" / "results")
    assert 0 < len(results) < 120
    spec = JobSpec.of(load_job_file(JOB_FILE))
    assert_stopped_within_one_request(results, cap, spec, batch=False)

    asyncio.run(process_rows(params(tmp_path, budget_usd=1.0)))
    assert_typed_and_true(tmp_path / "out" / "invoice-extract" / "results", truth)
    assert server.stats()["prompts_paid_repeated"] == 0


@pytest.mark.reliability
@pytest.mark.usefixtures("release_leaked_slots")
def test_kill_9_on_a_json_job_then_resume_loses_nothing(prefect_api: str, tmp_path: Path) -> None:
    truth = write_invoices(tmp_path / "invoices.jsonl", 400)
    output = tmp_path / "out"
    with SimulatorProcess(sim_config(latency_ms=20)) as sim:
        env = {**os.environ, "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": sim.base_url,
               "PREFECT_API_URL": prefect_api, "AIBATCH_COMMIT_EVERY_ROWS": "25"}  # fmt: skip
        command = [
            sys.executable, "-m", "aibatch", "run", str(tmp_path / "invoices.jsonl"),
            "--job-file", str(JOB_FILE), "--output", str(output), "--no-progress",
            "--max-concurrency", "4", "--chunk-size", "100", "--chunk-slots", "100",
        ]  # fmt: skip
        results = output / "invoice-extract" / "results"
        for point in ("commit:results-published@3", "publish:renamed@5", "publish:staged@2"):
            killed = subprocess.run(
                command, env={**env, crashpoints.ENVIRONMENT_VARIABLE: point},
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
            ids = read_everywhere(results)
            assert len(ids) == len(set(ids)) and set(ids) <= set(truth)
        assert len(read_everywhere(results)) < len(truth)
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert final.returncode == 0, final.stderr[-3000:]
        assert sorted(read_everywhere(results)) == sorted(truth)
        assert_typed_and_true(results, truth)
        # Only what was in flight at each kill is paid for again.
        assert sim.stats()["prompts_paid_repeated"] <= 3 * 4


def test_a_property_whose_type_changed_exits_2_naming_it_and_sends_nothing(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator(latency_ms=5)
    write_invoices(tmp_path / "invoices.jsonl", 10)
    asyncio.run(process_rows(params(tmp_path, limit=5)))
    sent = server.stats()["requests_total"]
    schema = json.loads((ROOT / "jobs" / "invoice.schema.json").read_text())
    schema["properties"]["total"] = {"type": "string"}
    (tmp_path / "invoice.schema.json").write_text(json.dumps(schema))
    (tmp_path / "job.toml").write_text(JOB_FILE.read_text())
    result = CliRunner().invoke(app, [
        "run", str(tmp_path / "invoices.jsonl"), "--job-file", str(tmp_path / "job.toml"),
        "--output", str(tmp_path / "out"), "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "property 'total' would be stored as string, but the dataset holds it as double" in (
        result.output
    )
    assert server.stats()["requests_total"] == sent
