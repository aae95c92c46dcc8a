"""A cascade in the engine: rows the first model could not answer well (refused, or a
catch-all label) are asked again of the stronger model, stored once, marked, and billed for
both calls; the rest keep the first model's answer."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from aibatch.jobs.spec import JobSpec, load_job_file
from tests.conftest import Simulate
from tests.engine.test_processor import Harness

ROOT = Path(__file__).resolve().parents[2]
CHEAP, STRONG = "claude-haiku-5-5", "claude-sonnet-5-5"


def product_rows(spec: JobSpec, count: int) -> tuple[list[tuple[str, str]], dict[str, str]]:
    with (ROOT / "data/products.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:count]
    return [(r["sku"], spec.render(r)) for r in rows], {r["sku"]: r["category_hint"] for r in rows}


def cascade(**options: object) -> JobSpec:
    definition = load_job_file(ROOT / "jobs/product-category.toml").with_options(
        escalate_to=STRONG,
        escalate_labels=["other"],
        **options,  # type: ignore[arg-type]
    )
    return JobSpec.of(definition, CHEAP)


def test_refused_and_catch_all_rows_are_answered_by_the_stronger_model_once(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    spec = cascade()
    server = simulate(accuracy={CHEAP: 0.8, STRONG: 1.0}, p_refusal=0.05, seed=2)
    h = harness(server, spec=spec)
    chunk, truth = product_rows(spec, 300)
    h.run(chunk)
    results = h.results().set_index("id")
    assert sorted(results.index) == sorted(truth)  # every row stored, once
    escalated = results[results["escalated_from"].notna()]
    first = results[results["escalated_from"].isna()]
    assert (escalated["escalated_from"] == CHEAP).all() and (escalated["model"] == STRONG).all()
    assert (first["model"] == CHEAP).all()
    # A first-model "other" stays only where the stronger model could not answer (refused).
    kept = first[first["result"] == "other"]
    assert (
        len(kept) == h.stats.escalated - len(escalated) and kept["escalation_reason"].isna().all()
    )
    reasons = escalated["escalation_reason"].value_counts().to_dict()
    assert reasons.get("label: other", 0) > 30 and reasons.get("refusal", 0) > 3, reasons
    accuracy = (results["result"] == pd.Series(truth).reindex(results.index)).mean()
    # The strong model alone, on the same rows and simulator: the cascade comes near its
    # accuracy (far above the cheap model's 0.8) at well under half its cost.
    strong = harness(server, "strong", spec=JobSpec.of(spec.definition.model_copy(
        update={"escalate_to": None, "escalate_labels": []}), STRONG))  # fmt: skip
    strong.run(chunk)
    alone = strong.results().set_index("id")
    strong_accuracy = (alone["result"] == pd.Series(truth).reindex(alone.index)).sum() / len(truth)
    assert accuracy * len(results) / len(truth) >= strong_accuracy - 0.03, (
        accuracy,
        strong_accuracy,
    )
    assert results["cost_usd"].sum() < 0.5 * alone["cost_usd"].sum()
    # An escalated row's cost is both calls: more than a first-model row's.
    assert escalated["cost_usd"].min() > first["cost_usd"].median()
    assert h.stats.escalated == len(escalated) + len(kept)
    assert h.stats.http_requests == len(chunk) + h.stats.escalated


def test_a_refusal_escalates_with_its_fallback_credit_so_the_cache_is_not_paid_twice(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    """Fable 5.1 refuses every row here; Opus 4.8 (a permitted fallback) answers each,
    redeeming the refusal's credit: its cache writes are billed as reads."""
    definition = load_job_file(ROOT / "jobs/product-category.toml").with_options(
        escalate_to="claude-opus-4-8"
    )
    spec = JobSpec.of(definition, "claude-fable-5-1")
    server = simulate(p_refusal=1.0, cache_min_tokens=50)
    h = harness(server, spec=spec)
    chunk, _ = product_rows(spec, 40)
    h.run(chunk)
    results = h.results()
    assert len(results) == 40 and (results["model"] == "claude-opus-4-8").all()
    assert (results["escalation_reason"] == "refusal").all()
    assert (results["cache_creation_input_tokens"] == 0).all()  # every write credited
    assert (results["cache_read_input_tokens"] > 0).all()
    assert len(server.api.credits) == 40  # one credit per refusal, each echoed

    # Without the credit (another model that gives none) the stronger model writes it.
    plain = JobSpec.of(definition.model_copy(update={"escalate_to": "claude-sonnet-4-6"}),
                       "claude-sonnet-5-5")  # fmt: skip
    again = harness(simulate(p_refusal=1.0, cache_min_tokens=50), "plain", spec=plain)
    again.run(product_rows(plain, 40)[0])
    assert again.results()["cache_creation_input_tokens"].sum() > 0
