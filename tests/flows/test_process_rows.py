"""The whole flow on a real Prefect server and the simulator: faults, resume, stops, limits."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aibatch.flows.process_rows import process_rows
from aibatch.runs.orchestration import (
    CHUNK_LIMIT_NAME,
    SHARED_BATCH_S,
    SHARED_INPUT_TOKENS_LIMIT_NAME,
    SHARED_OUTPUT_TOKENS_LIMIT_NAME,
    SHARED_RATE_LIMIT_NAME,
    SLOTS_PER_REQUEST,
    SLOTS_PER_TOKEN,
)
from aibatch.runs.parameters import RunParameters
from aibatch.simulator import SimulatorServer
from tests.conftest import FlowSimulator
from tests.helpers import job_dataset, summary_belongs_to, write_tickets

StartSimulator = Callable[..., SimulatorServer]


def test_faults_and_a_tight_limit_lose_nothing_and_mix_nothing_up(
    flow_simulator: FlowSimulator,
    tmp_path: Path,
) -> None:
    server = flow_simulator(
        p529=0.05, p500=0.02, p_drop=0.01, rpm=3_000, burst_seconds=1, context_window=2_000,
        seed=5,
    )  # fmt: skip
    texts = write_tickets(tmp_path / "tickets.csv", 1_000, long_ids=5)
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        chunk_size=100, max_concurrency=24,
    )  # fmt: skip
    summary = asyncio.run(process_rows(params))

    results = pd.read_parquet(job_dataset(tmp_path / "out"))
    normal = {i for i in texts if not i.startswith("LONG-")}
    assert len(results) == len(normal) == 1_000
    assert set(results["id"]) == normal
    assert results["id"].is_unique
    wrong = [i for i, s in zip(results["id"], results["result"], strict=True)
             if not summary_belongs_to(s, texts[i])]  # fmt: skip
    assert wrong == []
    failures = pd.read_parquet(job_dataset(tmp_path / "out", "failures"))
    assert sorted(failures["id"]) == [f"LONG-{i}" for i in range(5)]
    assert set(failures["status_code"]) == {400}

    stats = server.stats()
    assert stats["by_status"]["529"] > 0 and stats["by_status"]["500"] > 0
    assert stats["dropped"] > 0
    # The pacer learns the 50/s limit from the headers: no second goes far past it.
    assert max(stats["ok_per_second"].values()) <= 50 + 50  # rate + the server's burst
    assert stats["by_status"].get("429", 0) <= 0.02 * stats["requests_total"]
    assert stats["prompts_paid_repeated"] == 0
    assert summary["ok"] == 1_000 and summary["failed"] == 5
    assert summary["http_529"] > 0 and summary["retries"] > 0
    # carried columns came along, each with its own ticket's values
    given = pd.read_csv(tmp_path / "tickets.csv", dtype=str).set_index("id")
    got = results.set_index("id")
    for column in ("customer_tier", "channel", "product", "created_at"):
        assert (got[column] == given.loc[got.index, column]).all(), column

    # A re-run skips every result and sends only the failures again (a later run retries
    # them); they fail again, and a run whose every ticket failed says so and fails.
    before = server.stats()["requests_total"]
    with pytest.raises(RuntimeError, match=r"every row sent failed \(5 of 5: BadRequestError"):
        asyncio.run(process_rows(params))
    assert server.stats()["by_status"]["400"] == 10  # the five, once in each run
    assert server.stats()["requests_total"] - before == 5
    assert server.stats()["prompts_paid_repeated"] == 0


def test_chunks_show_in_prefect_with_a_checked_limit_and_artifacts(
    flow_simulator: FlowSimulator,
    tmp_path: Path,
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    server = flow_simulator()
    write_tickets(tmp_path / "tickets.csv", 120)
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        job="classify", chunk_size=50, chunk_slots=2,
    )  # fmt: skip

    async def run_for_state() -> Any:
        return await process_rows(params, return_state=True)

    state = asyncio.run(run_for_state())
    assert state.is_completed()

    async def read() -> tuple[list[str], int, list[str]]:
        async with get_client() as client:
            flow_run_id = state.state_details.flow_run_id
            task_runs = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            limit = await client.read_global_concurrency_limit_by_name(CHUNK_LIMIT_NAME)
            artifacts = await client.read_artifacts()
            return [t.name for t in task_runs], limit.limit, [a.key or "" for a in artifacts]

    names, slots, keys = asyncio.run(read())
    chunk_runs = sorted(n for n in names if n.startswith("chunk "))
    assert chunk_runs == [f"chunk {i} of 3: tickets.csv" for i in (1, 2, 3)]
    assert slots == 2
    assert "aibatch-classify-tickets-csv-progress" in keys
    assert "aibatch-classify-tickets-csv-summary" in keys
    labels = set(pd.read_parquet(job_dataset(tmp_path / "out"))["result"])
    assert labels <= {"billing", "technical", "feature request", "other"}

    # Everything is done: the flow again (as a deployment runs it) makes zero API calls, and
    # is still a flow run of its own on the server, completed, with its summary artifact.
    before = server.stats()["requests_total"]
    nothing = asyncio.run(run_for_state())
    assert nothing.is_completed()
    again = nothing.result()
    assert again["already_done"] == 120 and again["rows"] == 0
    assert server.stats()["requests_total"] == before
    assert nothing.state_details.flow_run_id != state.state_details.flow_run_id


def test_chunk_slots_no_live_run_holds_are_freed_so_the_next_run_does_not_wait_forever(
    prefect_api: str, start_simulator: StartSimulator, tmp_path: Path
) -> None:
    """A run killed with kill -9 on Prefect's local server (or any server restarted since)
    leaves its chunk slots taken in the database with no lease that could ever give them
    back: every slot of the limit, here. The next run must free them and complete."""
    from prefect.client.orchestration import get_client

    async def leak_every_slot() -> None:
        async with get_client() as client:
            await client.upsert_global_concurrency_limit_by_name(CHUNK_LIMIT_NAME, 2)
            # Taken without a lease, as the database holds them once the leases are lost.
            await client.increment_concurrency_slots(
                [CHUNK_LIMIT_NAME], slots=2, mode="concurrency"
            )

    async def active_slots() -> int:
        async with get_client() as client:
            limit = await client.read_global_concurrency_limit_by_name(CHUNK_LIMIT_NAME)
            return limit.active_slots

    asyncio.run(leak_every_slot())
    assert asyncio.run(active_slots()) == 2
    server = start_simulator()
    texts = write_tickets(tmp_path / "tickets.csv", 120)
    env = {**os.environ, "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": server.base_url,
           "PREFECT_API_URL": prefect_api}  # fmt: skip
    # In a child process: a run waiting for slots ignores cancellation, so only a kill on
    # timeout turns "waits forever" into a failure.
    result = subprocess.run(
        [sys.executable, "-m", "aibatch", "run", str(tmp_path / "tickets.csv"), "--job",
         "classify", "--output", str(tmp_path / "out"), "--chunk-size", "50",
         "--chunk-slots", "2", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Freed 2 slot(s) of 'tag:aibatch-chunks' that no live chunk held" in result.stderr
    assert set(pd.read_parquet(job_dataset(tmp_path / "out"))["id"]) == set(texts)
    assert asyncio.run(active_slots()) == 0  # and the run gave back what it took


@pytest.fixture
def drop_shared_limit(prefect_api: str) -> Iterator[None]:
    """The shared rate limits live on the session's server: remove those there after the
    test, or every later flow test would be paced by them."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    yield

    async def drop() -> None:
        async with get_client() as client:
            for name in (SHARED_RATE_LIMIT_NAME, SHARED_INPUT_TOKENS_LIMIT_NAME,
                         SHARED_OUTPUT_TOKENS_LIMIT_NAME):  # fmt: skip
                with contextlib.suppress(ObjectNotFound):
                    await client.delete_global_concurrency_limit_by_name(name)

    asyncio.run(drop())


