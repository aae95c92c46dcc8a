"""Plan the run: read and validate the input rows, render each row's prompt."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from aibatch.runs.parameters import RunParameters
from aibatch.runs.plan import RunPlan


@task(name="load-rows", cache_policy=NONE, persist_result=False)
def plan_run_task(params: RunParameters) -> RunPlan:
    """The run's plan: the one `aibatch run` made in this process, else a new one (any
    problem with the input fails here, before a single API call)."""
    return RunPlan.of(params)
