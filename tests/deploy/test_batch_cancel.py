"""Cancelling a batch-mode deployment run in Prefect cancels its Message Batches: nobody
would collect them otherwise until a re-run, and the API bills what it processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import orjson
import pytest

from aibatch.simulator.process import SimulatorProcess
from aibatch.testing.prefect_server import PrefectServerProcess
from tests.deploy.conftest import FAKE_KEY, wait_for_final_state
from tests.helpers import write_tickets

pytestmark = pytest.mark.timeout(600)


def submitted(output: Path) -> list[str]:
    ledger = output / "_aibatch" / "batches"
    if not ledger.is_dir():
        return []
    entries = [orjson.loads(p.read_bytes()) for p in ledger.glob("*.json")]
    return [str(e["batch_id"]) for e in entries if e["state"] == "submitted"]


def test_cancelling_the_flow_run_cancels_its_batches(
    prefect_server: PrefectServerProcess,
    simulator: SimulatorProcess,
    start_worker: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import PrefectClient
    from prefect.deployments import arun_deployment
    from prefect.states import Cancelling

    write_tickets(tmp_path / "tickets.csv", 300)
    output = tmp_path / "out"
    start_worker("worker-c")
    simulator.configure(batch_processing_seconds=600)  # still running when we cancel
    params: dict[str, Any] = {
        "input_path": str(tmp_path / "tickets.csv"), "output_dir": str(output),
        "mode": "batch", "batch_max_requests": 100, "batch_poll_max_s": 1,
    }  # fmt: skip

    async def scenario() -> Any:
        async with PrefectClient(prefect_server.api_url) as client:
            run = await arun_deployment(
                "aibatch-rows/batch-summaries", client=client,
                parameters={"params": params}, timeout=0, as_subflow=False,
            )  # fmt: skip
            deadline = time.monotonic() + 300
            while len(submitted(output)) < 3:
                assert time.monotonic() < deadline, "the batches were never submitted"
                await asyncio.sleep(0.5)
            await client.set_flow_run_state(run.id, Cancelling(), force=True)
            return await wait_for_final_state(client, run.id, timeout_s=240)

    try:
        final = asyncio.run(scenario())
    finally:
        simulator.configure(batch_processing_seconds=2)
    assert final.state.is_cancelled(), final.state
    api = anthropic.Anthropic(api_key=FAKE_KEY, base_url=simulator.base_url, max_retries=0)
    ours = set(submitted(output))
    assert len(ours) == 3
    batches = {b.id: b for b in api.messages.batches.list(limit=100) if b.id in ours}
    assert len(batches) == 3
    assert all(b.cancel_initiated_at is not None for b in batches.values())
