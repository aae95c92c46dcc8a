"""The batch runner's parts: custom ids, splitting, the ledger."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aibatch.cost.pricing import PriceBook
from aibatch.engine.backend import BatchStatus
from aibatch.engine.batches import BatchLedger, BatchRunner, Submission, custom_id_for
from aibatch.engine.stats import RunStats
from aibatch.jobs.spec import JobSpec
from aibatch.output.committer import Committer
from aibatch.output.store import ResultStore

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ODD_IDS = ["T-1", "a/b", "a_b", "a b", "%2F", "é", "🎫", "x" * 300, "", "tab\there", "7"]


def test_custom_ids_are_valid_distinct_and_stable_for_any_ticket_id() -> None:
    ids = [custom_id_for(i) for i in ODD_IDS]
    assert all(CUSTOM_ID.match(c) for c in ids), ids
    assert len(set(ids)) == len(ODD_IDS)
    assert custom_id_for("a/b") == custom_id_for("a/b")
    assert custom_id_for("T-1").startswith("T-1-")  # readable in the console


def runner(tmp_path: Path, **options: Any) -> BatchRunner:
    store = ResultStore(tmp_path / "out", "summarize")
    store.journal_dir.make_dirs()
    carried = pd.DataFrame(index=pd.Index([], name="id"))
    committer = Committer.open(store, "run", carried)
    spec = JobSpec.build("summarize", "claude-haiku-5-5", None)
    return BatchRunner(
        api=None,  # type: ignore[arg-type]  # planning sends nothing
        spec=spec, committer=committer, ledger=BatchLedger(tmp_path / "ledger"), run_id="run",
        stats=RunStats(), prices=PriceBook.load(), **options,
    )  # fmt: skip


def test_plan_splits_at_the_request_limit(tmp_path: Path) -> None:
    tickets = [(f"T-{i}", f"ticket {i} text") for i in range(25)]
    groups = runner(tmp_path, max_requests=10).plan(tickets)
    assert [len(g) for g in groups] == [10, 10, 5]
    assert [r.row_id for g in groups for r in g] == [t for t, _ in tickets]


def test_plan_splits_at_the_size_limit(tmp_path: Path) -> None:
    tickets = [(f"T-{i}", "word " * 2_000) for i in range(10)]  # ~10 kB of JSON each
    plan = runner(tmp_path, max_bytes=40_000).plan(tickets)
    assert len(plan) > 2
    for group in plan:
        assert sum(r.size_bytes for r in group) <= 40_000 * 0.9


def test_the_ledger_survives_a_torn_save_and_round_trips(tmp_path: Path) -> None:
    ledger = BatchLedger(tmp_path / "ledger")
    submission = Submission(
        key="k1", job="summarize", model="m", prompt_version="v", round=0,
        recorded_at="2026-11-29T00:00:00+00:00", custom_ids={"a-1": "a/1"},
    )  # fmt: skip
    ledger.save(submission)
    submission.batch_id, submission.state = "msgbatch_1", "submitted"
    ledger.save(submission)
    (ledger.directory / ".k1.deadbeef.tmp").write_bytes(b"{half a fi")  # killed mid-save
    loaded = ledger.load()
    assert loaded == [submission]
    assert not list(ledger.directory.local.glob(".*.tmp"))


def test_progress_shows_batches_by_status_and_their_counts(tmp_path: Path) -> None:
    batches = runner(tmp_path)
    batches.statuses = {
        "b1": BatchStatus("b1", "in_progress", {"processing": 500}),
        "b2": BatchStatus("b2", "ended", {"processing": 0, "succeeded": 480, "errored": 20}),
    }
    assert batches.describe() == (
        "batches: 1 ended, 1 in_progress (500 processing, 480 succeeded, 20 errored)"
    )


class ListingAPI:
    """The batch list of an API: newest first."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    async def recent_batches(self, limit: int) -> Any:
        for batch in self.batches[:limit]:
            yield batch


def recovering(tmp_path: Path, batches: list[Any]) -> tuple[BatchRunner, Submission]:
    batch_runner = runner(tmp_path)
    batch_runner.api = ListingAPI(batches)  # type: ignore[assignment]
    submission = Submission(
        key="k", job="summarize", model="claude-haiku-5-5", prompt_version="v", round=0,
        recorded_at=datetime(2026, 11, 29, 12, 0, tzinfo=UTC).isoformat(),
        custom_ids={f"c{i}": f"t{i}" for i in range(3)},
    )  # fmt: skip
    return batch_runner, submission


def status(batch_id: str, minute: int, requests: int = 3) -> Any:
    created = datetime(2026, 11, 29, 12, minute, tzinfo=UTC)
    return BatchStatus(batch_id, "in_progress", {"processing": requests}, created)


def test_a_batch_whose_id_was_never_recorded_is_found_by_time_and_size(tmp_path: Path) -> None:
    listed = [status("mine", 1), status("other-size", 1, requests=4), status("claimed", 0)]
    batch_runner, submission = recovering(tmp_path, listed)
    found = asyncio.run(batch_runner.recover(submission, claimed={"claimed"}))
    assert (found.batch_id, found.state) == ("mine", "submitted")
    assert batch_runner.ledger.load()[0].batch_id == "mine"  # recorded at once


def test_no_candidate_means_no_batch_was_created_and_two_are_refused(tmp_path: Path) -> None:
    batch_runner, submission = recovering(tmp_path, [status("claimed", 2)])
    lost = asyncio.run(batch_runner.recover(submission, claimed={"claimed"}))
    assert lost.state == "abandoned" and lost.batch_id is None

    batch_runner, submission = recovering(tmp_path, [status("a", 1), status("b", 2)])
    with pytest.raises(RuntimeError, match="2 batches could be it"):
        asyncio.run(batch_runner.recover(submission, claimed=set()))
