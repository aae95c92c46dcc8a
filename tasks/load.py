"""Load and validate the input tickets."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from aibatch.loader import Tickets, load_tickets


@task(name="load-tickets", cache_policy=NONE, persist_result=False)
def load_tickets_task(path: str, id_column: str, text_column: str) -> Tickets:
    """Read the input file; any problem fails here, before a single API call."""
    return load_tickets(path, id_column, text_column)
