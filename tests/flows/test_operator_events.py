"""Prefect events for what an operator acts on: a run stopped by its budget sends
`aibatch.run.budget-reached` about its job, related to its flow run; automations match it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from aibatch.errors import RunStopped
from aibatch.flows.process_rows import process_rows
from aibatch.runs.orchestration import operator_events
from aibatch.runs.parameters import RunParameters
from tests.conftest import FlowSimulator
from tests.helpers import write_tickets


def test_a_budget_stop_and_refusals_are_events_about_the_job(
    flow_simulator: FlowSimulator, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flow_simulator(p_refusal=0.2, seed=2)
    write_tickets(tmp_path / "tickets.csv", 300)
    params = RunParameters(input_path=str(tmp_path / "tickets.csv"), job="classify",
                           output_dir=str(tmp_path / "out"), budget_usd=0.004)  # fmt: skip
    with pytest.raises(RunStopped, match="budget"):
        asyncio.run(process_rows(params))

    async def events() -> list[Any]:
        async with get_client() as client:
            page = await client.read_events(EventFilter(
                event=EventNameFilter(prefix=["aibatch.run."]),
                resource=EventResourceFilter(id=["aibatch.job.classify"]),
            ), limit=50)  # fmt: skip
            return [e for e in page.events if e.payload.get("job") == "classify"]

    deadline = time.monotonic() + 30
    seen: list[Any] = []
    while time.monotonic() < deadline:  # events are written by the server's own worker
        seen = asyncio.run(events())
        if {"aibatch.run.budget-reached", "aibatch.run.refusals"} <= {e.event for e in seen}:
            break
        time.sleep(0.5)
    names = {e.event for e in seen}
    assert {"aibatch.run.budget-reached", "aibatch.run.refusals"} <= names, names
    budget = next(e for e in seen if e.event == "aibatch.run.budget-reached")
    assert budget.resource["aibatch.output"] == str(tmp_path / "out")
    assert any(r.role == "flow-run" for r in budget.related)
    assert budget.payload["refusals"] > 0


def test_which_events_a_run_sends() -> None:
    summary = {"job": "j", "ok": 0, "failed": 5, "refusals": 0}
    assert [n for n, _ in operator_events(summary, None, 0)] == ["aibatch.run.all-failed"]
    quiet = {"job": "j", "ok": 5, "failed": 0, "refusals": 0}
    assert operator_events(quiet, None, 0) == []
    assert [n for n, _ in operator_events(quiet, "outage", 2)] == [
        "aibatch.run.outage",
        "aibatch.run.storm",
    ]
