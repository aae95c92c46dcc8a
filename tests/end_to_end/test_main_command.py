"""`aibatch run` as a user runs it: no key (so the simulator), no Prefect server configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import job_dataset, write_tickets

READ_HISTORY = textwrap.dedent("""
    import asyncio, json
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def main():
        async with get_client() as client:
            runs = await client.read_flow_runs()
            out = []
            for run in runs:
                tasks = await client.read_task_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
                )
                out.append({"name": run.name, "state": run.state.type.value,
                            "tasks": sorted(t.name for t in tasks)})
            print("HISTORY " + json.dumps(out))

    asyncio.run(main())
""")


@pytest.mark.timeout(600)
def test_the_main_command_uses_the_simulator_and_keeps_prefect_history(tmp_path: Path) -> None:
    texts = write_tickets(tmp_path / "tickets.csv", 120)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "PREFECT_"))}  # fmt: skip
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    result = subprocess.run(
        [sys.executable, "-m", "aibatch", "run", str(tmp_path / "tickets.csv"), "--job",
         "classify", "--output", str(tmp_path / "out"), "--chunk-size", "50", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    simulator_lines = [line for line in result.stderr.splitlines()
                       if "No ANTHROPIC_API_KEY set" in line]  # fmt: skip
    assert len(simulator_lines) == 1
    assert "built-in API simulator" in simulator_lines[0]
    results = pd.read_parquet(job_dataset(tmp_path / "out"))
    assert set(results["id"]) == set(texts)

    # Later, from another process: the flow run and its chunk task runs are still there.
    history = subprocess.run(
        [sys.executable, "-c", READ_HISTORY], env=env, capture_output=True, text=True,
        timeout=400,
    )  # fmt: skip
    assert history.returncode == 0, history.stderr[-3000:]
    line = next(x for x in history.stdout.splitlines() if x.startswith("HISTORY "))
    runs = json.loads(line.removeprefix("HISTORY "))
    assert [(r["name"], r["state"]) for r in runs] == [("classify-tickets.csv", "COMPLETED")]
    chunks = [t for t in runs[0]["tasks"] if t.startswith("chunk ")]
    assert chunks == [f"chunk {i} of 3: tickets.csv" for i in (1, 2, 3)]
