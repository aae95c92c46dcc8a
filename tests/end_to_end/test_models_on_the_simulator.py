"""Each current model, asked as its rules require, on a simulator that enforces the API's
per-model rules: both built-in jobs succeed in realtime and in batch mode, refusals and
cut-short answers are failures (never results), and a run where everything failed says so."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from aibatch.app.local import run_locally
from aibatch.errors import EXIT_FAILED
from aibatch.flows.process_rows import process_rows
from aibatch.jobs.spec import DEFAULT_LABELS
from aibatch.runs.parameters import RunParameters
from aibatch.simulator import SimulatorServer
from tests.conftest import FlowSimulator
from tests.helpers import summary_belongs_to, write_tickets

StartSimulator = Callable[..., SimulatorServer]
UseSimulator = Callable[[SimulatorServer], None]
MODELS = [
    "claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-4-5",
    "claude-sonnet-4-6",
]  # fmt: skip


def params(tmp_path: Path, **options: object) -> RunParameters:
    return RunParameters.model_validate(
        {"input_path": str(tmp_path / "tickets.csv"), "output_dir": str(tmp_path / "out"),
         "chunk_size": 50, "batch_poll_max_s": 0.2, **options}
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["realtime", "batch"])
@pytest.mark.parametrize("model", MODELS)
def test_both_jobs_succeed_on_each_model_asked_as_its_rules_require(
    model: str, mode: str, flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator(batch_processing_seconds=0.2, seed=3)
    texts = write_tickets(tmp_path / "tickets.csv", 30)
    for job in ("summarize", "classify"):
        summary = asyncio.run(process_rows(params(tmp_path, model=model, job=job, mode=mode)))
        assert summary["ok"] == 30 and summary["failed"] == 0, summary
    stats = server.stats()
    assert set(stats["by_status"]) <= {"200"}  # not one request the model refuses
    results = pd.concat(
        [pd.read_parquet(tmp_path / "out" / job / "results") for job in ("summarize", "classify")]
    )
    assert (results["model"] == model).all() and (results["mode"] == mode).all()
    labels = results[results["job"] == "classify"]
    assert sorted(labels["id"]) == sorted(texts) and set(labels["result"]) <= set(DEFAULT_LABELS)
    summaries = results[results["job"] == "summarize"]
    assert sorted(summaries["id"]) == sorted(texts)
    assert all(
        summary_belongs_to(s, texts[i])
        for i, s in zip(summaries["id"], summaries["result"], strict=True)
    )


def test_refused_tickets_are_failures_never_results_and_are_not_asked_again(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator(p_refusal=0.05, seed=11)
    texts = write_tickets(tmp_path / "tickets.csv", 300)
    run = params(tmp_path, model="claude-sonnet-5-5")
    summary = asyncio.run(process_rows(run))

    results = pd.read_parquet(tmp_path / "out" / "summarize" / "results")
    failures = pd.read_parquet(tmp_path / "out" / "summarize" / "failures")
    refused = set(failures["id"])
    assert 5 <= len(refused) <= 30  # about 5% of 300
    assert set(failures["error_type"]) == {"refusal"}
    assert set(failures["stop_reason"]) == {"refusal"}
    assert failures["message"].str.contains(r"refused \(\w+\)").all()  # with its category
    assert refused.isdisjoint(results["id"])  # no partial text stored as a result
    assert refused | set(results["id"]) == set(texts) and results["id"].is_unique
    # Each refusal was asked once: refusing follows the content, asking again pays again.
    assert server.stats()["refusals"] == len(refused) == summary["refusals"]
    assert (failures["attempts"] == 1).all()

    before = server.stats()["requests_total"]
    again = asyncio.run(process_rows(run))
    assert again["rows"] == 0 and server.stats()["requests_total"] == before


def test_a_budget_too_small_for_thinking_is_asked_again_with_more_room(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    # Opus 5.5 always thinks; here about 8x as long as usual at effort low, so that half
    # the answers do not fit in the room aibatch plans for thinking, and all fit in twice it.
    flow_simulator(thinking_scale=8.0, seed=2)
    texts = write_tickets(tmp_path / "tickets.csv", 60)
    summary = asyncio.run(process_rows(params(tmp_path, model="claude-opus-5-5")))

    assert summary["ok"] == 60 and summary["failed"] == 0
    assert summary["truncated_retries"] > 0
    assert summary["http_requests"] == 60 + summary["truncated_retries"]
    results = pd.read_parquet(tmp_path / "out" / "summarize" / "results")
    assert (results["attempts"] > 1).sum() > 0
    # Every stored summary is whole (sentences of its own ticket), none cut mid-way.
    assert all(summary_belongs_to(s, texts[i])
               for i, s in zip(results["id"], results["result"], strict=True))  # fmt: skip
    # Thinking is billed as output: the output tokens are mostly thinking.
    assert results["output_tokens"].mean() > 500


def test_answers_that_never_fit_are_truncated_failures_and_the_run_exits_non_zero(
    flow_simulator: FlowSimulator, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    server = flow_simulator(thinking_scale=100.0)
    write_tickets(tmp_path / "tickets.csv", 20)
    code = run_locally(params(tmp_path, model="claude-opus-5-5", job="classify"), process_rows)

    assert code == EXIT_FAILED
    assert "every row sent failed (20 of 20: truncated: 20)" in capsys.readouterr().err
    assert not list((tmp_path / "out" / "classify" / "results").rglob("*.parquet"))
    failures = pd.read_parquet(tmp_path / "out" / "classify" / "failures")
    assert len(failures) == 20 and set(failures["error_type"]) == {"truncated"}
    assert set(failures["stop_reason"]) == {"max_tokens"}
    assert (failures["attempts"] == 3).all()  # the first try and two larger ones
    assert server.stats()["requests_total"] == 60
