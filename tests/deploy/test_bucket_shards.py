"""Shards on workers that share only a bucket: each worker in a working directory of its
own, the input, the shards' parts, the journals and the results all in the bucket."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from aibatch.children import stop_child
from aibatch.storage.location import location
from aibatch.testing.prefect_server import PrefectServerProcess
from aibatch.testing.s3_server import S3ServerProcess
from tests.deploy.conftest import ROOT, child_runs, run_command, start_deployment_run
from tests.helpers import read_everywhere, write_tickets

POOL = "aibatch-bucket"


@pytest.fixture
def bucket_workers(
    worker_env: dict[str, str], deployed: str, s3_server: S3ServerProcess, tmp_path: Path
) -> Iterator[tuple[dict[str, str], list[Path]]]:
    """Three workers on a pool of their own, one flow run at a time each (the parent takes
    one, so the two shards run on the other two), each started in its own empty folder."""
    env = {**worker_env, **s3_server.env, "PREFECT_WORKER_QUERY_SECONDS": "2"}
    run_command("prefect", "work-pool", "create", POOL, "--type", "process", "--overwrite",
                env=env)  # fmt: skip
    run_command("prefect", "--no-prompt", "deploy", "--all", "--prefect-file",
                str(ROOT / "tests" / "deploy" / "bucket-workers.yaml"), env=env)  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    logs = []
    for name in ("bucket-a", "bucket-b", "bucket-c"):
        home = tmp_path / name
        home.mkdir()
        log = home.parent / f"{name}.log"
        with log.open("wb") as sink:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL,
                 "--name", name, "--limit", "1"],
                env=env, cwd=home, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            ))  # fmt: skip
        logs.append(log)
    try:
        yield env, logs
    finally:
        for worker in workers:
            stop_child(worker, grace_s=30)


def test_two_shards_on_two_workers_that_share_only_the_bucket_fill_one_dataset(
    prefect_server: PrefectServerProcess,
    s3_server: S3ServerProcess,
    bucket_workers: tuple[dict[str, str], list[Path]],
    tmp_path: Path,
) -> None:

    _, logs = bucket_workers
    bucket = s3_server.new_bucket()
    texts = write_tickets(tmp_path / "tickets.csv", 300)
    client = boto3.client("s3", **client_options(s3_server))
    client.upload_file(str(tmp_path / "tickets.csv"), bucket, "in/tickets.csv")
    params = {
        "input_path": f"s3://{bucket}/in/tickets.csv",
        "output_dir": f"s3://{bucket}/out",
        "chunk_size": 50,
        "shards": 2,
        "shard_deployment": "aibatch-rows/bucket-shard",
    }
    parent = asyncio.run(
        start_deployment_run(prefect_server.api_url, "aibatch-rows/bucket-rows", params)
    )
    assert parent.state.is_completed(), parent.state

    shards = child_runs(prefect_server.api_url, parent.id)
    assert len(shards) == 2 and all(r.state.is_completed() for r in shards)
    # Each shard read its part from the bucket, and ran on a worker of its own.
    parts = [r.parameters["params"]["input_path"] for r in shards]
    assert all(p.startswith(f"s3://{bucket}/out/_aibatch/shard-inputs/") for p in parts), parts
    ran_on = {str(r.id): [log.stem for log in logs if str(r.id) in log.read_text()]
              for r in shards}  # fmt: skip
    assert all(len(workers) == 1 for workers in ran_on.values()), ran_on
    assert len({workers[0] for workers in ran_on.values()}) == 2, ran_on
    # One dataset, every row once, readable by pandas, pyarrow, duckdb and polars.
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3_server.env.items():
            env.setenv(name, value)
        ids = read_everywhere(location(f"s3://{bucket}/out") / "summarize" / "results")
        assert sorted(ids) == sorted(texts)
        stored = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        left = [k for k in stored if "/_aibatch/" in k and not k.endswith("definition.json")]
    assert not left, left  # no journal, part or lock left behind
    # Nothing of the run on the workers' disks.
    for log in logs:
        assert not any((log.parent / log.stem).iterdir()), log.stem


def client_options(s3_server: S3ServerProcess) -> dict[str, str]:
    env = s3_server.env
    return {"endpoint_url": env["AWS_ENDPOINT_URL"], "region_name": env["AWS_DEFAULT_REGION"],
            "aws_access_key_id": env["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}  # fmt: skip
