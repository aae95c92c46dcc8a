"""What batch mode submits again after a round of collections (plain functions, no API)."""

from __future__ import annotations

from aibatch.engine.batches import CollectReport, Submission, next_round


def submission(round_: int, grown: int = 0) -> Submission:
    return Submission(
        key=f"k{round_}{grown}", job="summarize", model="m", prompt_version="v1",
        round=round_, recorded_at="2026-12-03T00:00:00Z", custom_ids={}, grown=grown,
    )  # fmt: skip


def test_each_kind_of_leftover_goes_to_its_own_round() -> None:
    collected = [
        (submission(0), CollectReport(to_resubmit=["e1"], to_grow=["g1"], canceled=["c1"])),
        (submission(1, grown=1), CollectReport(to_resubmit=["e2"], canceled=["c2"])),
    ]
    again, unfinished = next_round(collected, resubmits=2)
    assert again == {
        (0, 0): ["c1"],  # cancelled: never processed, keeps its round
        (0, 1): ["g1"],  # cut short: same round, more room
        (1, 0): ["e1"],  # errored or expired: the next round
        (1, 1): ["c2"],
        (2, 1): ["e2"],
    }
    assert unfinished == 0


def test_past_the_last_resubmission_and_lost_batches_are_unfinished() -> None:
    collected = [
        (submission(2), CollectReport(to_resubmit=["e1", "e2"], to_grow=["g1"])),
        (submission(0), CollectReport(gone=3)),
    ]
    again, unfinished = next_round(collected, resubmits=2)
    assert again == {(2, 1): ["g1"]}  # nothing empty is submitted
    assert unfinished == 2 + 3


def test_batch_requests_keep_the_shared_prefix_an_hour_and_escalations_ask_the_stronger_model() -> (
    None
):
    from typing import Any

    from aibatch.cost.pricing import PriceBook
    from aibatch.engine.batches import BatchRunner
    from aibatch.engine.stats import RunStats
    from aibatch.jobs.spec import JobSpec, builtin_job

    definition = builtin_job("classify").with_options(
        escalate_to="claude-sonnet-5-5", escalate_labels=["other"]
    )
    spec = JobSpec.of(definition, "claude-haiku-5-5")
    unused: Any = None  # planning sends nothing and writes nothing
    runner = BatchRunner(unused, spec, unused, unused, "run", RunStats(), PriceBook.load())
    (group,) = runner.plan([("r1", "<data>The app crashes.</data>")])
    (request,) = group
    assert request.params["model"] == "claude-haiku-5-5"
    assert request.params["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    (stronger,) = runner.plan([("r1", "<data>The app crashes.</data>")], escalating=True)
    assert stronger[0].params["model"] == "claude-sonnet-5-5"
