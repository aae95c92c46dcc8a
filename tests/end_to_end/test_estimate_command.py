"""`aibatch estimate` as a user runs it: its figures against a real run of the same tickets,
no generation call, and bad input refused before anything starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from aibatch.simulator import SimulatorServer
from tests.helpers import ROOT, SAMPLE, job_dataset

TOLERANCE = 0.10  # the estimate's target: within ±10% of a real run


def clean_env(tmp_path: Path) -> dict[str, str]:
    """No key (so the built-in simulator) and no Prefect server, as on a fresh machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "PREFECT_"))}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env.pop("AIBATCH_PRICES", None)
    return env


def aibatch(
    *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aibatch", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def estimate_json(*args: str, env: dict[str, str]) -> dict[str, Any]:
    result = aibatch("estimate", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    estimate: dict[str, Any] = json.loads(result.stdout)
    return estimate


def actual_tokens(output: Path) -> dict[str, int]:
    table = ds.dataset(job_dataset(output), format="parquet", partitioning="hive").to_table()
    frame = table.to_pandas()
    prompt = (
        frame["input_tokens"]
        + frame["cache_creation_input_tokens"]
        + frame["cache_read_input_tokens"]
    )
    return {
        "rows": len(frame),
        "input": int(prompt.sum()),
        "output": int(frame["output_tokens"].sum()),
    }


@pytest.mark.timeout(600)
@pytest.mark.parametrize("job", ["summarize", "classify"])
def test_the_estimate_is_within_ten_percent_of_a_real_run(
    job: str, prefect_api: str, tmp_path: Path
) -> None:
    """All 5,000 sample tickets: estimate first (no history in the output directory, so
    output tokens come from the job's default), then the real run, then compare. The run
    goes through Message Batches (the same prompts and tokens as realtime, shown by
    tests/cost/test_cost_flows.py, in a fraction of the time) on the test's Prefect server."""
    env = clean_env(tmp_path)
    env["PREFECT_API_URL"] = prefect_api
    output = tmp_path / "out"
    estimate = estimate_json(str(SAMPLE), "--job", job, "--output", str(output), env=env)
    assert not output.exists()  # an estimate writes nothing
    assert estimate["tickets"] == 5000 and estimate["sampled_tickets"] == 200
    row = estimate["models"][0]  # the job's default model comes first
    assert row["error"] is None and row["output_source"] == "default"

    run = aibatch(
        "run", str(SAMPLE), "--job", job, "--model", row["model"], "--output", str(output),
        "--mode", "batch", "--batch-poll-max", "1", "--no-progress", env=env, timeout=550,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    actual = actual_tokens(output)
    assert actual["rows"] == 5000
    estimated = {
        "input": row["input_tokens"],
        "output": row["output_tokens"],
        "total": row["total_tokens"],
    }
    actual["total"] = actual["input"] + actual["output"]
    errors = {k: (estimated[k] - actual[k]) / actual[k] for k in ("input", "output", "total")}
    print(f"{job} {row['model']}: estimated {estimated}, actual {actual}, errors {errors}")
    for kind, error in errors.items():
        assert abs(error) <= TOLERANCE, (kind, estimated[kind], actual[kind], error)

    # Now the output directory holds history: the output estimate is its mean, said so;
    # and every ticket is done for this model, so a run would send (and cost) nothing.
    again = estimate_json(
        str(SAMPLE), "--job", job, "--model", row["model"], "--output", str(output),
        "--sample", "20", env=env,
    )  # fmt: skip
    (calibrated,) = again["models"]
    assert calibrated["output_source"] == "history"
    assert calibrated["output_history_rows"] == 5000
    assert calibrated["output_tokens_per_ticket"] == pytest.approx(
        actual["output"] / 5000, abs=1e-3
    )
    assert calibrated["already_done"] == 5000 and calibrated["tickets"] == 0
    assert calibrated["input_tokens"] == calibrated["output_tokens"] == 0
    assert calibrated["cost_usd"] == {"realtime": 0.0, "batch": 0.0}


@pytest.mark.timeout(300)
def test_the_estimate_makes_no_generation_call(
    start_simulator: Callable[..., SimulatorServer], tmp_path: Path
) -> None:
    key = "sk-ant-estimate-test-key-0123456789"
    server = start_simulator(api_key=key)
    env = clean_env(tmp_path)
    env["ANTHROPIC_API_KEY"] = key
    env["ANTHROPIC_BASE_URL"] = server.base_url
    result = aibatch(
        "estimate", str(SAMPLE), "--job", "classify", "--output", str(tmp_path / "out"),
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No ANTHROPIC_API_KEY" not in result.stderr  # the key given is used
    assert key not in result.stdout + result.stderr
    assert "claude-haiku-5-5" in result.stdout and "batch $" in result.stdout
    assert "Prices: built-in table, checked" in result.stdout
    stats = server.stats()
    assert stats["requests_total"] == 0  # not one message
    assert stats["batches_created"] == 0
    # A sample per model (the four current models by default), never one call per ticket.
    assert 0 < stats["count_tokens_requests"] <= 4 * (200 + 2)


@pytest.mark.timeout(300)
def test_the_estimate_with_no_options_counts_every_current_model(tmp_path: Path) -> None:
    """`aibatch estimate` as typed in a project directory: the sample tickets, summarize,
    the default model and every current one; no request any of them would refuse. (A
    directory of its own, holding the sample: the checkout's data/output may hold done
    rows, which the estimate rightly leaves out.)"""
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    (project / "data" / "tickets.csv").symlink_to(ROOT / "data" / "tickets.csv")
    result = subprocess.run(
        [sys.executable, "-m", "aibatch", "estimate", "--json"], cwd=project,
        env=clean_env(tmp_path), capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    estimate = json.loads(result.stdout)
    assert estimate["job"] == "summarize" and estimate["tickets"] == 5000
    models = {m["model"]: m for m in estimate["models"]}
    assert set(models) == {"claude-sonnet-5-5", "claude-haiku-5-5", "claude-opus-5-5",
                           "claude-fable-5-1"}  # fmt: skip
    assert all(m["error"] is None and m["input_tokens"] > 0 for m in models.values())
    # Opus and Fable always think: their output estimate carries thinking, Sonnet's not.
    assert models["claude-opus-5-5"]["thinking"] and not models["claude-sonnet-5-5"]["thinking"]
    assert (models["claude-opus-5-5"]["output_tokens_per_ticket"]
            > models["claude-sonnet-5-5"]["output_tokens_per_ticket"] + 250)  # fmt: skip


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("content", "args", "expected"),
    [
        ("id,text\n1,The export fails.\n2,\n", [], "row 2, column 'text'"),
        ("id,body\n1,The export fails.\n", [], "column 'text'"),
        ("id,text\n1,The export fails.\n", ["--job", "translate"], "--job must be one of"),
        ("id,text\n1,The export fails.\n", ["--prices", "missing.toml"], "missing.toml"),
        ("id,text\n1,The export fails.\n", ["--job", "classify", "--labels", "x"], "two"),
    ],
)
def test_bad_input_is_refused_with_exit_2_and_nothing_written(
    content: str, args: list[str], expected: str, tmp_path: Path
) -> None:
    tickets = tmp_path / "tickets.csv"
    tickets.write_text(content, encoding="utf-8")
    output = tmp_path / "out"
    result = aibatch(
        "estimate", str(tickets), "--output", str(output), *args, env=clean_env(tmp_path)
    )
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and expected in result.stderr
    if "--prices" not in args and "--job" not in args:
        assert str(tickets) in result.stderr  # names the file
    assert result.stdout == ""
    assert "simulator" not in result.stderr  # refused before anything started
    assert not output.exists()
