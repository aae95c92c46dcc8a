"""Stops: a refused key and the spend cap stop the run within the requests in flight, with a
clear message and a non-zero exit, keeping everything done; once fixed, a re-run completes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from aibatch.app.local import EXIT_OK, EXIT_STOPPED, run_locally
from aibatch.flows.ticket_batch import process_tickets
from aibatch.run.parameters import RunParameters
from aibatch.simulator import SimulatorServer
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
    prefect_api: str,
    start_simulator: Callable[..., SimulatorServer],
    use_simulator: Callable[[SimulatorServer], None],
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
    server = start_simulator(latency_ms=10, **{setting: 120})
    use_simulator(server)

    assert run_locally(params, process_tickets) == EXIT_STOPPED
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
    assert run_locally(params, process_tickets) == EXIT_OK
    results = pd.read_parquet(job_dataset(tmp_path / "out"))
    assert set(results["id"]) == set(texts) and results["id"].is_unique
    assert server.stats()["prompts_paid_repeated"] == 0
