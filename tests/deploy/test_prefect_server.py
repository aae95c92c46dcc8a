"""aibatch on a real Prefect server, as its users run it: setup, deploy, workers, the UI."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aibatch.jobs.spec import JobSpec, load_job_file
from aibatch.runs.parameters import RunParameters
from aibatch.simulator.process import SimulatorProcess
from aibatch.testing.prefect_server import PrefectServerProcess
from tests.deploy.conftest import FAKE_KEY, ROOT, child_runs, start_deployment_run
from tests.helpers import assert_typed_and_true, job_dataset, write_invoices

SCREENSHOT = ROOT / "ci-artifacts" / "ui" / "flow-run.png"


def test_setup_deploy_and_a_worker_run_through_529s_with_chunk_retries(
    prefect_server: PrefectServerProcess, overloaded_run: dict[str, Any], deployed: str
) -> None:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    first, again = deployed.split("\n---\n")
    assert "work pool 'aibatch-process' (process): created" in first
    assert "work pool 'aibatch-process' (process): already there" in again
    assert "'tag:aibatch-chunks': 2 chunks at once" in again
    assert FAKE_KEY not in deployed
    run = overloaded_run["run"]
    assert run.state.is_completed(), run.state

    async def read() -> tuple[list[Any], dict[str, list[str]], list[Any], list[str]]:
        async with PrefectClient(prefect_server.api_url) as client:
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
            chunks = [t for t in task_runs if t.name.startswith("chunk ")]
            histories = {
                t.name: [s.name for s in await client.read_task_run_states(t.id)] for t in chunks
            }
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
            )
            deployments = await client.read_deployments()
            return chunks, histories, artifacts, [d.name for d in deployments]

    chunks, histories, artifacts, deployments = asyncio.run(read())
    assert {"nightly-summaries", "hourly-classification", "batch-summaries", "shard"} <= set(
        deployments
    )
    assert sorted(t.name for t in chunks) == [
        "chunk 1 of 2: tickets.csv",
        "chunk 2 of 2: tickets.csv",
    ]
    retried = [name for name, states in histories.items()
               if "AwaitingRetry" in states and "Retrying" in states]  # fmt: skip
    assert retried, histories
    kinds = {a.type for a in artifacts}
    assert {"progress", "table"} <= kinds, [(a.key, a.type) for a in artifacts]

    results = pd.read_parquet(job_dataset(overloaded_run["output"]))
    assert results["id"].is_unique
    assert set(results["id"]) == overloaded_run["ids"]
    # The worker had no key in its environment: the flow took it from the Secret block
    # (the simulator refuses any other), and logged it nowhere.
    for log in (overloaded_run["worker_log"], prefect_server.log_path):
        assert FAKE_KEY not in log.read_text(errors="replace"), log


def test_two_workers_run_the_shards_of_one_input_under_one_in_flight_limit(
    prefect_server: PrefectServerProcess,
    simulator: SimulatorProcess,
    start_worker: Callable[[str], Path],
    overloaded_run: dict[str, Any],
    tmp_path: Path,
) -> None:
    """A sharded run of your own job (invoice extraction, given as the flow's
    job_definition parameter) fans out as shard flow runs any worker takes; `aibatch setup
    --in-flight 6` caps them together: the API never sees more than 6 at once."""

    start_worker("worker-b")
    truth = write_invoices(tmp_path / "invoices.jsonl", 300)
    simulator.reset()
    definition = load_job_file(ROOT / "jobs" / "invoice-extract.toml")
    params = {"input_path": str(tmp_path / "invoices.jsonl"), "output_dir": str(tmp_path / "out"),
              "job_definition": definition.model_dump(mode="json", by_alias=True),
              "chunk_size": 50, "shards": 2}  # fmt: skip
    parent = asyncio.run(
        start_deployment_run(prefect_server.api_url, "aibatch-rows/product-categories",
                             params)
    )  # fmt: skip
    assert parent.state.is_completed(), parent.state
    stats = simulator.stats()
    assert 0 < stats["max_in_flight"] <= 6, stats["max_in_flight"]

    shards = child_runs(prefect_server.api_url, parent.id)
    assert sorted(r.name for r in shards) == [
        f"invoice-extract-invoices.jsonl.shard-{i}-of-2.parquet" for i in (1, 2)
    ]
    assert all(r.state is not None and r.state.is_completed() for r in shards)
    results = assert_typed_and_true(job_dataset(tmp_path / "out"), truth)
    assert results.index.is_unique
    assert set(results.index) == set(truth)
    assert stats["prompts_paid_repeated"] == 0


def test_jobs_given_inline_or_by_file_in_prefect_yaml_deploy_as_their_job_files(
    prefect_server: PrefectServerProcess, deployed: str
) -> None:
    """Deployed, product-categories (its job inline) asks what jobs/product-category.toml
    asks of every product, and invoice-extraction (its job by file) is that file's job."""
    from prefect.client.orchestration import PrefectClient

    async def read(name: str) -> dict[str, Any]:
        async with PrefectClient(prefect_server.api_url) as client:
            deployment = await client.read_deployment_by_name(f"aibatch-rows/{name}")
            return dict(deployment.parameters["params"])

    inline = RunParameters.model_validate(asyncio.run(read("product-categories")))
    from_file = JobSpec.of(load_job_file(ROOT / "jobs" / "product-category.toml"))
    spec = inline.job_spec()
    products = pd.read_csv(ROOT / "data" / "products.csv", dtype=str, keep_default_na=False)
    rows = [{str(k): v for k, v in row.items()} for row in products.to_dict("records")]
    assert [spec.render(row) for row in rows] == [from_file.render(row) for row in rows]
    assert spec.system_text == from_file.system_text and spec.labels == from_file.labels
    assert "Title: <data>" in spec.render(rows[0])  # the column survived prefect deploy

    by_file = RunParameters.model_validate(asyncio.run(read("invoice-extraction")))
    invoices = JobSpec.of(load_job_file(ROOT / "jobs" / "invoice-extract.toml"))
    assert by_file.job_spec().prompt_version == invoices.prompt_version


