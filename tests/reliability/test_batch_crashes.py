"""Batch mode under crashes and stops: a batch, once created, is billed whether or not its
run survives, so a re-run must poll the batches it finds instead of paying for new ones."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import anthropic
import orjson
import pytest

from aibatch.output import crashpoints
from aibatch.simulator.process import SimulatorProcess
from tests.conftest import sim_config
from tests.helpers import job_dataset, read_everywhere, record_figures, wait_for, write_tickets

pytestmark = pytest.mark.reliability

TICKETS = 2_000
BATCH_SIZE = 500  # four batches


def ledger(output: Path) -> list[dict[str, object]]:
    directory = output / "_aibatch" / "batches"
    if not directory.is_dir():
        return []
    entries = [orjson.loads(p.read_bytes()) for p in directory.glob("*.json")]
    return sorted(entries, key=lambda e: str(e["recorded_at"]))


def start_run(
    tmp_path: Path, sim: SimulatorProcess, prefect_api: str, crash_at: str | None = None
) -> subprocess.Popen[str]:
    env = {**os.environ, "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": sim.base_url,
           "PREFECT_API_URL": prefect_api}  # fmt: skip
    if crash_at is not None:
        env[crashpoints.ENVIRONMENT_VARIABLE] = crash_at
    return subprocess.Popen(
        [sys.executable, "-m", "aibatch", "run", str(tmp_path / "tickets.csv"), "--output",
         str(tmp_path / "out"), "--mode", "batch", "--batch-size", str(BATCH_SIZE),
         "--batch-poll-max", "1", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str], timeout_s: float = 240) -> str:
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return stderr


def assert_complete_and_paid_once(tmp_path: Path, sim: SimulatorProcess) -> dict[str, int]:
    ids = read_everywhere(job_dataset(tmp_path / "out"))
    assert len(ids) == len(set(ids)) == TICKETS
    stats = sim.stats()
    assert stats["prompts_paid_repeated"] == 0  # no ticket answered (and billed) twice
    return stats


def test_a_kill_while_creating_and_while_polling_pays_nothing_twice(
    prefect_api: str, tmp_path: Path
) -> None:
    write_tickets(tmp_path / "tickets.csv", TICKETS)
    output = tmp_path / "out"
    with SimulatorProcess(sim_config(batch_processing_seconds=30)) as sim:
        # 1. Killed just after the API created the second batch, before its id was recorded.
        first = start_run(tmp_path, sim, prefect_api, crash_at="batch:created@2")
        stderr = finish(first)
        assert first.returncode == -signal.SIGKILL, stderr[-2000:]
        states = [entry["state"] for entry in ledger(output)]
        assert states == ["submitted", "submitting"]
        assert sim.stats()["batches_created"] == 2

        # 2. The re-run finds that batch in the API's list, submits the other two, and is
        # killed while it polls.
        second = start_run(tmp_path, sim, prefect_api)
        try:
            assert wait_for(
                lambda: [e["state"] for e in ledger(output)] == ["submitted"] * 4, 120, 0.2
            )
        finally:
            second.send_signal(signal.SIGKILL)
            finish(second)
        recovered = [e for e in ledger(output) if e["note"]]
        assert len(recovered) == 1 and "recovered" in str(recovered[0]["note"])
        assert sim.stats()["batches_created"] == 4

        # 3. The last run polls the four batches to their end and collects them.
        third = start_run(tmp_path, sim, prefect_api)
        stderr = finish(third)
        assert third.returncode == 0, stderr[-3000:]
        stats = assert_complete_and_paid_once(tmp_path, sim)
        assert stats["batches_created"] == 4 and stats["batch_requests"] == TICKETS
    assert [e["state"] for e in ledger(output)] == ["collected"] * 4
    record_figures("batch-kills", {"tickets": TICKETS, "batches_created": 4,
                                   "batch_requests": stats["batch_requests"],
                                   "prompts_paid_repeated": 0})  # fmt: skip


def test_sigterm_while_polling_cancels_the_batches_and_a_rerun_finishes_them(
    prefect_api: str, tmp_path: Path
) -> None:
    write_tickets(tmp_path / "tickets.csv", TICKETS)
    output = tmp_path / "out"
    with SimulatorProcess(sim_config(batch_processing_seconds=60)) as sim:
        run = start_run(tmp_path, sim, prefect_api)
        try:
            assert wait_for(
                lambda: [e["state"] for e in ledger(output)] == ["submitted"] * 4, 120, 0.2
            )
            polls = sim.stats()["batch_polls"]
            # Into the polling: every batch asked after at least once more.
            assert wait_for(lambda: sim.stats()["batch_polls"] >= polls + 4, 60, 0.2)
        finally:
            run.send_signal(signal.SIGTERM)
            stderr = finish(run, 60)
        assert run.returncode == 128 + signal.SIGTERM, stderr[-3000:]
        assert "Cancelled batch(es)" in stderr
        client = anthropic.Anthropic(api_key="test-key", base_url=sim.base_url, max_retries=0)
        batches = list(client.messages.batches.list(limit=20))
        assert len(batches) == 4
        assert all(b.cancel_initiated_at is not None for b in batches)
        assert all(e["cancel_requested"] for e in ledger(output))

        sim.configure(batch_processing_seconds=1)
        rerun = start_run(tmp_path, sim, prefect_api)
        stderr = finish(rerun)
        assert rerun.returncode == 0, stderr[-3000:]
        stats = assert_complete_and_paid_once(tmp_path, sim)
        canceled = sum(b.request_counts.canceled for b in client.messages.batches.list(limit=20)
                       if b.id in {x.id for x in batches})  # fmt: skip
    # What the cancelled batches had not processed was submitted once more, and only that.
    assert stats["batch_requests"] == TICKETS + canceled
    record_figures("batch-sigterm", {"tickets": TICKETS, "canceled_then_resubmitted": canceled,
                                     "batch_requests": stats["batch_requests"]})  # fmt: skip
