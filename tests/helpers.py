"""Helpers shared by the flow, reliability and deployment tests."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from aibatch.cost.budget import WorstCase
from aibatch.cost.pricing import PriceBook
from aibatch.jobs.spec import JobSpec
from aibatch.storage.location import Location

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "tickets.csv"
FIGURES = ROOT / "ci-artifacts" / "reliability"


def write_tickets(path: Path, count: int, long_ids: int = 0, start: int = 0) -> dict[str, str]:
    """Sample tickets `start`..`start + count`, plus `long_ids` too long for a small context
    window (the simulator is then configured with one); returns text by id."""
    with SAMPLE.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[start : start + count]
    for i in range(long_ids):
        rows.append({**rows[0], "id": f"LONG-{i}", "text": f"Export {i} fails. " * 400})
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return {row["id"]: row["text"] for row in rows}


def summary_belongs_to(summary: str, ticket: str) -> bool:
    """The simulator's summaries are sentences of the ticket: a mixed-up answer shows."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", summary) if s]
    return bool(sentences) and all(s in ticket for s in sentences)


def read_everywhere(results: Path | Location) -> list[str]:
    """Ids in a dataset as pandas, pyarrow, duckdb and polars read it (they must agree); a
    dataset in a bucket as each reads one (see the README's "Output in a bucket")."""
    if isinstance(results, Location) and results.bucket is not None:
        return _read_bucket_everywhere(results)
    results = Path(results)
    if not any(results.rglob("*.parquet")):
        return []
    by_pandas = pd.read_parquet(results)["id"].tolist()
    by_pyarrow = ds.dataset(results, partitioning="hive").to_table(columns=["id"])
    pattern = str(results / "**" / "*.parquet")
    relation = duckdb.sql(f"select id from read_parquet('{pattern}', hive_partitioning = true)")
    assert relation is not None
    by_duckdb = [row[0] for row in relation.fetchall()]
    by_polars = pl.read_parquet(pattern, hive_partitioning=True)["id"].to_list()
    return _agreed(by_pandas, by_pyarrow.column("id").to_pylist(), by_duckdb, by_polars)


def _agreed(*readings: list[str]) -> list[str]:
    """The ids every reader read, once they are shown to be the same."""
    first, *others = (sorted(ids) for ids in readings)
    assert all(other == first for other in others), [len(ids) for ids in readings]
    return readings[0]


def _read_bucket_everywhere(results: Location) -> list[str]:
    if not results.files(".parquet"):
        return []
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    s3 = pafs.S3FileSystem(endpoint_override=endpoint, region="us-east-1")
    key = results.url.removeprefix("s3://")
    by_pandas = pd.read_parquet(key, filesystem=s3)["id"].tolist()
    dataset = ds.dataset(key, filesystem=s3, partitioning="hive")
    by_pyarrow = dataset.to_table(columns=["id"])
    # duckdb scans the bucket's dataset through Arrow (its httpfs extension is a download
    # this machine cannot make; with it, read_parquet('s3://...') reads the same files).
    relation = duckdb.sql("select id from dataset")
    assert relation is not None
    by_duckdb = [row[0] for row in relation.fetchall()]
    by_polars = pl.read_parquet(
        f"{results.url}/**/*.parquet", hive_partitioning=True,
        storage_options={"aws_endpoint_url": endpoint, "aws_region": "us-east-1",
                         "aws_allow_http": "true"},
    )["id"].to_list()  # fmt: skip
    return _agreed(by_pandas, by_pyarrow.column("id").to_pylist(), by_duckdb, by_polars)


def wait_for(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return False


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Keep a reliability test's figures (kills survived, rows checked, ...) for the report."""
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"{name}: {json.dumps(figures, sort_keys=True)}")


def job_dataset(output: Path, name: str = "results", job: str | None = None) -> Path:
    """OUTPUT/<job>/<name>: the given job's, else the only job's in `output` (the default
    job's path when there is none yet); several jobs need `job`."""
    if job is not None:
        return output / job / name
    found = sorted(p for p in output.glob(f"*/{name}") if p.parent.name != "_aibatch")
    if len(found) > 1:
        raise AssertionError(f"{output} holds several jobs ({found}): say which")
    return found[0] if found else output / "summarize" / name


def job_state(output: Path, job: str = "summarize") -> Path:
    """OUTPUT/_aibatch/jobs/<job>: a job's journal and staging area."""
    return output / "_aibatch" / "jobs" / job


INVOICE_SCHEMA = json.loads((ROOT / "jobs" / "invoice.schema.json").read_text())
# The fields the simulator reads off an invoice's text (it does not count line items).
INVOICE_SCALARS = [
    "invoice_number",
    "vendor",
    "issue_date",
    "due_date",
    "currency",
    "total",
    "paid",
]
LINE_ITEM = pa.struct([("description", pa.string()), ("quantity", pa.int64()),
                       ("unit_price", pa.float64())])  # fmt: skip


def write_invoices(path: Path, count: int) -> dict[str, dict[str, Any]]:
    """The first `count` example invoices, and their true fields by id."""
    lines = (ROOT / "data" / "invoices.jsonl").read_text(encoding="utf-8").splitlines()[:count]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    truths = (ROOT / "data" / "invoices-truth.jsonl").read_text(encoding="utf-8").splitlines()
    return {t["id"]: t for t in map(json.loads, truths[:count])}


def assert_typed_and_true(results: Path, truth: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Every row's typed columns: Arrow types from the schema, values valid under it and
    equal to its own invoice's."""
    schema = ds.dataset(results, format="parquet", partitioning="hive").schema
    assert schema.field("issue_date").type == pa.date32()
    assert schema.field("currency").type == pa.dictionary(pa.int32(), pa.string())
    assert schema.field("total").type == pa.float64()
    assert schema.field("paid").type == pa.bool_()
    assert schema.field("line_count").type == pa.int64()
    assert schema.field("line_items").type == pa.list_(LINE_ITEM)
    frame = pd.read_parquet(results).set_index("id")
    assert isinstance(frame["currency"].dtype, pd.CategoricalDtype)
    for invoice_id, row in frame.iterrows():
        answer = json.loads(row["result"])
        jsonschema.validate(answer, INVOICE_SCHEMA)
        true = truth[str(invoice_id)]
        for name in INVOICE_SCALARS:
            value = row[name]
            if name.endswith("_date"):
                value = value.isoformat()
            assert value == true[name], (invoice_id, name, value, true[name])
            assert answer[name] == true[name]
        assert len(row["line_items"]) == len(answer["line_items"])
    return frame


def assert_stopped_within_one_request(
    results: pd.DataFrame, cap: float, spec: JobSpec, batch: bool
) -> None:
    """A budget's stop: never past the cap, and within one request's worst case of it."""
    prompts = (results["input_tokens"] + results["cache_read_input_tokens"]
               + results["cache_creation_input_tokens"])  # fmt: skip
    one_request = WorstCase(PriceBook.load(), spec.model, batch=batch)
    spent = float(results["cost_usd"].sum())
    assert cap - one_request.cost_usd(int(prompts.max()), spec.max_tokens()) <= spent <= cap
