"""Fan one input out as shard flow runs that several workers pick up.

The parent folds in what crashed runs journaled, drops done ids, writes the pending rows
as N Parquet parts (outside the dataset roots), and starts one run of the shard deployment
per part. Each shard is an ordinary `process_rows` run on its part, writing into the
same output directory under its own shard lock and journal; every shard draws on the same
server-side limits (chunk slots, in-flight, shared rate), so N workers together stay under
what one would. Re-running the parent resumes: done ids are never sent again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from prefect import get_run_logger
from prefect.deployments import arun_deployment

from aibatch.errors import RunIncomplete
from aibatch.output.committer import new_run_id
from aibatch.prefect_server.artifacts import artifact_key, publish_summary
from aibatch.runs.builder import open_committer
from aibatch.runs.plan import RunPlan
from aibatch.storage.location import Location


def write_shard_inputs(
    pending: pd.DataFrame, directory: Location, shards: int, source_name: str
) -> list[str]:
    """The pending rows in `shards` nearly equal Parquet parts, each written atomically
    beside the output's state (so a worker that shares only the bucket reads its part);
    named after the input, so that runs and chunks of a shard say which input they came
    from. Each part's absolute path or URL."""
    paths = []
    for index, rows in enumerate(np.array_split(np.arange(len(pending)), shards), start=1):
        part = pending.iloc[rows]
        path = directory / f"{source_name}.shard-{index}-of-{shards}.parquet"
        path.write_parquet(pa.Table.from_pandas(part, preserve_index=False))
        paths.append(path.absolute)
    return paths


async def fan_out(plan: RunPlan) -> dict[str, Any]:
    logger = get_run_logger()
    params, spec = plan.params, plan.spec
    run_id = new_run_id()
    store = plan.store  # the whole output: the parent is no shard
    frame = plan.rows.frame
    with store.locked():  # briefly, alone: recover every crashed run's journal first
        committer = open_committer(plan, run_id)
        recovered = committer.fold_in()
        committer.close()
        done = store.settled_ids(spec.model, spec.prompt_version)
    pending = plan.pending_after(done).rows
    shards = min(params.shards, max(1, len(pending)))
    shard_dir = store.state_dir / "shard-inputs" / run_id
    paths = (
        write_shard_inputs(pending, shard_dir, shards, params.input_name) if len(pending) else []
    )
    logger.info(
        "%d rows, %d already done; %d pending in %d shards of %s",
        len(frame), len(done & set(frame["id"])), len(pending), len(paths),
        params.shard_deployment,
    )  # fmt: skip

    async def run_shard(index: int, path: str) -> Any:
        name = f"{index}-of-{len(paths)}"
        child = params.model_copy(update={
            "input_path": path, "shards": 1, "shard": name, "show_progress": False,
            "id_column": "id", "text_column": "text",  # the part's names, as loaded
            "limit": None, "sample": None,  # the parts hold the trial's rows already
        })  # fmt: skip
        return await arun_deployment(
            params.shard_deployment,
            # by alias: the server checks parameters against the schema it published, where
            # a json job's schema is `schema` (its Python name is json_schema)
            parameters={"params": child.model_dump(mode="json", by_alias=True)},
            timeout=None,  # wait for it: this run ends when every shard has
        )

    runs = await asyncio.gather(*(run_shard(i, p) for i, p in enumerate(paths, start=1)))
    outcome = [{"shard": run.name, "state": run.state.name if run.state else "unknown",
                "flow_run_id": str(run.id)} for run in runs]  # fmt: skip
    failed = [o for o in outcome if o["state"] != "Completed"]
    summary = {"run_id": run_id, "job": spec.job, "model": spec.model, "shards": len(paths),
               "rows": len(pending), "already_done": len(done & set(frame["id"])),
               "recovered": recovered, "shards_failed": len(failed)}  # fmt: skip
    key = artifact_key(f"aibatch-{spec.job}-{params.input_name}")
    await publish_summary(f"{key}-shards", summary, f"aibatch sharded run {run_id}")
    if failed:
        raise RunIncomplete(
            f"{len(failed)} of {len(paths)} shards did not complete "
            f"({', '.join(o['shard'] + ': ' + o['state'] for o in failed)}); everything done "
            "is saved, re-run to continue"
        )
    shard_dir.remove_tree()
    return summary