def test_a_shared_rate_limit_on_the_server_paces_the_run(
    flow_simulator: FlowSimulator,
    drop_shared_limit: None,
    tmp_path: Path,
) -> None:
    """--shared-rpm creates the Prefect rate limit every run on the server draws from; the
    run then sends no faster than it, though the API itself would take far more."""
    from prefect.client.orchestration import get_client

    server = flow_simulator(latency_ms=20)  # no limit at the API: alone, ~100/s
    write_tickets(tmp_path / "tickets.csv", 120)
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        job="classify", chunk_size=60, shared_rpm=600,
    )  # fmt: skip
    summary = asyncio.run(process_rows(params))
    assert summary["ok"] == 120

    async def read_limit() -> Any:
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(SHARED_RATE_LIMIT_NAME)

    limit = asyncio.run(read_limit())
    assert limit.slot_decay_per_second == 10 * SLOTS_PER_REQUEST  # 600/min
    burst = limit.limit / SLOTS_PER_REQUEST  # 1 s of the rate
    per_second = {int(s): n for s, n in server.stats()["ok_per_second"].items()}
    seconds = sorted(per_second)
    counts = [per_second.get(s, 0) for s in range(seconds[0], seconds[-1] + 1)]
    batch = round(10 * SHARED_BATCH_S)  # requests fetched ahead, spent later
    for width in (1, 3, 5):
        busiest = max(sum(counts[i : i + width]) for i in range(max(1, len(counts) - width + 1)))
        assert busiest <= 10 * width + burst + batch, (width, counts)
    # 120 requests at 10/s after a burst of at most burst + batch: ten seconds or more.
    assert seconds[-1] - seconds[0] >= (120 - burst - batch) / 10 - 1, counts


