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
