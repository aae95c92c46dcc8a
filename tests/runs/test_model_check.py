"""The capability table checked against the Models API: a disagreement is a warning naming
the model and the field; an endpoint that cannot be read is said, not fatal."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

from aibatch.engine.backend import ApiTarget
from aibatch.jobs.models import ModelBook
from aibatch.runs.model_check import check_models, disagreements
from tests.conftest import Simulate

MODEL = "claude-haiku-5-5"


def test_the_built_in_table_agrees_with_the_simulated_models_api(simulate: Simulate) -> None:
    book = ModelBook.load()
    models = [MODEL, "claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-4-5"]
    assert asyncio.run(check_models(simulate().target(), models, book)) == []


def test_each_field_that_differs_is_named(tmp_path: Path, simulate: Simulate) -> None:
    overlay = tmp_path / "models.toml"
    overlay.write_text(
        f"[models.{MODEL}]\nmax_output_tokens = 64000\nstructured_outputs = false\n"
        'efforts = ["low", "medium", "high"]\n'
    )
    book = ModelBook.load(overlay)
    warnings = asyncio.run(check_models(simulate().target(), [MODEL], book))
    assert f"{MODEL}: max_tokens is 128000 at the Models API, 64000 in the table" in warnings
    assert any("capabilities.structured_outputs is True" in w for w in warnings)
    assert any("capabilities.effort.max is True" in w for w in warnings)
    assert not any("max_input_tokens" in w for w in warnings)


def test_a_field_the_api_does_not_give_is_not_compared() -> None:
    rules = replace(ModelBook.load().rules_for(MODEL), max_output_tokens=1)
    assert disagreements(MODEL, rules, {"id": MODEL}) == []


def test_an_endpoint_that_cannot_be_read_is_a_warning() -> None:
    closed = ApiTarget("key", "http://127.0.0.1:9")  # nothing listens on the discard port
    (warning,) = asyncio.run(check_models(closed, [MODEL], ModelBook.load()))
    assert "the Models API could not be read" in warning
