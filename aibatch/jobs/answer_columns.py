"""A json job's answer as typed columns: one Arrow column per top-level property.

The results of a json job keep the answer as JSON text in `result`, and beside it one column
per top-level property of the job's schema, named after it and typed from it, so
`pd.read_parquet("OUTPUT/JOB/results")` gives numbers as numbers and dates as dates:

    string                     string
    string, format date-time   timestamp[us, UTC]
    string, format date        date32
    string with an enum        dictionary<int32, string> (a pandas category)
    integer / number / boolean int64 / float64 / bool
    array                      list<item type>
    object with properties     struct<property types>
    anything else              string holding the value's JSON (a mixed anyOf, an untyped
                               value, an object with no properties)

A property that may be null (`"type": ["integer", "null"]`, or an `anyOf` with a null
branch) takes its other branch's type; every column is nullable.

An answer is converted strictly when it arrives (`AnswerColumns.check`): a value that cannot
be stored as its column's type (a `date-time` that does not parse, an integer past int64) is
an invalid answer, asked again, never a commit that fails later. Publishing converts leniently
(`AnswerColumns.arrays`): a journaled answer of an earlier definition that does not fit today's
columns keeps its JSON in `result` and nulls in the typed columns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from aibatch.errors import ColumnError
from aibatch.result_columns import OWN_COLUMNS

INT64_RANGE = range(-(2**63), 2**63)
ENUM_TYPE = pa.dictionary(pa.int32(), pa.string())


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    name = ref.rsplit("/", 1)[-1]
    target = defs.get(name)
    return _resolve(target, defs) if isinstance(target, Mapping) else {}


def _without_null(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The one non-null shape a node allows, or None where it allows several."""
    node = _resolve(node, defs)
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return {**node, "type": kinds[0]} if len(kinds) == 1 else None
    for combinator in ("anyOf", "allOf"):
        branches = node.get(combinator)
        if isinstance(branches, list):
            shapes = [_resolve(b, defs) for b in branches if isinstance(b, Mapping)]
            shapes = [s for s in shapes if s.get("type") != "null"]
            return shapes[0] if len(shapes) == 1 else None
    return node


def arrow_type(
    node: Mapping[str, Any], defs: Mapping[str, Any], *, top: bool = False
) -> pa.DataType:
    """The Arrow type that holds values of a JSON Schema node (see the module's table)."""
    shape = _without_null(node, defs)
    if shape is None:
        return pa.string()
    for key in ("enum", "const"):
        if key in shape:
            values = shape[key] if key == "enum" else [shape[key]]
            values = [v for v in values if v is not None]
            if values and all(isinstance(v, str) for v in values):
                # Dictionary-encoded at the top level only: nested dictionaries are not
                # something every reader handles.
                return ENUM_TYPE if top and key == "enum" else pa.string()
            if values and all(isinstance(v, bool) for v in values):
                return pa.bool_()
            if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                return pa.int64()
            return pa.string()
    kind = shape.get("type")
    if kind == "string":
        return {"date-time": pa.timestamp("us", tz="UTC"), "date": pa.date32()}.get(
            shape.get("format", ""), pa.string()
        )
    if kind == "integer":
        return pa.int64()
    if kind == "number":
        return pa.float64()
    if kind == "boolean":
        return pa.bool_()
    if kind == "array":
        items = shape.get("items")
        return pa.list_(arrow_type(items, defs) if isinstance(items, Mapping) else pa.string())
    if kind == "object" and isinstance(shape.get("properties"), Mapping) and shape["properties"]:
        return pa.struct(
            [pa.field(name, arrow_type(sub, defs)) for name, sub in shape["properties"].items()]
        )
    return pa.string()


def answer_schema(json_schema: Mapping[str, Any]) -> pa.Schema:
    """The typed columns of a json job: one per top-level property, in the schema's order;
    ColumnError for a property named like one of aibatch's own columns."""
    defs = {**json_schema.get("definitions", {}), **json_schema.get("$defs", {})}
    properties = _resolve(json_schema, defs).get("properties") or {}
    fields = []
    for name, node in properties.items():
        if name in OWN_COLUMNS:
            raise ColumnError(
                f"schema: property {name!r} would be stored in a column of that name, which "
                "aibatch's own columns use; rename the property"
            )
        if not name.strip():
            raise ColumnError("schema: a property needs a name to be a column")
        fields.append(pa.field(name, arrow_type(node, defs, top=True)))
    return pa.schema(fields)


def _to_python(value: Any, kind: pa.DataType, where: str) -> Any:
    """`value` (from JSON) as the Python value pyarrow stores in `kind`; ValueError if it
    cannot be."""
    if value is None:
        return None
    if pa.types.is_dictionary(kind) or pa.types.is_string(kind):
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if pa.types.is_boolean(kind):
        if isinstance(value, bool):
            return value
    elif pa.types.is_int64(kind):
        if isinstance(value, int) and not isinstance(value, bool):
            if value not in INT64_RANGE:
                raise ValueError(f"{where}: {value} does not fit a 64-bit integer")
            return value
        if isinstance(value, float) and value.is_integer() and int(value) in INT64_RANGE:
            return int(value)  # 3.0 is an integer in JSON Schema
    elif pa.types.is_float64(kind):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif pa.types.is_timestamp(kind):
        if isinstance(value, str):
            moment = datetime.fromisoformat(value)  # ValueError names the text
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    elif pa.types.is_date32(kind):
        if isinstance(value, str):
            return date.fromisoformat(value)
    elif pa.types.is_list(kind):
        if isinstance(value, list):
            item = kind.value_type
            return [_to_python(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    elif pa.types.is_struct(kind) and isinstance(value, dict):
        return {f.name: _to_python(value.get(f.name), f.type, f"{where}.{f.name}")
                for f in kind}  # fmt: skip
    raise ValueError(f"{where}: {json.dumps(value)[:80]} is not a {kind}")


@dataclass(frozen=True)
class AnswerColumns:
    """How a json job's answers become its typed columns."""

    schema: pa.Schema

    @classmethod
    def of(cls, json_schema: Mapping[str, Any]) -> AnswerColumns:
        return cls(answer_schema(json_schema))

    def check(self, answer: Any) -> None:
        """ValueError naming the property if the answer cannot be stored in its columns."""
        if not isinstance(answer, dict):
            raise ValueError("(top): the answer is not a JSON object")
        for field in self.schema:
            _to_python(answer.get(field.name), field.type, field.name)

    def arrays(self, results: Sequence[str | None]) -> dict[str, pa.Array]:
        """The typed columns of answers stored as JSON text (`result`); a value that does
        not fit its column (an answer to an earlier definition) is null there."""
        answers = []
        for text in results:
            try:
                answer = json.loads(text) if text else None
            except ValueError:
                answer = None
            answers.append(answer if isinstance(answer, dict) else {})
        columns: dict[str, pa.Array] = {}
        for field in self.schema:
            values = []
            for answer in answers:
                try:
                    values.append(_to_python(answer.get(field.name), field.type, field.name))
                except ValueError:
                    values.append(None)
            columns[field.name] = pa.array(values, type=field.type)
        return columns


NO_COLUMNS = AnswerColumns(pa.schema([]))
