"""Fault profiles: the flow runs through each to completion with nothing lost, every ticket
in results, or in failures only where the fault injected is permanent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aibatch.flows.process_rows import process_rows
from aibatch.runs.parameters import RunParameters
from aibatch.simulator.config import StormWindow
from tests.conftest import FlowSimulator
from tests.helpers import (
    job_dataset,
    read_everywhere,
    record_figures,
    summary_belongs_to,
    write_tickets,
)

pytestmark = pytest.mark.reliability

TIMEOUT_S = 1.0  # the run's request timeout; "slow" answers take longer
PROFILES: dict[str, dict[str, Any]] = {
    "429 storm (30 s)": {"storms": [StormWindow(start_s=0, duration_s=30)]},
    "20% 529": {"p529": 0.20},
    "5% 500": {"p500": 0.05},
    "2% dropped connections": {"p_drop": 0.02},
    "5% slower than the timeout": {"p_slow": 0.05, "slow_seconds": 3 * TIMEOUT_S},
    "mixed, with over-long tickets": {
        "p529": 0.08, "p500": 0.03, "p_drop": 0.02, "p_slow": 0.02,
        "slow_seconds": 3 * TIMEOUT_S, "rpm": 3_000, "burst_seconds": 1,
    },
}  # fmt: skip
LONG_TICKETS = {"mixed, with over-long tickets": 5}  # over the context window: a 400 each


@pytest.mark.parametrize("profile", list(PROFILES))
def test_every_fault_profile_runs_to_completion_losing_nothing(
    flow_simulator: FlowSimulator,
    tmp_path: Path,
    long_variant: bool,
    profile: str,
) -> None:
    count = 2_000 if long_variant else 200
    long_ids = LONG_TICKETS.get(profile, 0)
    texts = write_tickets(tmp_path / "tickets.csv", count, long_ids=long_ids)
    server = flow_simulator(
        latency_ms=20, latency_sigma=0.3, context_window=2_000, seed=6, **PROFILES[profile]
    )
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        chunk_size=100, request_timeout_s=TIMEOUT_S,
    )  # fmt: skip

    summary = asyncio.run(process_rows(params))

    normal = {i for i in texts if not i.startswith("LONG-")}
    ids = read_everywhere(job_dataset(tmp_path / "out"))
    assert len(ids) == len(set(ids)) and set(ids) == normal
    results = pd.read_parquet(job_dataset(tmp_path / "out"))
    mixed_up = [i for i, s in zip(results["id"], results["result"], strict=True)
                if not summary_belongs_to(s, texts[i])]  # fmt: skip
    assert mixed_up == []
    failed = sorted(read_everywhere(job_dataset(tmp_path / "out", "failures")))
    assert failed == sorted(set(texts) - normal)  # only the permanent ones
    stats = server.stats()
    faults = {k: v for k, v in stats["by_status"].items() if k != "200"}
    assert summary["retries"] > 0, "the profile injected nothing"
    # A request that timed out may still be answered (and paid) on the server; nothing else
    # is ever paid for twice.
    assert stats["prompts_paid_repeated"] <= summary["connection_errors"]
    record_figures(
        "faults-" + "".join(c if c.isalnum() else "-" for c in profile).strip("-"),
        {"tickets": len(texts), "ok": summary["ok"], "failed": summary["failed"],
         "retries": summary["retries"], "http_requests": summary["http_requests"],
         "faults_by_status": faults, "dropped": stats["dropped"],
         "paid_twice": stats["prompts_paid_repeated"]},
    )  # fmt: skip
