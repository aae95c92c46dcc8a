"""Load and validate the input rows, and render each row's prompt."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from aibatch.jobs.prompts import load_job_rows
from aibatch.jobs.templates import PromptTemplate
from aibatch.sources.loader import Tickets


@task(name="load-rows", cache_policy=NONE, persist_result=False)
def load_rows_task(
    path: str, prompt: str, id_column: str, text_column: str
) -> tuple[Tickets, list[str]]:
    """Read the input file and render its prompts (`prompt`: the job's template); any
    problem fails here, before a single API call."""
    return load_job_rows(path, PromptTemplate(prompt), id_column, text_column)
