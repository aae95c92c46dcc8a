"""Scoring answers against known ones: what counts as right, what is reported, and which
candidate is recommended."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from aibatch.errors import BadInput
from aibatch.jobs.spec import JobDefinition, JobSpec
from aibatch.runs.evaluation import (
    Candidate,
    EvalParameters,
    EvalReport,
    Score,
    _score_fields,
    _score_labels,
    load_truth,
)

SCHEMA = {
    "type": "object",
    "properties": {
        "total": {"type": "number"},
        "due": {"type": "string", "format": "date"},
        "paid": {"type": "boolean"},
        "note": {"type": "string"},
    },
    "required": ["total", "due", "paid", "note"],
    "additionalProperties": False,
}


def spec(kind: str = "json") -> JobSpec:
    output: dict[str, object] = (
        {"kind": "json", "schema": SCHEMA} if kind == "json"
        else {"kind": "label", "labels": ["a", "b", "other"]}
    )  # fmt: skip
    return JobSpec.of(JobDefinition.model_validate(
        {"name": "t", "system": "s", "prompt": "{{ text }}", "output": output}
    ), "claude-haiku-5-5")  # fmt: skip


def test_json_fields_are_compared_after_their_columns_conversion(tmp_path: Path) -> None:
    truth_csv = tmp_path / "truth.csv"
    truth_csv.write_text("id,total,due,paid\nr1,12.50,2026-11-30,true\nr2,3,2026-01-02,false\n")
    truth = load_truth(str(truth_csv), spec(), "id")
    assert truth.fields == ["total", "due", "paid"]  # note: not in the file, not compared
    answers = pd.Series({
        "r1": json.dumps({"total": 12.5, "due": "2026-11-30", "paid": True, "note": "x"}),
        "r2": json.dumps({"total": 3.0, "due": "2026-01-03", "paid": False, "note": "y"}),
    })  # fmt: skip
    score = Score("m", 2, 2, 0, 1.0)
    _score_fields(score, answers, truth, spec())
    assert score.fields == {"total": 1.0, "due": 0.5, "paid": 1.0}
    assert score.correct == 1  # r2's due date is a day off
    unanswered = Score("m", 2, 1, 0, 1.0)
    _score_fields(unanswered, answers.drop("r2"), truth, spec())
    assert unanswered.fields["total"] == 0.5 and unanswered.correct == 1


def test_labels_score_unanswered_rows_as_wrong_with_precision_recall_and_confusion() -> None:
    expected = pd.Series({"r1": "a", "r2": "a", "r3": "b", "r4": "other"})
    answers = pd.Series({"r1": "a", "r2": "other", "r4": "other"})  # r3 unanswered
    score = Score("m", 4, 3, 0, 1.0)
    _score_labels(score, answers, expected, ["a", "b", "other"])
    assert score.correct == 2 and score.accuracy == 0.5
    assert score.labels["a"] == {"precision": 1.0, "recall": 0.5, "support": 2}
    assert score.labels["other"]["precision"] == 0.5
    assert score.labels["b"] == {"precision": None, "recall": 0.0, "support": 1}
    assert score.confusion["b"] == {"(unanswered)": 1}
    assert score.confusion["a"] == {"a": 1, "other": 1}


def test_the_recommendation_is_the_cheapest_that_reaches_the_target() -> None:
    def score(name: str, correct: int, cost: float | None) -> Score:
        return Score(name, 100, 100, correct, cost)

    scores = [score("cheap", 90, 0.01), score("mid", 96, 0.05), score("cascade", 95, 0.02),
              score("strong", 99, 0.20), score("unpriced", 99, None)]  # fmt: skip
    assert EvalReport("j", "label", 0.95, "s", scores).recommended == "cascade"
    assert EvalReport("j", "label", 0.99, "s", scores).recommended == "strong"
    assert EvalReport("j", "label", 1.0, "s", scores).recommended is None
    report = EvalReport("j", "label", 0.95, "s", scores).as_dict()
    assert set(report["models"][0]) >= {"model", "n", "answered", "accuracy", "cost_usd",
                                        "cost_per_correct_usd"}  # fmt: skip


def test_known_answers_that_cannot_be_scored_are_refused_naming_the_problem(
    tmp_path: Path,
) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("id,expected\nr1,a\nr2,c\n")
    with pytest.raises(BadInput, match=r"row 2, column expected: 'c' is not one of"):
        load_truth(str(labels), spec("label"), "id")
    no_fields = tmp_path / "fields.csv"
    no_fields.write_text("id,amount\nr1,3\n")
    with pytest.raises(BadInput, match=r"no column to compare.*total, due, paid, note"):
        load_truth(str(no_fields), spec(), "id")


def test_candidates_are_models_or_cascades_named_once() -> None:
    assert Candidate.parse("a+b") == Candidate("a", "b")
    assert Candidate.parse(" a ").name == "a"
    for bad in ("a+", "+b", "a+b+c"):
        with pytest.raises(ValueError, match="MODEL or MODEL\\+STRONGER_MODEL"):
            Candidate.parse(bad)
    with pytest.raises(ValueError, match="named once"):
        EvalParameters(input_path="i", truth_path="t", models=["a", " a"])
