"""Stops: a refused key and the spend cap stop the run within the requests in flight, with a
clear message and a non-zero exit, keeping everything done; once fixed, a re-run completes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aibatch.app.local import run_locally
from aibatch.errors import EXIT_OK, EXIT_STOPPED
from aibatch.flows.process_rows import process_rows
from aibatch.runs.parameters import RunParameters
from tests.conftest import FlowSimulator
from tests.helpers import job_dataset, read_everywhere, write_tickets

pytestmark = pytest.mark.reliability

IN_FLIGHT = 4
STOPS = {
    # cause: (simulator setting that triggers it after 120 answers, what the user reads)
    "key revoked (401)": ("revoke_key_after", "refused the key"),
    "spend cap (429)": ("spend_cap_after", "spend limit reached"),
}


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What `aibatch run` tells the user. (Not capsys: Prefect's console log handler keeps
    the stream of the test that first set it up, and capsys closes that stream.)"""
    messages: list[str] = []
    monkeypatch.setattr("aibatch.app.local.say", messages.append)
    return messages


@pytest.mark.parametrize("cause", list(STOPS))
def test_a_stop_mid_run_keeps_what_was_done_and_a_fixed_rerun_completes(
    flow_simulator: FlowSimulator,
    tmp_path: Path,
    said: list[str],
    cause: str,
) -> None:
    setting, message = STOPS[cause]
    texts = write_tickets(tmp_path / "tickets.csv", 400)
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        chunk_size=100, max_concurrency=IN_FLIGHT,
    )  # fmt: skip
    server = flow_simulator(latency_ms=10, **{setting: 120})

    assert run_locally(params, process_rows) == EXIT_STOPPED
    assert any(message in line for line in said), said
    stats = server.stats()
    refused = stats["requests_total"] - stats["by_status"]["200"]
    assert refused <= IN_FLIGHT, refused  # no new request after the first refusal came back
    saved = read_everywhere(job_dataset(tmp_path / "out"))
    assert len(saved) == stats["by_status"]["200"] >= 120  # every answer paid for is saved
    assert not (job_dataset(tmp_path / "out", "failures")).exists() or not read_everywhere(
        job_dataset(tmp_path / "out", "failures")
    ), "a stop is not the tickets' failure"

    server.configure(**{setting: None})  # the key is replaced, the cap raised
    assert run_locally(params, process_rows) == EXIT_OK
    results = pd.read_parquet(job_dataset(tmp_path / "out"))
    assert set(results["id"]) == set(texts) and results["id"].is_unique
    assert server.stats()["prompts_paid_repeated"] == 0


def test_an_outage_past_its_deadline_stops_cleanly_and_a_rerun_after_it_completes(
    flow_simulator: FlowSimulator,
    tmp_path: Path,
    said: list[str],
) -> None:
    """Every answer a 529, for longer than `--outage-deadline`: one probe at a time while
    it lasts, then exit 3 with a message naming the overload; no row is a failure, and once
    the API answers again the same command completes."""
    from aibatch.simulator import OutageWindow

    texts = write_tickets(tmp_path / "tickets.csv", 200)
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        chunk_size=50, max_concurrency=IN_FLIGHT, outage_deadline_s=3.0,
    )  # fmt: skip
    server = flow_simulator(latency_ms=10, outages=[OutageWindow(start_s=0, duration_s=3600)])

    assert run_locally(params, process_rows) == EXIT_STOPPED
    stop = [line for line in said if "overload" in line]
    assert stop and "run the same command again" in stop[0], said
    # The rows in flight, their retries until the outage was evident, then a probe or two:
    # not an attempt per row per backoff (200 rows × 6 attempts × 4 runs of each chunk).
    assert server.stats()["requests_total"] <= 20, server.stats()["requests_total"]
    failures = job_dataset(tmp_path / "out", "failures")
    assert not failures.exists() or not read_everywhere(failures), "an outage is no row's failure"

    server.configure(outages=[])  # the API is back
    assert run_locally(params, process_rows) == EXIT_OK
    results = pd.read_parquet(job_dataset(tmp_path / "out"))
    assert set(results["id"]) == set(texts) and results["id"].is_unique
