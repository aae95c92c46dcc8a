"""The built-in jobs: job files shipped in the package, used by name (`--job`)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from aibatch.app.cli import app
from aibatch.jobs.prompts import load_job_rows
from aibatch.jobs.spec import BUILT_IN_JOBS, JobSpec, builtin_job
from tests.helpers import SAMPLE


def test_the_built_in_jobs_are_job_files_in_the_package() -> None:
    assert BUILT_IN_JOBS == ("summarize", "classify")
    summarize, classify = (builtin_job(name) for name in BUILT_IN_JOBS)
    assert summarize.output.kind == "text" and summarize.prompt == "{{ text }}"
    assert classify.output.labels == ["billing", "technical", "feature request", "other"]
    assert set(classify.output.definitions) == set(classify.output.labels)
    with pytest.raises(ValueError, match="--job must be one of summarize, classify"):
        builtin_job("translate")


@pytest.mark.parametrize("name", BUILT_IN_JOBS)
def test_each_built_in_job_renders_every_sample_ticket(name: str) -> None:
    spec = JobSpec.of(builtin_job(name))
    rows, prompts = load_job_rows(SAMPLE, spec.template, "id")
    assert len(prompts) == len(rows.frame) == 5000
    texts = rows.frame["text"].tolist()
    assert all(text in prompt for text, prompt in zip(texts[:50], prompts, strict=False))


def test_aibatch_jobs_lists_each_with_its_kind_of_answer() -> None:
    listed = CliRunner().invoke(app, ["jobs"])
    assert listed.exit_code == 0
    assert "summarize    text" in listed.output
    assert "classify     label: billing, technical, feature request, other" in listed.output
