"""`aibatch status`: every job of an output directory in one table (or JSON), read from its
datasets and ledger alone."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

from typer.testing import CliRunner

from aibatch.app.cli import app
from aibatch.cost.pricing import PriceBook
from aibatch.engine.batches import BatchLedger, Submission
from aibatch.engine.recorder import Recorder
from aibatch.engine.stats import RunStats
from aibatch.jobs.spec import JobSpec
from aibatch.output.committer import Committer
from aibatch.output.store import ResultStore

USAGE = SimpleNamespace(
    input_tokens=100, output_tokens=20, cache_creation_input_tokens=0, cache_read_input_tokens=0
)


def store_rows(output: Path, spec: JobSpec, ok: list[str], failed: dict[str, str]) -> None:
    """Answers and failures of one run of `spec`, committed as a run commits them."""
    import pandas as pd

    store = ResultStore(output, spec.job)
    run_id = f"20261206T1200{len(ok):02d}Z-test{spec.job[:4]}"
    with store.locked():
        committer = Committer.open(store, run_id, pd.DataFrame(index=pd.Index([], name="id")))
        recorder = Recorder(spec, run_id, committer, RunStats(), PriceBook.load(), "realtime")
        for row_id in ok:
            recorder.ok(row_id, "An answer.", USAGE, attempts=1, cost=0.001)
        for row_id, error_type in failed.items():
            recorder.failed(row_id, error_type, 400, "no", attempts=1, cost=0.0)
        asyncio.run(committer.commit())
        committer.close()


def test_status_shows_each_job_with_its_failures_cost_and_open_batches(tmp_path: Path) -> None:
    output = tmp_path / "out"
    summarize = JobSpec.build("summarize", "claude-haiku-5-5", None)
    classify = JobSpec.build("classify", "claude-sonnet-5-5", None)
    store_rows(output, summarize, ["a", "b", "c"], {"d": "BadRequestError", "e": "refusal"})
    store_rows(output, classify, ["a", "b"], {"c": "refusal"})
    BatchLedger(output / "_aibatch" / "batches").save(Submission(
        key="k1", job="classify", model="claude-sonnet-5-5",
        prompt_version=classify.prompt_version, round=0, recorded_at="2026-12-06T12:00:00+00:00",
        custom_ids={"x-1": "x"}, state="submitted", batch_id="msgbatch_open1",
    ))  # fmt: skip

    shown = CliRunner().invoke(app, ["status", str(output), "--json"])
    assert shown.exit_code == 0, shown.output
    jobs = {j["job"]: j for j in json.loads(shown.output)["jobs"]}
    assert list(jobs) == ["classify", "summarize"]
    assert jobs["summarize"]["results"] == 3 and jobs["summarize"]["failures"] == 2
    assert jobs["summarize"]["failures_by_type"] == {"BadRequestError": 1, "refusal": 1}
    assert jobs["summarize"]["cost_usd"] == 0.003
    assert jobs["summarize"]["models"] == {"claude-haiku-5-5": 3}
    assert jobs["summarize"]["prompt_versions"] == {summarize.prompt_version: 3}
    assert jobs["summarize"]["last_run_id"] and jobs["summarize"]["open_batches"] == []
    assert jobs["classify"]["open_batches"] == ["msgbatch_open1"]

    table = CliRunner().invoke(app, ["status", str(output)])
    assert table.exit_code == 0
    assert "summarize" in table.output and "$0.0030" in table.output
    assert "BadRequestError: 1, refusal: 1" in table.output
    assert "msgbatch_open1" in table.output

    missing = CliRunner().invoke(app, ["status", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "no such output directory" in missing.output
