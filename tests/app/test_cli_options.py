"""Every option of `aibatch run` maps to one run parameter, and a bad value is reported
under the option the user typed (not the parameter's field name)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from aibatch.app.cli import RUN_OPTIONS, app, option_name
from aibatch.runs.parameters import RunParameters

# A value the run's parameters refuse, for each option they check.
BAD_VALUE = {
    "job": "nope", "labels": "a,a", "limit": "0", "sample": "0", "effort": "extreme",
    "chunk_size": "0", "chunk_slots": "0", "id_column": "", "text_column": "",
    "rpm": "0", "itpm": "0", "otpm": "0", "shared_rpm": "0", "shared_itpm": "0",
    "shared_otpm": "0", "shards": "0", "timeout": "0",
    "mode": "fast", "budget_usd": "0", "batch_size": "0", "batch_poll_max": "0",
    "batch_resubmits": "-1", "max_concurrency": "0", "max_attempts": "0",
    "outage_deadline": "0",
}  # fmt: skip
# Options whose values the parameters take as they are: paths are checked when the file is
# read (the error names the file), a flag has no bad value, and the model is checked
# against the model table when the job is built (the error names the model).
CHECKED_ELSEWHERE = {
    "input_path", "output", "job_file", "models", "prices", "instructions", "progress", "model",
    "escalate_to", "escalate_labels", "ask_once", "verbose",
}  # fmt: skip


def test_every_option_sets_one_field_and_every_field_a_user_sets_has_an_option() -> None:
    assert len(set(RUN_OPTIONS.values())) == len(RUN_OPTIONS)
    assert set(RUN_OPTIONS.values()) <= set(RunParameters.model_fields)
    assert set(BAD_VALUE) | CHECKED_ELSEWHERE == set(RUN_OPTIONS)


@pytest.mark.parametrize("parameter", sorted(BAD_VALUE))
def test_a_bad_value_is_reported_under_the_option_typed(parameter: str, tmp_path: Path) -> None:
    option = option_name(parameter)
    result = CliRunner().invoke(app, [
        "run", "data/tickets.csv", "--output", str(tmp_path / "out"), "--no-progress",
        f"{option}={BAD_VALUE[parameter]}",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"error: {option}" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_an_error_about_several_options_stands_alone(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [
        "run", "data/tickets.csv", "--output", str(tmp_path / "out"), "--no-progress",
        "--limit", "5", "--sample", "5",
    ])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "error: " in result.output and "--:" not in result.output
