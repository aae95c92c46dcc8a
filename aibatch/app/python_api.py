"""aibatch from Python (a notebook, a script): `aibatch.run(rows, ...)` and
`aibatch.read_results(output, job)`.

`run` is `aibatch run` without the terminal: the same plan (input checked first), the same
flow, the same simulator when there is no key, the same output directory, resume and lock.
It returns the answers as a DataFrame in the input's order, with the failures as
`.attrs["failures"]`, and raises what the command would exit with (BadInput, RunStopped,
...), except that failed rows are a warning: the others' answers are returned. A DataFrame
given as rows is kept in the output directory under a name made from its content, so
calling again with the same frame resumes instead of asking again.

Jupyter runs its own event loop in the main thread, where `asyncio.run` cannot start
another: the flow runs in a thread of its own, which works the same in a plain script.
"""

from __future__ import annotations

import asyncio
import hashlib
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from aibatch.errors import BadInput, RunIncomplete
from aibatch.jobs.spec import load_job_file
from aibatch.runs.parameters import RunParameters
from aibatch.runs.plan import RunPlan
from aibatch.storage.location import Location, location

DEFAULT_OUTPUT = "data/output"


def run(
    rows: pd.DataFrame | str | Path,
    *,
    job: str | None = None,
    job_file: str | Path | None = None,
    output: str | Path = DEFAULT_OUTPUT,
    model: str | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Ask the job's question of every row and return the answers, in the rows' order.

    `rows`: a DataFrame (its id column: `id`, or the job's `id_column`) or the path of a
    CSV, JSON, JSONL or Parquet file. `job`: a built-in job (`summarize`, `classify`);
    `job_file`: your own TOML job. `options`: any other run parameter by its name
    (`limit`, `sample`, `mode`, `budget_usd`, `escalate_to`, `labels`, ...). Rows answered
    before (same job, model and prompt version) are not asked again. The answers'
    failures (rows that failed for good) are in `.attrs["failures"]`.
    """
    given: dict[str, Any] = {"output_dir": str(output), "model": model, **options}
    if job is not None:
        given["job"] = job
    if job_file is not None:
        given["job_definition"] = load_job_file(job_file)
    if isinstance(rows, pd.DataFrame):
        given["input_path"] = str(_keep_frame(rows, str(output)))
    else:
        given["input_path"] = str(rows)
    try:
        params = RunParameters.model_validate(given)
    except ValueError as error:  # pydantic's, naming the parameter
        raise BadInput(str(error)) from error
    plan = RunPlan.build(params)
    if not plan.nothing_to_do:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="aibatch-run") as pool:
            try:
                pool.submit(_run_flow, plan).result()
            except RunIncomplete as incomplete:  # rows failed: the answers are still here
                warnings.warn(str(incomplete), RunIncompleteWarning, stacklevel=2)
    return _answers(plan)


class RunIncompleteWarning(UserWarning):
    """Some rows failed or were left unfinished: the answers returned lack them (their
    failures are in `.attrs["failures"]`); calling again asks those rows again."""


def read_results(output: str | Path = DEFAULT_OUTPUT, job: str = "summarize") -> pd.DataFrame:
    """Every result of a job in an output directory or bucket prefix (all models and prompt
    versions)."""
    frame = _read_dataset(location(output) / job / "results")
    if frame is None:
        raise FileNotFoundError(f"{output}/{job}/results: no results of {job} in {output}")
    return frame


def _read_dataset(directory: Location) -> pd.DataFrame | None:
    """A dataset folder (on a disk or in a bucket) as one frame; None when it has no file."""
    if not directory.files(".parquet"):
        return None
    # As pandas.read_parquet reads a folder (run_date as a category), from either medium.
    frame: pd.DataFrame = pq.read_table(directory.path, filesystem=directory.fs).to_pandas()
    return frame


def _keep_frame(frame: pd.DataFrame, output: str) -> Location:
    """The frame as a Parquet file in the output directory, named by its content: written
    once (atomically)."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    path = location(output) / "_aibatch" / "inputs" / f"rows-{digest.hexdigest()[:16]}.parquet"
    if not path.is_file():
        path.write_bytes(frame.to_parquet(index=False))
    return path


def _run_flow(plan: RunPlan) -> dict[str, Any]:
    """The flow on the plan, in this thread's own event loop; the simulator when there is
    no key, as `aibatch run`."""
    from aibatch.app.local import api_target, prefect_environment

    prefect_environment()
    from aibatch.flows.process_rows import process_rows

    with api_target() as target:
        plan.api = target
        plan.hand_on()
        return asyncio.run(process_rows(plan.params))


def _answers(plan: RunPlan) -> pd.DataFrame:
    """This run's answers (its job, model and prompt version; a cascade's escalated rows
    too) for the input's ids, in the input's order; failures in `.attrs["failures"]`."""
    spec, store = plan.spec, plan.store
    ids = plan.rows.frame["id"].astype(str).tolist()
    order = {row_id: position for position, row_id in enumerate(ids)}

    def of_this_run(directory: Location) -> pd.DataFrame:
        frame = _read_dataset(directory)
        if frame is None:
            return pd.DataFrame()
        mine = (frame["prompt_version"] == spec.prompt_version) & frame["id"].isin(order)
        by_model = frame["model"] == spec.model
        if "escalated_from" in frame:
            by_model |= frame["escalated_from"] == spec.model
        frame = frame[mine & by_model].drop_duplicates("id", keep="last")
        return frame.sort_values("id", key=lambda s: s.map(order)).reset_index(drop=True)

    answers = of_this_run(store.results_dir)
    failures = of_this_run(store.failures_dir)
    if not failures.empty and not answers.empty:
        failures = failures[~failures["id"].isin(set(answers["id"]))].reset_index(drop=True)
    answers.attrs["failures"] = failures
    return answers
