"""Crash loop: `aibatch run` SIGKILLed again and again, at random instants and inside the
narrow windows of a commit, re-run after every kill. Nothing is lost, nothing doubled, and
every reader can read the output after every kill.

CI runs 10 kills; `--long` runs 50 (README, "Reliability suite").
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from aibatch.output import crashpoints
from aibatch.simulator.process import SimulatorProcess
from tests.conftest import sim_config
from tests.helpers import (
    job_dataset,
    job_state,
    read_everywhere,
    record_figures,
    wait_for,
    write_tickets,
)

pytestmark = pytest.mark.reliability

MAX_CONCURRENCY = 4
LONG_TICKETS = 10  # permanent failures (over the context window), so failures/ is written too
EXTERNAL_KILLS = ["mid-call", "mid-write", "random"]  # SIGKILL from the test
# SIGKILL at a named point of a commit (batch mode has its own: test_batch_crashes.py)
SELF_KILLS = [f"at {point}" for point in sorted(crashpoints.COMMIT_POINTS)]


def kill_plan(kills: int, rng: random.Random) -> list[str]:
    """Every kind of kill at least once (when there are enough kills), the rest at random."""
    kinds = EXTERNAL_KILLS + SELF_KILLS
    plan = kinds[:kills] + [rng.choice(kinds) for _ in range(kills - len(kinds))]
    rng.shuffle(plan)
    return plan


def journaled_since(output: Path, before: set[str]) -> bool:
    """A journal segment this run wrote (earlier runs' segments may still be there)."""
    journal = job_state(output) / "journal"
    return journal.is_dir() and any(
        p.name not in before and p.stat().st_size > 0 for p in journal.glob("*.jsonl")
    )


def segments(output: Path) -> set[str]:
    journal = job_state(output) / "journal"
    return {p.name for p in journal.glob("*.jsonl")} if journal.is_dir() else set()


def staging_busy(output: Path) -> bool:
    staging = job_state(output) / "staging"
    return staging.is_dir() and any(staging.rglob("*.parquet"))


def check_invariants(output: Path, ticket_ids: set[str], long_ids: set[str]) -> int:
    """What must hold after any kill; returns the rows checked."""
    results = job_dataset(output)
    ids = read_everywhere(results)
    assert len(ids) == len(set(ids)), "an id twice in results"
    assert set(ids) <= ticket_ids - long_ids, "an id in results that is not an input ticket"
    failures = read_everywhere(job_dataset(output, "failures"))
    if failures:
        table = ds.dataset(job_dataset(output, "failures"), partitioning="hive").to_table()
        keys = list(zip(table["id"].to_pylist(), table["run_id"].to_pylist(), strict=True))
        assert len(keys) == len(set(keys)), "a run's failure recorded twice"
        assert set(failures) <= long_ids
    # Nothing but whole Parquet files inside.
    for root in (results, job_dataset(output, "failures")):
        strays = [p for p in root.rglob("*") if p.is_file() and p.suffix != ".parquet"]
        assert not strays, strays
    return len(ids) + len(failures)


@pytest.mark.timeout(3600)
@pytest.mark.usefixtures("release_leaked_slots")
def test_kill_9_again_and_again_loses_nothing_and_pays_little_twice(
    prefect_api: str, tmp_path: Path, long_variant: bool
) -> None:
    kills_planned, ticket_count = (50, 4_000) if long_variant else (10, 2_000)
    texts = write_tickets(tmp_path / "tickets.csv", ticket_count, long_ids=LONG_TICKETS)
    ticket_ids = set(texts)
    long_ids = {i for i in ticket_ids if i.startswith("LONG-")}
    output = tmp_path / "out"
    rng = random.Random(2026)
    config = sim_config(latency_ms=100, latency_sigma=0.3, context_window=2_000)
    with SimulatorProcess(config) as sim:
        env = {
            **os.environ,
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": sim.base_url,
            "PREFECT_API_URL": prefect_api,
            "AIBATCH_COMMIT_EVERY_ROWS": "25",  # many commits, so kills land in them
        }
        command = [
            sys.executable, "-m", "aibatch", "run", str(tmp_path / "tickets.csv"),
            "--output", str(output), "--chunk-size", "100",
            "--max-concurrency", str(MAX_CONCURRENCY), "--no-progress",
            # A killed run's chunk slots stay held until their leases expire (60 s), and
            # only then can the next run free them: enough slots that it need not wait.
            "--chunk-slots", "100",
        ]  # fmt: skip
        rows_checked = 0
        kills: dict[str, int] = {}
        for kind in kill_plan(kills_planned, rng):
            before = segments(output)
            run_env = dict(env)
            if kind.startswith("at "):
                run_env[crashpoints.ENVIRONMENT_VARIABLE] = f"{kind[3:]}@{rng.randint(1, 3)}"
            process = subprocess.Popen(
                command, env=run_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            try:
                if kind.startswith("at "):
                    process.wait(timeout=300)
                else:
                    started = wait_for(partial(journaled_since, output, before), 240, 0.005)
                    assert started, "the run never started"
                    if kind == "mid-write":
                        wait_for(lambda: staging_busy(output), 60, 0.0005)
                    elif kind == "random":
                        time.sleep(rng.uniform(0.1, 1.5))
                    process.send_signal(signal.SIGKILL)
            finally:
                if process.poll() is None:
                    process.kill()
                _, stderr = process.communicate()
            assert process.returncode == -signal.SIGKILL, (
                f"{kind}: the run was not killed (exit {process.returncode}): the input is "
                f"too small for {kills_planned} kills?\n{stderr.decode()[-2000:]}"
            )
            kills[kind] = kills.get(kind, 0) + 1
            rows_checked += check_invariants(output, ticket_ids, long_ids)
        done_before_final = len(read_everywhere(job_dataset(output)))
        assert done_before_final < len(ticket_ids) - len(long_ids), "every kill came too late"

        sim.configure(latency_ms=5, latency_sigma=0.0)  # the last run need not be slow
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert final.returncode == 0, final.stderr[-3000:]
        rows_checked += check_invariants(output, ticket_ids, long_ids)
        assert sorted(read_everywhere(job_dataset(output))) == sorted(ticket_ids - long_ids)
        assert set(read_everywhere(job_dataset(output, "failures"))) == long_ids
        repaid = sim.stats()["prompts_paid_repeated"]
        survived = sum(kills.values())
        # At most what was in flight at each kill is paid for again.
        assert repaid <= survived * MAX_CONCURRENCY, repaid
    assert not staging_busy(output)
    record_figures(
        "crash-loop" + ("-long" if long_variant else ""),
        {"kills_survived": survived, "kills_by_kind": kills, "tickets": len(ticket_ids),
         "rows_checked": rows_checked, "tickets_repaid": repaid,
         "done_before_final_run": done_before_final},
    )  # fmt: skip


@pytest.mark.usefixtures("release_leaked_slots")
def test_sigterm_stops_the_run_at_once_and_publishes_every_answer(
    prefect_api: str, tmp_path: Path
) -> None:
    """A process manager's SIGTERM (or Ctrl-C): the chunks stop, what was answered is
    published, the command exits 143 saying so. (Prefect turns the signal into an exception
    in whichever chunk runs; the flow must not treat it as one chunk's failure.)"""
    texts = write_tickets(tmp_path / "tickets.csv", 2_000)
    output = tmp_path / "out"
    with SimulatorProcess(sim_config(latency_ms=100)) as sim:
        env = {**os.environ, "ANTHROPIC_API_KEY": "test-key", "ANTHROPIC_BASE_URL": sim.base_url,
               "PREFECT_API_URL": prefect_api, "AIBATCH_COMMIT_EVERY_ROWS": "25"}  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "aibatch", "run", str(tmp_path / "tickets.csv"), "--output",
             str(output), "--max-concurrency", str(MAX_CONCURRENCY), "--no-progress",
             "--chunk-size", "100", "--chunk-slots", "100"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert wait_for(lambda: staging_busy(output) or journaled_since(output, set()), 240)
            # Well into the run (a few commits behind it), yet far from its end.
            assert wait_for(lambda: sim.stats()["by_status"].get("200", 0) >= 300, 120, 0.05)
            process.send_signal(signal.SIGTERM)
            _, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        answered = sim.stats()["by_status"]["200"]
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "interrupted (SIGTERM): every answer received is saved" in stderr
    ids = read_everywhere(job_dataset(output))
    assert len(ids) == len(set(ids)) and set(ids) <= set(texts) and 0 < len(ids) < len(texts)
    # Published, not left in the journal; only requests cut off in flight are lost.
    journal = job_state(output) / "journal"
    left = {p.name: p.read_text().count("\n") for p in journal.glob("*.jsonl") if p.stat().st_size}
    assert not left, (left, len(ids), stderr[-3000:])
    assert answered - MAX_CONCURRENCY <= len(ids) <= answered
