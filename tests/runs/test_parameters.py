"""The run's parameters: the job file behind them is read once, not at every look."""

from __future__ import annotations

from pathlib import Path

import pytest

from aibatch.jobs.spec import JobDefinition, load_job_file
from aibatch.runs import parameters
from aibatch.runs.parameters import RunParameters
from tests.helpers import ROOT


def test_the_job_file_is_read_once_and_again_only_when_the_job_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []
    real = load_job_file

    def load(path: str | Path) -> JobDefinition:
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(parameters, "load_job_file", load)
    params = RunParameters(job_file=str(ROOT / "jobs" / "product-category.toml"))
    assert params.job_name == "product-category"
    assert params.id_column_used == "sku" and params.job_spec().job == "product-category"
    assert len(reads) == 1
    other = params.model_copy(update={"job_file": None, "job": "classify"})
    assert other.job_name == "classify" and len(reads) == 1  # a built-in job: no file
    again = params.model_copy(update={"job_file": str(ROOT / "jobs" / "ticket-digest.toml")})
    assert again.job_name == "ticket-digest" and len(reads) == 2
