"""The `aibatch-eval` flow: is the cheap model good enough? Each candidate (a model, or a
cascade `cheap+strong`) runs the job on the same seeded sample through the `aibatch-rows`
flow (a subflow each: their chunks, retries and artifacts show in the UI as any run's), then
every candidate is scored against the known answers and the scores are published as a table
artifact. What a candidate answered before is not asked again.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from aibatch.flows.process_rows import process_rows
from aibatch.prefect_server.artifacts import artifact_key, publish_scores
from aibatch.prefect_server.secrets import api_target
from aibatch.runs.evaluation import EvalParameters, EvalPlan
from aibatch.runs.plan import RunPlan


@flow(name="aibatch-eval", persist_result=False, log_prints=True)
async def evaluate(params: EvalParameters) -> dict[str, Any]:
    """Run the job on a seeded sample once per candidate and score each one's answers."""
    logger = get_run_logger()
    plan = EvalPlan.of(params)
    target = plan.api or await api_target()
    for candidate in params.candidates:
        run = RunPlan.of(plan.run_parameters(candidate))  # as `aibatch eval` planned it
        if run.nothing_to_do:
            logger.info("%s: every sampled row is answered already", candidate.name)
            continue
        run.api = target
        run.hand_on()
        try:
            await process_rows(run.params)
        except Exception as error:  # scored as it stands: unanswered rows count as wrong
            logger.warning("%s did not answer every sampled row: %s", candidate.name, error)
    report = plan.score()
    result = report.as_dict()
    key = artifact_key(f"aibatch-eval-{plan.spec.job}")
    await publish_scores(
        key, result["models"],
        f"{plan.spec.job}: accuracy on {len(plan.sample_ids)} rows with known answers "
        f"(target {params.target:.0%}); recommended: {report.recommended or 'none'}",
    )  # fmt: skip
    logger.info("Recommended: %s", report.recommended or "none reaches the target")
    return result
