"""kill -9 at several instants (mid-call, mid-write, at random); nothing lost or doubled."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pytest

from aibatch.simulator import SimulatorConfig
from aibatch.simulator.process import SimulatorProcess
from tests.flows.test_ticket_batch import write_tickets

MAX_CONCURRENCY = 8


def read_everywhere(results: Path) -> list[str]:
    """Ids in results as pandas, pyarrow (via pandas), duckdb and polars read them."""
    if not any(results.rglob("*.parquet")):
        return []
    by_pandas = pd.read_parquet(results)["id"].tolist()
    pattern = str(results / "**" / "*.parquet")
    relation = duckdb.sql(f"select id from read_parquet('{pattern}', hive_partitioning = true)")
    assert relation is not None
    by_duckdb = [row[0] for row in relation.fetchall()]
    by_polars = pl.read_parquet(pattern, hive_partitioning=True)["id"].to_list()
    assert sorted(by_pandas) == sorted(by_duckdb) == sorted(by_polars)
    return by_pandas


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return False


def journaled_since(output: Path, before: set[str]) -> bool:
    """A journal segment this run wrote (earlier runs' segments may still be there)."""
    journal = output / "_aibatch" / "journal"
    return journal.is_dir() and any(
        p.name not in before and p.stat().st_size > 0 for p in journal.glob("*.jsonl")
    )


def segments(output: Path) -> set[str]:
    journal = output / "_aibatch" / "journal"
    return {p.name for p in journal.glob("*.jsonl")} if journal.is_dir() else set()


def staging_busy(output: Path) -> bool:
    staging = output / "_aibatch" / "staging"
    return staging.is_dir() and any(staging.rglob("*.parquet"))


@pytest.fixture
def release_leaked_slots(prefect_api: str) -> Iterator[None]:
    """Killed runs keep their chunk slots until the leases expire; later tests on this
    server must not wait for that, so the limit is dropped (the next run recreates it)."""
    yield
    from prefect.client.orchestration import get_client

    from aibatch import policy

    async def drop() -> None:
        async with get_client() as client:
            await client.delete_global_concurrency_limit_by_name(policy.CHUNK_LIMIT_NAME)

    asyncio.run(drop())


@pytest.mark.timeout(900)
@pytest.mark.usefixtures("release_leaked_slots")
def test_kill_9_anywhere_loses_nothing_and_pays_little_twice(
    prefect_api: str, tmp_path: Path
) -> None:
    texts = write_tickets(tmp_path / "tickets.csv", 2_000)
    output = tmp_path / "out"
    rng = random.Random(2026)
    with SimulatorProcess(SimulatorConfig(latency_ms=40, latency_sigma=0.3)) as sim:
        env = {
            **os.environ,
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": sim.base_url,
            "PREFECT_API_URL": prefect_api,
            "AIBATCH_COMMIT_EVERY_ROWS": "40",  # many commits, so kills land in writes
        }
        command = [
            sys.executable, "-m", "aibatch", "run", str(tmp_path / "tickets.csv"),
            "--output", str(output), "--chunk-size", "100",
            "--max-concurrency", str(MAX_CONCURRENCY), "--no-progress",
            # A killed run keeps its chunk slots until their Prefect leases expire (60 s);
            # enough slots that the next run need not wait for that.
            "--chunk-slots", "100",
        ]  # fmt: skip
        kill_points = ["mid-call", "mid-write", "random", "mid-write", "random"]
        kills = 0
        for point in kill_points:
            before = segments(output)
            process = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                started = wait_for(partial(journaled_since, output, before), 240, 0.01)
                assert started, "the run never started"
                if point == "mid-write":
                    wait_for(lambda: staging_busy(output), 30)
                elif point == "random":
                    time.sleep(rng.uniform(0.2, 3.0))
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait()
            kills += 1
            ids = read_everywhere(output / "results")
            assert len(ids) == len(set(ids)), f"an id twice after the {point} kill"
            assert set(ids) <= set(texts)
        assert 0 < len(ids) < len(texts), "the kills should interrupt a run in progress"

        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert final.returncode == 0, final.stderr[-3000:]
        ids = read_everywhere(output / "results")
        assert sorted(ids) == sorted(texts)
        repaid = sim.stats()["prompts_paid_repeated"]
        assert repaid <= kills * MAX_CONCURRENCY, repaid
    assert not any((output / "results").rglob("*.tmp"))
    assert not staging_busy(output)
