"""The `aibatch-eval` flow on a Prefect server: one `aibatch-rows` subflow per candidate,
and the scores as a table artifact of the eval's flow run."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aibatch.flows.evaluate import evaluate
from aibatch.runs.evaluation import EvalParameters
from tests.conftest import FlowSimulator
from tests.helpers import ROOT

CHEAP, STRONG = "claude-haiku-5-5", "claude-sonnet-5-5"


def test_the_eval_flow_runs_each_candidate_as_a_subflow_and_publishes_the_scores(
    flow_simulator: FlowSimulator, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    flow_simulator(accuracy={CHEAP: 0.8, STRONG: 1.0})
    params = EvalParameters(
        input_path=str(ROOT / "data/products.csv"),
        job_file=str(ROOT / "jobs/product-category.toml"),
        truth_path=str(ROOT / "data/products-truth.csv"),
        models=[CHEAP, STRONG], sample=120, output_dir=str(tmp_path / "out"),
    )  # fmt: skip

    async def run_for_state() -> Any:
        return await evaluate(params, return_state=True)

    state = asyncio.run(run_for_state())
    assert state.is_completed()
    report = state.result()
    accuracy = {m["model"]: m["accuracy"] for m in report["models"]}
    assert abs(accuracy[CHEAP] - 0.8) <= 0.06 and accuracy[STRONG] >= 0.99
    assert report["recommended"] == STRONG

    async def read() -> tuple[list[str], list[Any]]:
        run_id = state.state_details.flow_run_id
        async with get_client() as client:
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
                )
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
            return [c.name for c in children], artifacts

    children, artifacts = asyncio.run(read())
    assert len(children) == 2
    (table,) = [a for a in artifacts if a.key == "aibatch-eval-product-category"]
    assert table.type == "table"
    assert CHEAP in str(table.data) and STRONG in str(table.data)