def test_shared_token_limits_on_the_server_pace_the_run(
    flow_simulator: FlowSimulator,
    drop_shared_limit: None,
    tmp_path: Path,
) -> None:
    """--shared-itpm and --shared-otpm create the Prefect rate limits of input and output
    tokens every run on the server draws from; a run's input tokens then go no faster than
    the input limit grants, though the API itself would take far more."""
    from prefect.client.orchestration import get_client

    server = flow_simulator(latency_ms=20)  # no limit at the API: alone, ~100 requests/s
    write_tickets(tmp_path / "tickets.csv", 120)
    itpm, otpm = 180_000, 600_000  # 3,000 input tokens/s: about 12 classify requests
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        job="classify", chunk_size=60, shared_itpm=itpm, shared_otpm=otpm,
    )  # fmt: skip
    summary = asyncio.run(process_rows(params))
    assert summary["ok"] == 120

    async def read_limits() -> list[Any]:
        async with get_client() as client:
            names = (SHARED_INPUT_TOKENS_LIMIT_NAME, SHARED_OUTPUT_TOKENS_LIMIT_NAME)
            return [await client.read_global_concurrency_limit_by_name(n) for n in names]

    input_limit, output_limit = asyncio.run(read_limits())
    assert input_limit.slot_decay_per_second == itpm / 60 * SLOTS_PER_TOKEN
    assert output_limit.slot_decay_per_second == otpm / 60 * SLOTS_PER_TOKEN
    stats = server.stats()
    counted = stats["input_tokens"] + stats["cache_creation_input_tokens"]
    burst = input_limit.limit / SLOTS_PER_TOKEN  # 1 s of the rate
    batch = itpm / 60 * SHARED_BATCH_S  # tokens fetched ahead, spent later
    seconds = sorted(int(s) for s in stats["ok_per_second"])
    # What the API counted, after a burst of at most burst + batch, at 3,000 a second.
    assert seconds[-1] - seconds[0] >= (counted - burst - batch) / (itpm / 60) - 1, seconds
