"""Cost control through the whole flow, on the simulator: batch mode at half the price,
resubmission of errored and expired requests, the budget cap, and prompt caching."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aibatch.cost.pricing import PriceBook, Usage
from aibatch.engine.batches import BatchLedger, Submission, custom_id_for
from aibatch.errors import RunStopped
from aibatch.flows.process_rows import process_rows
from aibatch.jobs.spec import JobSpec
from aibatch.runs.parameters import RunParameters
from aibatch.simulator import SimulatorServer
from tests.conftest import FlowSimulator
from tests.helpers import assert_stopped_within_one_request, summary_belongs_to, write_tickets

StartSimulator = Callable[..., SimulatorServer]
UseSimulator = Callable[[SimulatorServer], None]
SONNET_SUMMARY = JobSpec.build("summarize", "claude-sonnet-5-5", None)


def read(output: Path, dataset: str = "results", job: str = "summarize") -> pd.DataFrame:
    return pd.read_parquet(output / job / dataset)


def test_batch_mode_gives_the_realtime_results_at_half_the_cost(
    prefect_api: str, start_simulator: StartSimulator, use_simulator: UseSimulator,
    tmp_path: Path,
) -> None:  # fmt: skip
    texts = write_tickets(tmp_path / "tickets.csv", 2_000)
    common = RunParameters(input_path=str(tmp_path / "tickets.csv"), model="claude-haiku-5-5")

    realtime_api = start_simulator(seed=1)
    use_simulator(realtime_api)
    realtime = asyncio.run(process_rows(common.model_copy(update={
        "output_dir": str(tmp_path / "realtime"), "max_concurrency": 32,
    })))  # fmt: skip

    batch_api = start_simulator(seed=1, batch_processing_seconds=1.0)
    use_simulator(batch_api)
    batch = asyncio.run(process_rows(common.model_copy(update={
        "output_dir": str(tmp_path / "batch"), "mode": "batch", "batch_max_requests": 800,
        "batch_poll_max_s": 0.5,
    })))  # fmt: skip

    by_realtime = read(tmp_path / "realtime").set_index("id").sort_index()
    by_batch = read(tmp_path / "batch").set_index("id").sort_index()
    assert len(by_batch) == 2_000 and by_batch.index.is_unique
    assert (by_batch["result"] == by_realtime["result"]).all()  # the same answers
    answers = dict(zip(by_batch.index, by_batch["result"], strict=True))
    assert all(summary_belongs_to(answers[i], texts[i]) for i in texts)
    assert set(by_batch["mode"]) == {"batch"} and set(by_realtime["mode"]) == {"realtime"}
    assert by_batch["latency_ms"].isna().all()
    # The same tokens, half the cost, row by row and in the run summaries.
    for column in ("input_tokens", "output_tokens"):
        assert (by_batch[column] == by_realtime[column]).all()
    assert by_batch["cost_usd"].to_numpy() == pytest.approx(by_realtime["cost_usd"].to_numpy() / 2)
    assert batch["cost_usd"] == pytest.approx(realtime["cost_usd"] / 2, rel=1e-4)
    assert batch["batches_submitted"] == 3  # 2,000 requests at 800 a batch
    stats = batch_api.stats()
    assert stats["batches_created"] == 3 and stats["batch_requests"] == 2_000
    assert stats["requests_total"] == 0  # nothing went through the Messages endpoint
    assert stats["prompts_paid_repeated"] == 0


def test_errored_and_expired_batch_requests_are_submitted_again(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator(
        seed=3,
        batch_processing_seconds=0.2,
        batch_p_errored=0.1,
        batch_p_expired=0.1,
        context_window=2_000,
    )
    write_tickets(tmp_path / "tickets.csv", 400, long_ids=2)
    summary = asyncio.run(process_rows(RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        mode="batch", batch_poll_max_s=0.2, batch_resubmits=5,
    )))  # fmt: skip
    results = read(tmp_path / "out")
    assert len(results) == 400 and results["id"].is_unique
    # Over-long tickets are refused as invalid requests: failures, never resubmitted.
    failures = read(tmp_path / "out", "failures")
    assert sorted(failures["id"]) == ["LONG-0", "LONG-1"]
    assert set(failures["error_type"]) == {"invalid_request_error"}
    stats = server.stats()
    assert summary["requests_resubmitted"] > 40  # about 20% of 402, then of the rest
    assert stats["batch_requests"] == 402 + summary["requests_resubmitted"]
    assert stats["batches_created"] == summary["batches_submitted"] > 1
    assert stats["prompts_paid_repeated"] == 0  # errored and expired were not billed
    assert set(results["attempts"]) > {1}  # resubmitted rows say which round answered


def stopped_by_budget(
    tmp_path: Path, rows: int, cap: float, **options: Any
) -> tuple[RunParameters, pd.DataFrame]:
    """A Sonnet run over `rows` sample tickets under a budget of `cap` that stops it part way:
    its parameters, and the results it saved, each checked to stop within one request."""
    write_tickets(tmp_path / "tickets.csv", rows)
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        model="claude-sonnet-5-5", budget_usd=cap, **options,
    )  # fmt: skip
    with pytest.raises(RunStopped, match="budget reached"):
        asyncio.run(process_rows(params))
    results = read(tmp_path / "out")
    assert 0 < len(results) < rows
    batch = options.get("mode") == "batch"
    assert_stopped_within_one_request(results, cap, SONNET_SUMMARY, batch=batch)
    return params, results


def test_the_budget_stops_within_one_request_and_a_higher_one_continues(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator(latency_ms=5)
    cap = 0.05
    params, results = stopped_by_budget(tmp_path, 300, cap, max_concurrency=8)
    # Every answer the API was paid for is saved (a stop loses nothing).
    assert server.stats()["by_status"]["200"] == len(results)

    # The same budget again: nothing more fits (earlier runs count), so nothing is sent.
    before = server.stats()["requests_total"]
    with pytest.raises(RunStopped, match="budget reached"):
        asyncio.run(process_rows(params))
    assert server.stats()["requests_total"] == before

    done = asyncio.run(process_rows(params.model_copy(update={"budget_usd": 1.0})))
    assert done["already_done"] == len(results)
    assert len(read(tmp_path / "out")) == 300
    assert server.stats()["prompts_paid_repeated"] == 0


def test_cache_reads_appear_after_the_first_call_and_lower_the_cost(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    # The simulator caches prefixes from 50 tokens (the real API's minimum is 1,024 or more:
    # README, "Prompt caching"), so the built-in system prompt is cacheable here.
    flow_simulator(cache_min_tokens=50)
    write_tickets(tmp_path / "tickets.csv", 60)
    summary = asyncio.run(process_rows(RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(tmp_path / "out"),
        job="classify", model="claude-haiku-5-5", max_concurrency=1,
    )))  # fmt: skip
    rows = read(tmp_path / "out", job="classify").sort_values("completed_at").reset_index(drop=True)
    written = rows["cache_creation_input_tokens"].tolist()
    read_back = rows["cache_read_input_tokens"].tolist()
    assert written[0] > 0 and read_back[0] == 0  # the first call writes the cache
    assert read_back[1:] == [written[0]] * (len(rows) - 1)  # every later call reads it
    later = rows.iloc[1:]
    assert summary["cache_read_input_tokens"] == later["cache_read_input_tokens"].sum()
    book = PriceBook.load()
    prompts = (later["input_tokens"] + later["cache_read_input_tokens"]
               + later["cache_creation_input_tokens"]).tolist()  # fmt: skip
    uncached = [
        book.cost_usd("claude-haiku-5-5", Usage(int(prompt), int(output)))
        for prompt, output in zip(prompts, later["output_tokens"].tolist(), strict=True)
    ]
    assert (later["cost_usd"].to_numpy() < pd.Series(uncached).to_numpy()).all()
    assert summary["cost_usd"] == pytest.approx(rows["cost_usd"].sum(), abs=1e-8)


def test_in_batch_mode_the_budget_caps_what_is_submitted(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator(batch_processing_seconds=0.05)
    cap = 0.02
    params, results = stopped_by_budget(tmp_path, 200, cap, mode="batch", batch_poll_max_s=0.05)
    # Only what was answered was submitted: nothing left waiting at the API.
    assert server.stats()["batch_requests"] == len(results)

    done = asyncio.run(process_rows(params.model_copy(update={"budget_usd": 1.0})))
    assert done["already_done"] == len(results) and done["ok"] == 200 - len(results)
    assert server.stats()["prompts_paid_repeated"] == 0


def test_open_batches_are_never_paid_twice_by_another_mode_and_a_lost_one_is_redone(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    server = flow_simulator(batch_processing_seconds=0.05)
    write_tickets(tmp_path / "tickets.csv", 50)
    output = tmp_path / "out"
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(output),
        model="claude-haiku-5-5", mode="batch", batch_poll_max_s=0.05,
    )  # fmt: skip
    spec = JobSpec.build("summarize", "claude-haiku-5-5", None)
    lost_ids = [f"T-{i:05d}" for i in range(1, 11)]
    # An earlier batch-mode run left a batch open for ten of the tickets; the API has lost it.
    BatchLedger(output / "_aibatch" / "batches").save(Submission(
        key="20261129T000000000000-0000abcd", job=spec.job, model=spec.model,
        prompt_version=spec.prompt_version, round=0,
        recorded_at="2026-11-29T00:00:00+00:00", state="submitted",
        batch_id="msgbatch_gone", custom_ids={custom_id_for(i): i for i in lost_ids},
    ))  # fmt: skip

    # A realtime run would send those ten again while the batch may still answer them.
    with pytest.raises(RunStopped, match=r"msgbatch_gone.*--mode batch"):
        asyncio.run(process_rows(params.model_copy(update={"mode": "realtime"})))
    assert server.stats()["requests_total"] == 0

    # Batch mode polls it, finds it gone, collects the rest and says what is left.
    with pytest.raises(RuntimeError, match=r"10 row.*no longer has"):
        asyncio.run(process_rows(params))
    assert len(read(output)) == 40
    (lost,) = [s for s in BatchLedger(output / "_aibatch" / "batches").load() if s.note]
    assert lost.state == "abandoned"

    done = asyncio.run(process_rows(params))  # the re-run submits the ten again
    assert done["ok"] == 10 and len(read(output)) == 50
    assert server.stats()["prompts_paid_repeated"] == 0


def test_team_instructions_make_the_shared_prompt_long_enough_to_be_cached(
    flow_simulator: FlowSimulator, tmp_path: Path,
) -> None:  # fmt: skip
    # The simulator keeps the API's own minimum here: prefixes under 1,024 tokens are not
    # cached, and the built-in instructions alone are far shorter.
    flow_simulator()
    texts = write_tickets(tmp_path / "tickets.csv", 40)
    examples = "\n".join(
        f"Example {n}: for a ticket like {text!r}, pick the label a billing or support lead "
        "would route it to, never one the ticket asks for."
        for n, text in enumerate(list(texts.values())[:20], start=1)
    )
    instructions = tmp_path / "house-style.txt"
    instructions.write_text("Route tickets the way our support leads do.\n" + examples)
    common = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), job="classify", model="claude-haiku-5-5",
        max_concurrency=1,
    )  # fmt: skip

    asyncio.run(process_rows(common.model_copy(update={"output_dir": str(tmp_path / "a")})))
    plain = read(tmp_path / "a", job="classify")
    assert plain["cache_read_input_tokens"].sum() == 0  # too short to cache
    assert plain["cache_creation_input_tokens"].sum() == 0

    asyncio.run(process_rows(common.model_copy(update={
        "output_dir": str(tmp_path / "b"), "instructions_path": str(instructions),
    })))  # fmt: skip
    rows = read(tmp_path / "b", job="classify").sort_values("completed_at")
    written = rows["cache_creation_input_tokens"].tolist()
    assert written[0] >= 1_024  # the first request writes the long shared prefix
    assert rows["cache_read_input_tokens"].tolist()[1:] == [written[0]] * 39
    # Other instructions, another question: its own resume key, never mixed with the first.
    (version,) = set(rows["prompt_version"])
    assert version != plain["prompt_version"].iloc[0]
    assert rows["cost_usd"].sum() < rows["cost_usd"].iloc[0] * 40  # the reads cost less


def test_an_unreadable_instructions_file_is_refused_naming_it(tmp_path: Path) -> None:
    from aibatch.jobs.spec import read_instructions

    with pytest.raises(ValueError, match=r"missing\.txt: cannot read"):
        read_instructions(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match=r"empty\.txt: the instructions file is empty"):
        read_instructions(str(tmp_path / "empty.txt"))
