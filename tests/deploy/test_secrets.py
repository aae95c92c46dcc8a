"""The API key appears nowhere: not in logs, output, the Prefect database, artifacts,
Parquet or failure records; after a local run with retries, failures and a stop, and after
a deployment run that took the key from the Secret block."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.dataset as ds
import pytest

from aibatch.simulator.process import SimulatorProcess
from aibatch.testing.prefect_server import PrefectServerProcess
from tests.deploy.conftest import FAKE_KEY, ROOT
from tests.helpers import job_dataset, write_tickets

pytestmark = pytest.mark.reliability


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        else:
            yield from (p for p in root.rglob("*") if p.is_file())


def strings_in_parquet(path: Path) -> Iterator[str]:
    """Every string cell: compressed pages need not hold the key's bytes literally."""
    table = ds.dataset(path, format="parquet").to_table()
    for column in table.columns:
        for value in column.to_pylist():
            if isinstance(value, str):
                yield value


def read_everything_on_the_server(api_url: str) -> str:
    """Flow runs (with parameters), task runs, logs, artifacts and blocks, as the API serves
    them to anyone who can open the UI."""
    from prefect.client.orchestration import PrefectClient

    async def read() -> str:
        async with PrefectClient(api_url) as client:
            found: list[Any] = []
            found += [r.model_dump(mode="json") for r in await client.read_flow_runs()]
            found += [r.model_dump(mode="json") for r in await client.read_task_runs()]
            found += [a.model_dump(mode="json") for a in await client.read_artifacts()]
            # As the UI lists them: the Secret block's value masked (a client that asks for
            # secrets gets it: that is how the flow reads the key).
            blocks = await client.read_block_documents(include_secrets=False)
            found += [b.model_dump(mode="json") for b in blocks]
            offset = 0
            while logs := await client.read_logs(offset=offset, limit=200):
                found += [log.model_dump(mode="json") for log in logs]
                offset += len(logs)
            return json.dumps(found)

    return asyncio.run(read())


def test_the_key_is_nowhere_after_local_and_deployment_runs(
    prefect_server: PrefectServerProcess,
    simulator: SimulatorProcess,
    overloaded_run: dict[str, Any],
    tmp_path: Path,
) -> None:
    env = {**prefect_server.env, "ANTHROPIC_API_KEY": FAKE_KEY,
           "ANTHROPIC_BASE_URL": simulator.base_url}  # fmt: skip
    write_tickets(tmp_path / "tickets.csv", 150, long_ids=3, start=2_000)
    tickets = pd.read_csv(tmp_path / "tickets.csv", dtype=str)  # the over-long ones first:
    tickets.iloc[::-1].to_csv(tmp_path / "tickets.csv", index=False)  # failed before the stop
    # Retries (529s, 500s), permanent failures (over the context window), then a stop: the
    # key refused mid-run (401), with the API's error text in the message.
    simulator.reset()
    simulator.configure(p529=0.1, p500=0.05, context_window=2_000, revoke_key_after=100)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "aibatch", "run", str(tmp_path / "tickets.csv"),
             "--output", str(tmp_path / "out"), "--chunk-size", "50", "--no-progress"],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        simulator.configure(p529=0.0, p500=0.0, context_window=200_000, revoke_key_after=None)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "refused the key" in result.stderr
    stats = simulator.stats()
    assert stats["by_status"].get("529", 0) + stats["by_status"].get("500", 0) > 0
    recorded = job_dataset(tmp_path / "out", "failures").rglob("*.parquet")
    assert list(recorded), "no failure was recorded"

    places: dict[str, str] = {"stdout": result.stdout, "stderr": result.stderr}
    everything = files_under(
        prefect_server.home,  # the database (and its WAL), server log, profiles
        overloaded_run["worker_log"],
        tmp_path / "out",  # results, failures, journal, lock
        overloaded_run["output"],
    )
    for path in everything:
        places[str(path)] = path.read_bytes().decode("latin-1")
        if path.suffix == ".parquet":
            places[f"{path} (cells)"] = "\n".join(strings_in_parquet(path))
    places["the Prefect API"] = read_everything_on_the_server(prefect_server.api_url)
    assert any(p.endswith(".db") for p in places), "the Prefect database was not scanned"

    leaks = [place for place, text in places.items() if FAKE_KEY in text]
    assert leaks == []
    # Not even a prefix long enough to identify the key.
    assert not [place for place, text in places.items() if FAKE_KEY[:16] in text]
