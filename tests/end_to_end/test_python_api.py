"""aibatch from Python, as a notebook calls it: the answers in the input's order, failures
beside them, a second call resuming, bad input raised before any call, and a call from
inside a running event loop (as Jupyter's)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pandas as pd
import pytest

import aibatch
from aibatch.errors import BadInput
from tests.conftest import FlowSimulator
from tests.helpers import SAMPLE


def test_run_returns_the_answers_in_the_input_order_and_resumes(
    flow_simulator: FlowSimulator, tmp_path: Path
) -> None:
    server = flow_simulator(context_window=2_000)
    frame = pd.read_csv(SAMPLE, dtype=str).head(60)[["id", "text"]].iloc[::-1]  # any order
    frame = pd.concat([frame, pd.DataFrame({"id": ["LONG"], "text": ["Export fails. " * 900]})])
    answers = aibatch.run(frame, job="classify", output=tmp_path / "out", chunk_size=50)
    assert answers["id"].tolist() == frame["id"].tolist()[:-1]  # LONG failed: not an answer
    assert set(answers["result"]) <= {"billing", "technical", "feature request", "other"}
    failures = answers.attrs["failures"]
    assert failures["id"].tolist() == ["LONG"] and failures["status_code"].tolist() == [400]
    sent = server.stats()["requests_total"]

    with pytest.warns(aibatch.app.python_api.RunIncompleteWarning, match="every row sent failed"):
        again = aibatch.run(frame, job="classify", output=tmp_path / "out")
    assert server.stats()["requests_total"] == sent + 1  # resumed: only LONG asked again
    assert again["result"].tolist() == answers["result"].tolist()
    assert len(aibatch.read_results(tmp_path / "out", "classify")) == 60


def test_run_works_inside_a_running_event_loop(
    flow_simulator: FlowSimulator, tmp_path: Path
) -> None:
    flow_simulator()
    frame = pd.read_csv(SAMPLE, dtype=str).head(5)[["id", "text"]]

    async def in_a_notebook_cell() -> pd.DataFrame:
        return aibatch.run(
            frame, job="summarize", output=tmp_path / "out", model="claude-haiku-5-5"
        )

    answers = asyncio.run(in_a_notebook_cell())
    assert answers["id"].tolist() == frame["id"].tolist()


def test_bad_rows_are_refused_before_any_call(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["a", "a"], "text": ["one", "two"]})
    with pytest.raises(BadInput, match="duplicate id 'a'"):
        aibatch.run(frame, job="classify", output=tmp_path / "out")
    with pytest.raises(BadInput, match="budget_usd"):
        aibatch.run(frame, job="classify", output=tmp_path / "out", budget_usd=-1)
    assert not (tmp_path / "out" / "classify").exists()
