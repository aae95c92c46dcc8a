"""A json job's typed columns: JSON Schema to Arrow, strict checks when an answer arrives,
and a results dataset whose schema grows (a property added) but never changes a type."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aibatch.errors import SchemaConflict, SchemaError
from aibatch.jobs.answer_columns import ENUM_TYPE, AnswerColumns
from aibatch.jobs.outputs import InvalidModelOutput, JsonOutput
from aibatch.output import crashpoints
from aibatch.output.committer import Committer
from aibatch.output.records import OkRecord
from aibatch.output.store import ResultStore
from tests.helpers import read_everywhere

EVERY_KIND: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "seen_at": {"type": "string", "format": "date-time"},
        "due": {"type": "string", "format": "date"},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "count": {"type": "integer"},
        "total": {"type": "number"},
        "paid": {"type": "boolean"},
        "maybe": {"type": ["integer", "null"]},
        "either": {"anyOf": [{"type": "number"}, {"type": "null"}]},
        "mixed": {"anyOf": [{"type": "number"}, {"type": "string"}]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["city", "zip"],
        },
        "anything": {},
    },
    "required": ["name"],
    "$defs": {
        "line": {
            "type": "object",
            "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
            "required": ["sku", "quantity"],
        }
    },
}


def test_each_json_schema_type_has_its_arrow_column() -> None:
    schema = JsonOutput(EVERY_KIND).columns.schema
    line = pa.struct([("sku", pa.string()), ("quantity", pa.int64())])
    assert dict(zip(schema.names, schema.types, strict=True)) == {
        "name": pa.string(),
        "seen_at": pa.timestamp("us", tz="UTC"),
        "due": pa.date32(),
        "currency": ENUM_TYPE,
        "count": pa.int64(),
        "total": pa.float64(),
        "paid": pa.bool_(),
        "maybe": pa.int64(),
        "either": pa.float64(),
        "mixed": pa.string(),  # two types: the value's JSON
        "tags": pa.list_(pa.string()),
        "lines": pa.list_(line),
        "address": pa.struct([("city", pa.string()), ("zip", pa.string())]),
        "anything": pa.string(),
    }


def test_a_property_named_like_one_of_aibatchs_columns_is_refused() -> None:
    schema = {"type": "object", "properties": {"model": {"type": "string"}}}
    with pytest.raises(SchemaError, match=r"property 'model'.*rename the property"):
        JsonOutput(schema)


INVOICE = {
    "type": "object",
    "properties": {
        "number": {"type": "string"},
        "issued_at": {"type": "string", "format": "date-time"},
        "count": {"type": "integer"},
    },
    "required": ["number", "issued_at", "count"],
}


@pytest.mark.parametrize(
    ("answer", "fault"),
    [
        ({"number": "A", "issued_at": "yesterday", "count": 1}, "issued_at"),
        ({"number": "A", "issued_at": "2026-01-02T03:04:05Z", "count": 2**70}, "64-bit"),
    ],
)
def test_an_answer_its_columns_cannot_hold_is_invalid_and_asked_again(
    answer: dict[str, Any], fault: str
) -> None:
    with pytest.raises(InvalidModelOutput, match=fault):
        JsonOutput(INVOICE).parse(json.dumps(answer))


def test_answers_become_typed_arrays_and_an_earlier_definitions_misfit_is_null() -> None:
    columns = JsonOutput(INVOICE).columns
    good = '{"number": "A-1", "issued_at": "2026-01-02T04:04:05+01:00", "count": 3}'
    earlier = '{"number": 7, "issued_at": "not a time", "count": "three"}'
    arrays = columns.arrays([good, earlier, None])
    assert arrays["number"].to_pylist() == ["A-1", "7", None]  # a string column holds JSON
    assert arrays["issued_at"].to_pylist() == [
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), None, None
    ]  # fmt: skip
    assert arrays["count"].to_pylist() == [3, None, None]


def commit(store: ResultStore, json_schema: dict[str, Any], answers: dict[str, Any]) -> None:
    """One run of a json job over `answers` (by id), committed into `store`."""
    columns = AnswerColumns.of(json_schema)
    carried = pd.DataFrame({"total": ["input total"] * len(answers)},
                           index=pd.Index(list(answers), name="id"))  # fmt: skip
    carried = carried.rename(columns=lambda c: f"input_{c}" if c in columns.schema.names else c)

    async def run() -> None:
        with store.locked():
            committer = Committer.open(store, f"run-{len(answers)}", carried, columns)
            for ticket_id, answer in answers.items():
                committer.record(OkRecord({
                    "kind": "ok", "id": ticket_id, "job": store.job, "model": "m",
                    "prompt_version": "v", "result": json.dumps(answer), "input_tokens": 9,
                    "output_tokens": 4, "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0, "attempts": 1, "latency_ms": 12.5,
                    "cost_usd": 0.0001, "mode": "realtime", "run_id": f"run-{len(answers)}",
                    "completed_at": datetime.now(UTC).isoformat(),
                }))  # fmt: skip
            await committer.commit()
            committer.close()

    asyncio.run(run())


V1 = {"type": "object", "properties": {"total": {"type": "number"}}}
V2 = {"type": "object", "properties": {"total": {"type": "number"},
                                        "due": {"type": "string", "format": "date"}}}  # fmt: skip


def test_a_property_added_is_a_new_column_older_rows_null_in_every_reader(
    tmp_path: Path,
) -> None:
    store = ResultStore(tmp_path / "out", "invoices")
    commit(store, V1, {"A": {"total": 1.5}, "B": {"total": 2.0}})
    commit(store, V2, {"C": {"total": 3.0, "due": "2026-12-24"}})

    results = pd.read_parquet(store.results_dir).set_index("id").sort_index()
    assert results["total"].tolist() == [1.5, 2.0, 3.0]
    assert results["due"].tolist()[:2] == [None, None]
    assert results.loc["C", "due"] == date(2026, 12, 24)
    assert set(results["input_total"]) == {"input total"}  # the input's own, renamed
    # Every file has every column: a reader that opens any one file first sees them all.
    files = sorted(store.results_dir.local.rglob("*.parquet"))
    assert len(files) == 2
    assert all("due" in pq.read_schema(f).names for f in files)
    assert sorted(read_everywhere(store.results_dir)) == ["A", "B", "C"]


def test_a_property_whose_type_changed_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    store = ResultStore(tmp_path / "out", "invoices")
    commit(store, V1, {"A": {"total": 1.5}})
    before = {p: p.read_bytes() for p in store.results_dir.local.rglob("*.parquet")}
    retyped = {"type": "object", "properties": {"total": {"type": "string"}}}
    with pytest.raises(SchemaConflict, match="property 'total' would be stored as string, but "
                                             "the dataset holds it as double"):  # fmt: skip
        commit(store, retyped, {"B": {"total": "1.50"}})
    assert {p: p.read_bytes() for p in store.results_dir.local.rglob("*.parquet")} == before


def test_a_crash_while_widening_leaves_every_file_whole_and_the_next_run_finishes(
    tmp_path: Path,
) -> None:
    store = ResultStore(tmp_path / "out", "invoices")
    for batch in ("A", "B", "C"):
        commit(store, V1, {batch: {"total": 1.0}})
    with pytest.raises(crashpoints.SimulatedCrash), crashpoints.armed("widen:replaced", 2):
        commit(store, V2, {"D": {"total": 4.0, "due": "2026-01-01"}})
    widened = [
        f for f in store.results_dir.local.rglob("*.parquet") if "due" in pq.read_schema(f).names
    ]
    assert len(widened) == 2  # two of three rewritten, the third untouched, none half
    # Until the next run, files of both shapes: pandas and duckdb read them (polars needs
    # missing_columns="insert"); no row is lost or doubled.
    assert sorted(pd.read_parquet(store.results_dir)["id"]) == ["A", "B", "C"]
    pattern = str(store.results_dir / "**" / "*.parquet")
    relation = duckdb.sql(f"select id from read_parquet('{pattern}')")
    assert relation is not None and len(relation.fetchall()) == 3

    commit(store, V2, {"D": {"total": 4.0, "due": "2026-01-01"}})
    assert all("due" in pq.read_schema(f).names for f in store.results_dir.local.rglob("*.parquet"))
    assert sorted(read_everywhere(store.results_dir)) == ["A", "B", "C", "D"]
