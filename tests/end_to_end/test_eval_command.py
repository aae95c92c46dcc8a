"""`aibatch eval` as a user runs it on the example products: each model's accuracy is what
the simulator made it, the recommendation is the cheapest model (or cascade) that reaches
the target, a re-run pays nothing, and a text job is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from aibatch.simulator.model import built_in_accuracy
from tests.end_to_end.test_estimate_command import aibatch, clean_env
from tests.helpers import ROOT

CHEAP, STRONG = "claude-haiku-5-5", "claude-sonnet-5-5"
CASCADE = f"{CHEAP}+{STRONG}"


def evaluate(tmp_path: Path, *models: str, env: dict[str, str], sample: int = 400) -> Any:
    result = aibatch(
        "eval", str(ROOT / "data/products.csv"),
        "--job-file", str(ROOT / "jobs/product-category.toml"),
        "--truth", str(ROOT / "data/products-truth.csv"),
        "--models", ",".join(models), "--sample", str(sample),
        "--output", str(tmp_path / "out"), "--json", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), result.stderr


def test_eval_scores_each_model_as_the_simulator_made_it_and_recommends_the_cheapest(
    tmp_path: Path,
) -> None:
    env = clean_env(tmp_path)
    report, _ = evaluate(tmp_path, CHEAP, STRONG, CASCADE, env=env)
    scores = {m["model"]: m for m in report["models"]}
    assert list(scores) == [CHEAP, STRONG, CASCADE]
    for model in (CHEAP, STRONG):
        score = scores[model]
        assert score["n"] == 400 and score["answered"] == 400
        assert abs(score["accuracy"] - built_in_accuracy(model)) <= 0.03, score
        assert score["cost_usd"] > 0
        assert score["cost_per_correct_usd"] == pytest.approx(
            score["cost_usd"] / score["correct"], rel=1e-3
        )
    cheap, strong, cascade = scores[CHEAP], scores[STRONG], scores[CASCADE]
    assert cheap["cost_usd"] < strong["cost_usd"] and not cheap["meets_target"]
    # The cascade re-asks the catch-all ("other") of the stronger model: near its accuracy
    # at well under half its cost, so it is the recommendation.
    assert cascade["escalated"] > 0
    assert cascade["accuracy"] >= strong["accuracy"] - 0.03
    assert cascade["cost_usd"] < 0.5 * strong["cost_usd"]
    assert report["recommended"] == CASCADE
    labels = cheap["labels"]
    assert set(labels) == {"electronics", "clothing", "home", "toys", "other"}
    assert labels["other"]["precision"] < labels["clothing"]["precision"]  # doubts are "other"
    confusion = cheap["confusion"]
    assert sum(sum(row.values()) for row in confusion.values()) == 400
    truth = pd.read_csv(ROOT / "data/products-truth.csv")
    sample = pd.read_parquet(report["sample"])
    assert len(sample) == 400 and set(sample["sku"]) <= set(truth["sku"])

    # A re-run asks nothing: the answers are in the output directory; no simulator starts.
    again, said = evaluate(tmp_path, CHEAP, STRONG, CASCADE, env=env)
    assert again == report
    assert "simulator" not in said


def test_a_text_job_and_bad_known_answers_are_refused_before_any_call(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    text_job = aibatch(
        "eval", str(ROOT / "data/tickets.csv"), "--job", "summarize",
        "--truth", str(ROOT / "data/products-truth.csv"), "--models", CHEAP, env=env,
    )  # fmt: skip
    assert text_job.returncode == 2
    assert "text job" in text_job.stderr and "simulator" not in text_job.stderr
    bad = tmp_path / "truth.csv"
    bad.write_text("sku,expected\nSKU-189588,kitchenware\n")
    wrong = aibatch(
        "eval", str(ROOT / "data/products.csv"),
        "--job-file", str(ROOT / "jobs/product-category.toml"),
        "--truth", str(bad), "--models", CHEAP, env=env,
    )  # fmt: skip
    assert wrong.returncode == 2
    assert "row 1, column expected" in wrong.stderr and "kitchenware" in wrong.stderr