def test_the_flow_run_page_shows_chunks_retries_and_artifacts(
    prefect_server: PrefectServerProcess, overloaded_run: dict[str, Any], tmp_path: Path
) -> None:
    """Headless Chromium renders the run's page from the server's own UI, the one Prefect
    3.9 opens by default (V2, under /v2): its logs with the chunks' retries, its task runs,
    its artifacts (the screenshot)."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
    run = overloaded_run["run"]
    page = prefect_server.api_url.removesuffix("/api") + f"/v2/runs/flow-run/{run.id}"
    flags = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=20000", "--window-size=1600,1300",
    ]  # fmt: skip

    def dom(url: str) -> str:
        return subprocess.run([*flags, "--dump-dom", url], check=True, timeout=180,
                              capture_output=True, text=True).stdout  # fmt: skip

    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    subprocess.run([*flags, f"--screenshot={SCREENSHOT}", f"{page}?tab=Artifacts"], check=True,
                   timeout=180, capture_output=True)  # fmt: skip
    assert SCREENSHOT.stat().st_size > 10_000
    logs = dom(page)
    assert run.name in logs and "Completed" in logs
    assert "Retry 1/3" in logs  # a chunk's retry, in the run's logs
    task_runs = dom(f"{page}?tab=TaskRuns")
    assert "chunk 1 of 2: tickets.csv" in task_runs and "chunk 2 of 2: tickets.csv" in task_runs
    artifacts = dom(f"{page}?tab=Artifacts")
    assert "aibatch-classify-tickets-csv-summary" in artifacts
    assert "aibatch-classify-tickets-csv-progress" in artifacts


def test_setup_without_a_server_says_what_to_set(tmp_path: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_HOME"] = str(tmp_path)  # an empty profile: no API URL anywhere
    result = subprocess.run(
        [sys.executable, "-m", "aibatch", "setup", "--store-api-key"], env=env, cwd=ROOT,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2
    assert "PREFECT_API_URL is not set" in result.stderr
