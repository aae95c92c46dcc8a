"""The run plan: read and checked once, the one place that says what a run sends."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from aibatch.engine.stats import RunStats
from aibatch.errors import BadInput, InputError
from aibatch.runs.builder import open_committer
from aibatch.runs.parameters import RunParameters
from aibatch.runs.plan import RunPlan
from tests.helpers import write_tickets


def answer_rows(plan: RunPlan, ids: list[str], *, publish: bool = True) -> None:
    """Store an answer for each of `ids` as a run would (journal, then publish unless a
    crash is being staged), without the API."""
    from aibatch.engine.recorder import Recorder

    usage = SimpleNamespace(
        input_tokens=10, output_tokens=5, cache_creation_input_tokens=0, cache_read_input_tokens=0
    )
    with plan.store.locked():
        committer = open_committer(plan, "20261206T000000Z-test0001")
        recorder = Recorder(plan.spec, "20261206T000000Z-test0001", committer, RunStats(),
                            plan.prices, "realtime")  # fmt: skip
        for row_id in ids:
            recorder.ok(row_id, "An answer.", usage, attempts=1, cost=0.001)
        if publish:
            asyncio.run(committer.commit())
        committer.close()


def params_for(tmp_path: Path, **options: object) -> RunParameters:
    return RunParameters.model_validate({
        "input_path": str(tmp_path / "rows.csv"), "output_dir": str(tmp_path / "out"),
        "job": "classify", **options,
    })  # fmt: skip


def test_the_plan_holds_the_rows_and_prompts_and_what_is_pending(tmp_path: Path) -> None:
    texts = write_tickets(tmp_path / "rows.csv", 12)
    plan = RunPlan.build(params_for(tmp_path))
    ids = list(texts)
    assert plan.rows.frame["id"].tolist() == ids
    assert len(plan.prompts) == 12 and texts[ids[0]] in plan.prompts[0]
    assert plan.pending.rows["id"].tolist() == ids and not plan.done
    answer_rows(plan, ids[:5])
    again = RunPlan.build(params_for(tmp_path))
    assert again.done == frozenset(ids[:5]) and again.pending.already_done == 5
    assert again.pending.rows["id"].tolist() == ids[5:]
    trial = RunPlan.build(params_for(tmp_path, limit=3))
    assert trial.pending.rows["id"].tolist() == ids[5:8] and trial.pending.held_back == 4
    assert trial.pairs(trial.pending)[0] == (ids[5], trial.prompts[5])


def test_nothing_to_do_only_when_no_row_no_journal_and_no_batch_is_left(tmp_path: Path) -> None:
    ids = list(write_tickets(tmp_path / "rows.csv", 6))
    plan = RunPlan.build(params_for(tmp_path))
    assert not plan.nothing_to_do
    answer_rows(plan, ids[:4])
    answer_rows(plan, ids[4:], publish=False)  # a crash: journaled, not yet published
    crashed = RunPlan.build(params_for(tmp_path))
    assert crashed.pending.rows["id"].tolist() == ids[4:]
    assert crashed.unpublished_journals() and not crashed.nothing_to_do
    assert crashed.pending_after(set(ids)).rows.empty  # what open_run finds after the fold-in


def test_the_flow_takes_the_plan_the_app_handed_on_once(tmp_path: Path) -> None:
    write_tickets(tmp_path / "rows.csv", 3)
    params = params_for(tmp_path)
    plan = RunPlan.build(params)
    plan.hand_on()
    assert RunPlan.of(params) is plan  # the same plan: the input is not read again
    assert RunPlan.of(params) is not plan  # taken: a later run plans afresh


@pytest.mark.parametrize(
    ("content", "options", "error", "says"),
    [
        ("id,text\n1,fine\n2,\n", {}, InputError, "rows.csv, row 2, column 'text'"),
        ("id,text\n1,fine\n", {"instructions_path": "nowhere.txt"}, BadInput, "nowhere.txt"),
        ("id,text\n1,fine\n", {"prices_path": "nowhere.toml"}, BadInput, "nowhere.toml"),
        ("id,text\n1,fine\n", {"model": "claude-nobody-9", "budget_usd": 1.0}, BadInput,
         "--budget-usd needs a price"),
    ],
)  # fmt: skip
def test_anything_unusable_is_bad_input_before_any_call(
    tmp_path: Path, content: str, options: dict[str, object], error: type[Exception], says: str
) -> None:
    (tmp_path / "rows.csv").write_text(content, encoding="utf-8")
    with pytest.raises(error, match=says):
        RunPlan.build(params_for(tmp_path, **options))
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_bucket_out_of_reach_is_bad_input_naming_the_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input or output in a bucket the AWS settings cannot reach: said before any call, with
    what to check (nothing listens on port 9 of this machine)."""
    write_tickets(tmp_path / "rows.csv", 3)
    settings = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k",
                "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(BadInput, match=r"s3://out-bucket: cannot reach http://127.0.0.1:9 .*"
                                        r"check AWS_ENDPOINT_URL"):  # fmt: skip
        RunPlan.build(params_for(tmp_path, output_dir="s3://out-bucket/prefix"))
    with pytest.raises(InputError, match=r"^s3://in-bucket/rows.csv: cannot be read \("):
        RunPlan.build(params_for(tmp_path, input_path="s3://in-bucket/rows.csv"))
    with pytest.raises(BadInput, match="only s3:// object stores are supported"):
        RunPlan.build(params_for(tmp_path, output_dir="gs://bucket/prefix"))
