"""Input and output in an S3 bucket (moto's server on loopback): the promises of a local
output directory, kept with what an object store has instead of renames, appends and
flock. Kills, the lease, a second run, schema growth, and every reader on the bucket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pyarrow.parquet as pq
import pytest

import aibatch
from aibatch.engine.batches import BatchLedger
from aibatch.errors import LeaseLost, OutputLocked
from aibatch.flows.process_rows import process_rows
from aibatch.jobs.spec import load_job_file
from aibatch.output import crashpoints
from aibatch.output.committer import Committer
from aibatch.output.journal import journal_segments
from aibatch.output.lease import Lease
from aibatch.output.store import ResultStore
from aibatch.runs.parameters import RunParameters
from aibatch.simulator.process import SimulatorProcess
from aibatch.storage.location import location
from aibatch.testing.s3_server import S3ServerProcess
from tests.conftest import FlowSimulator, Simulate, sim_config
from tests.helpers import (
    ROOT,
    read_everywhere,
    record_figures,
    wait_for,
    write_invoices,
    write_tickets,
)
from tests.jobs.test_answer_columns import V1, V2, commit
from tests.output.test_committer import answer_without_commit

MAX_CONCURRENCY = 4
LATENCY_S = 0.1
JOURNAL_FLUSH_S = 2.0  # the journal's default interval in a bucket (output/journal.py)


def keys(bucket: str, prefix: str) -> list[str]:
    client = boto3.client("s3")
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def upload(bucket: str, key: str, path: Path) -> str:
    boto3.client("s3").upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def run_command(input_url: str, output_url: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "aibatch", "run", input_url, "--output", output_url,
        "--no-progress", "--max-concurrency", str(MAX_CONCURRENCY), "--chunk-size", "100",
        "--chunk-slots", "100", *extra,
    ]  # fmt: skip


@pytest.mark.reliability
@pytest.mark.usefixtures("release_leaked_slots")
def test_a_run_killed_twice_on_a_bucket_resumes_to_every_id_once(
    prefect_api: str, s3_server: S3ServerProcess, bucket: str, tmp_path: Path
) -> None:
    texts = write_tickets(tmp_path / "tickets.csv", 1_200)
    source = upload(bucket, "in/tickets.csv", tmp_path / "tickets.csv")
    output = f"s3://{bucket}/runs"
    results = location(output) / "summarize" / "results"
    with SimulatorProcess(sim_config(latency_ms=LATENCY_S * 1000)) as sim:
        env = {**os.environ, **s3_server.env, "ANTHROPIC_API_KEY": "test-key",
               "ANTHROPIC_BASE_URL": sim.base_url, "PREFECT_API_URL": prefect_api,
               "AIBATCH_COMMIT_EVERY_ROWS": "50"}  # fmt: skip
        command = run_command(source, output)

        # 1. Killed by itself right after a file reached the bucket, before its journal
        # segments were removed: the next run must not publish those rows again.
        killed = subprocess.run(
            command, env={**env, crashpoints.ENVIRONMENT_VARIABLE: "commit:results-published@3"},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        first = read_everywhere(results)  # pandas, pyarrow, duckdb, polars from the bucket
        assert len(first) == len(set(first)) == 150

        # 2. SIGKILL from outside at an arbitrary instant, journal objects in the bucket.
        journal = "runs/_aibatch/jobs/summarize/journal/"
        before = set(keys(bucket, journal))
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)  # fmt: skip
        try:
            assert wait_for(lambda: bool(set(keys(bucket, journal)) - before), 240, 0.05)
            time.sleep(1.3)  # between two journal flushes
            process.send_signal(signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate()
        assert process.returncode == -signal.SIGKILL
        second = read_everywhere(results)
        assert len(second) == len(set(second)) and set(first) <= set(second)
        assert len(second) < len(texts), "the kill came too late"

        # 3. The re-run takes over the dead run's lease at once (its process is gone),
        # folds in its journal and finishes: every id once.
        sim.configure(latency_ms=5, latency_sigma=0.0)
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert final.returncode == 0, final.stderr[-3000:]
        assert "is in use" not in final.stderr
        ids = read_everywhere(results)
        assert sorted(ids) == sorted(texts)
        repaid = sim.stats()["prompts_paid_repeated"]
        status = subprocess.run(
            [sys.executable, "-m", "aibatch", "status", output, "--json"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert status.returncode == 0, status.stderr[-2000:]
    (job,) = json.loads(status.stdout)["jobs"]
    assert (job["job"], job["results"], job["failures"]) == ("summarize", len(texts), 0)
    # Re-paid: the requests in flight at each kill, and for the outside kill the answers
    # of one journal interval and its PUT (at most MAX_CONCURRENCY / LATENCY_S a second; a
    # second for the PUT on a loaded machine) - not the 15 s between commits.
    in_one_flush = (JOURNAL_FLUSH_S + 1) * MAX_CONCURRENCY / LATENCY_S
    bound = 2 * MAX_CONCURRENCY + in_one_flush
    assert repaid <= bound, repaid
    figures = {"kills_survived": 2, "rows": len(texts), "rows_repaid": repaid, "bound": bound}
    record_figures("bucket-kills", figures)
    stored = keys(bucket, "runs/summarize/")
    assert stored and all(k.endswith(".parquet") and "/run_date=" in k for k in stored), stored
    assert not keys(bucket, journal), "journal segments left after the last run"
    assert not keys(bucket, "runs/_aibatch/lock"), "the lock left behind"
    # The notebook's way in: aibatch.read_results from the bucket.
    frame = aibatch.read_results(output, "summarize")
    assert frame["id"].is_unique and len(frame) == len(texts)


@pytest.mark.usefixtures("release_leaked_slots")
def test_a_second_run_on_the_same_bucket_output_exits_4_naming_the_holder(
    prefect_api: str, s3_server: S3ServerProcess, bucket: str, tmp_path: Path
) -> None:
    # 2,000 rows at 40 a second: the first run still holds the output when the second
    # starts, however slow this machine; then the simulator speeds it up.
    write_tickets(tmp_path / "tickets.csv", 2_000)
    source = upload(bucket, "in/tickets.csv", tmp_path / "tickets.csv")
    output = f"s3://{bucket}/shared"
    with SimulatorProcess(sim_config(latency_ms=100)) as sim:
        env = {**os.environ, **s3_server.env, "ANTHROPIC_API_KEY": "test-key",
               "ANTHROPIC_BASE_URL": sim.base_url, "PREFECT_API_URL": prefect_api}  # fmt: skip
        first = subprocess.Popen(
            run_command(source, output), env=env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert wait_for(lambda: bool(keys(bucket, "shared/_aibatch/lock")), 240, 0.05)
            second = subprocess.run(run_command(source, output), env=env, capture_output=True,
                                    text=True, timeout=300)  # fmt: skip
            sim.configure(latency_ms=5, latency_sigma=0.0)
            _, first_stderr = first.communicate(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
    assert second.returncode == 4, second.stderr[-2000:]
    assert f"s3://{bucket}/shared is in use by an aibatch run of the whole input (pid " in (
        second.stderr
    )
    assert "wait for it to finish or choose another --output" in second.stderr
    assert first.returncode == 0, first_stderr[-2000:]
    assert len(read_everywhere(location(output) / "summarize" / "results")) == 2_000


def test_the_store_lets_exactly_one_of_many_racing_runs_take_the_lock(bucket: str) -> None:
    where = location(f"s3://{bucket}/race/_aibatch/lock")
    for _ in range(5):
        leases = [Lease(where, f"racer {i}") for i in range(8)]
        outcomes = race(leases)
        winners = [lease for lease, held in zip(leases, outcomes, strict=True) if held is None]
        assert len(winners) == 1, outcomes
        winners[0].release()
        assert not keys(bucket, "race/_aibatch/lock")


def race(leases: list[Lease]) -> list[Any]:
    """Every lease's take() at the same instant, each from a thread of its own."""
    gate = threading.Barrier(len(leases))
    outcomes: list[Any] = [None] * len(leases)

    def take(i: int) -> None:
        gate.wait()
        outcomes[i] = leases[i].take()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(leases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_a_stalled_holder_loses_the_lease_and_may_publish_nothing_more(bucket: str) -> None:
    where = location(f"s3://{bucket}/stall/_aibatch/lock")
    stalled = Lease(where, "a run that stalls", term_s=1.0)
    assert stalled.take() is None
    stalled._stop.set()  # as if paused: no renewal from here on
    successor = Lease(where, "the next run", term_s=30.0)
    assert successor.take() is not None  # live: within its term
    time.sleep(3.2)  # past its term and the clock step, whole seconds as the store counts
    assert successor.take() is None  # taken over, by a conditional overwrite
    with pytest.raises(LeaseLost, match="lost the output's lock"):
        stalled.check()  # its renewal is refused: the version changed
    successor.release()
    stalled.release()  # deletes nothing: the lease is not its own any more


def test_a_bucket_that_does_not_exist_is_refused_before_any_call(
    s3_server: S3ServerProcess, bucket: str, tmp_path: Path
) -> None:
    write_tickets(tmp_path / "tickets.csv", 5)
    env = {**os.environ, **s3_server.env}
    env.pop("ANTHROPIC_API_KEY", None)
    done = subprocess.run(
        [sys.executable, "-m", "aibatch", "run", str(tmp_path / "tickets.csv"), "--output",
         "s3://no-such-bucket-here/out", "--no-progress"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "s3://no-such-bucket-here: no such bucket" in done.stderr


def test_a_json_jobs_new_property_widens_every_file_in_the_bucket(
    flow_simulator: FlowSimulator, bucket: str, tmp_path: Path
) -> None:
    flow_simulator(latency_ms=5)
    truth = write_invoices(tmp_path / "invoices.jsonl", 100)
    source = upload(bucket, "in/invoices.jsonl", tmp_path / "invoices.jsonl")
    output = f"s3://{bucket}/json"
    schema = json.loads((ROOT / "jobs" / "invoice.schema.json").read_text())
    older = {**schema, "properties": {k: v for k, v in schema["properties"].items()
                                      if k != "line_count"}}  # fmt: skip
    older["required"] = [k for k in schema.get("required", []) if k != "line_count"]
    for version, (name, body) in enumerate((("older", older), ("newer", schema)), start=1):
        (tmp_path / f"{name}.schema.json").write_text(json.dumps(body))
        job = (ROOT / "jobs" / "invoice-extract.toml").read_text()
        (tmp_path / f"{name}.toml").write_text(
            job.replace(
                'schema_file = "invoice.schema.json"', f'schema_file = "{name}.schema.json"'
            )
        )
        params = RunParameters.model_validate({
            "input_path": source, "output_dir": output, "chunk_size": 50,
            "job_definition": load_job_file(tmp_path / f"{name}.toml"),
        })  # fmt: skip
        summary = asyncio.run(process_rows(params))
        assert summary["ok"] == 100, (version, summary)

    results = location(output) / "invoice-extract" / "results"
    files = results.files(".parquet")
    assert len(files) >= 2  # one run's file or more each: the older ones rewritten, widened
    assert all("line_count" in pq.read_schema(f.path, filesystem=f.fs).names for f in files)
    ids = read_everywhere(results)  # every reader sees one schema, the older rows' null
    assert sorted(ids) == sorted(list(truth) * 2)
    frame = aibatch.read_results(output, "invoice-extract")
    newest = frame[frame["line_count"].notna()]
    assert set(newest["id"]) == set(truth)
    assert frame["line_count"].isna().sum() == 100
    assert all(truth[str(row.id)]["line_count"] == row.line_count for row in newest.itertuples())
    assert all(truth[str(row.id)]["total"] == row.total for row in frame.itertuples())


@pytest.mark.parametrize(
    "point", ["publish:renamed", "commit:results-published", "commit:published"]
)
def test_a_crash_at_each_commit_point_in_a_bucket_publishes_every_row_once(
    simulate: Simulate, bucket: str, point: str
) -> None:
    """The bucket's crash points (a file PUT, before the failures, before the journal's
    segments are removed): the next run publishes what only the journal holds, once."""
    server = simulate()
    ids = [f"T{i}" for i in range(6)]
    carried = pd.DataFrame(index=pd.Index(ids, name="id"))
    store = ResultStore(f"s3://{bucket}/out", "summarize")
    with store.locked():
        committer = Committer.open(store, "crashed", carried)
        answer_without_commit(server, committer, "crashed", len(ids))
        with crashpoints.armed(point), pytest.raises(crashpoints.SimulatedCrash):
            asyncio.run(committer.commit())
    with store.locked():
        again = Committer.open(store, "next", carried)
        again.fold_in()
        again.close()
    assert sorted(read_everywhere(store.results_dir)) == ids
    assert not journal_segments(store.journal_dir)


def test_shards_share_a_bucket_output_but_a_whole_input_run_excludes_them(bucket: str) -> None:
    out = f"s3://{bucket}/shared"
    one, two = ResultStore(out, "summarize", "1-of-2"), ResultStore(out, "summarize", "2-of-2")
    whole = ResultStore(out, "summarize")
    with one.locked(), two.locked():  # two shards at once: fine
        with pytest.raises(OutputLocked, match="in use by aibatch shard '1-of-2' "):
            refused(whole)
        with pytest.raises(OutputLocked, match="in use by aibatch shard '2-of-2' "):
            refused(ResultStore(out, "summarize", "2-of-2"))
    with whole.locked(), pytest.raises(OutputLocked, match="an aibatch run of the whole input"):
        refused(one)
    assert not keys(bucket, "shared/_aibatch/")  # every lease given back


def refused(store: ResultStore) -> None:
    with store.locked():
        raise AssertionError(f"{store.root} was not refused")


def test_batch_mode_keeps_its_ledger_in_the_bucket(
    flow_simulator: FlowSimulator, bucket: str, tmp_path: Path
) -> None:
    flow_simulator(latency_ms=5)
    texts = write_tickets(tmp_path / "tickets.csv", 60)
    output = f"s3://{bucket}/batch"
    params = RunParameters(
        input_path=upload(bucket, "in/tickets.csv", tmp_path / "tickets.csv"),
        output_dir=output, mode="batch", batch_poll_max_s=0.05,
    )  # fmt: skip
    assert asyncio.run(process_rows(params))["ok"] == 60
    ledger = BatchLedger(location(output) / "_aibatch" / "batches").load()
    assert ledger and all(s.state == "collected" for s in ledger), ledger
    assert sorted(read_everywhere(location(output) / "summarize" / "results")) == sorted(texts)


def test_a_crash_while_widening_in_a_bucket_leaves_every_file_whole(bucket: str) -> None:
    """Schema growth's crash point in a bucket: each file overwritten in one PUT, so a crash
    between two leaves some old and some new, none half; the next run finishes."""
    store = ResultStore(f"s3://{bucket}/grow", "invoices")
    for batch in ("A", "B", "C"):
        commit(store, V1, {batch: {"total": 1.0}})
    with pytest.raises(crashpoints.SimulatedCrash), crashpoints.armed("widen:replaced", 2):
        commit(store, V2, {"D": {"total": 4.0, "due": "2026-01-01"}})
    files = store.results_dir.files(".parquet")
    widened = [f for f in files if "due" in pq.read_schema(f.path, filesystem=f.fs).names]
    assert (len(files), len(widened)) == (3, 2)
    commit(store, V2, {"D": {"total": 4.0, "due": "2026-01-01"}})
    files = store.results_dir.files(".parquet")
    assert all("due" in pq.read_schema(f.path, filesystem=f.fs).names for f in files)
    assert sorted(read_everywhere(store.results_dir)) == ["A", "B", "C", "D"]
