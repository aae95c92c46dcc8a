"""Load tickets (CSV, JSON array, JSONL, Parquet) into a DataFrame, and refuse bad input.

Every problem is found before any API call and reported with the file, the row (1-based,
counting tickets, not the header) and the column, so a user can fix it in one go.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}  # fmt: skip
MAX_PROBLEMS_LISTED = 10


class InputError(ValueError):
    """Input that aibatch refuses, with where the problem is."""

    def __init__(
        self, path: Path, message: str, *, row: int | None = None, column: str | None = None
    ) -> None:
        where = str(path)
        if row is not None:
            where += f", row {row}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.path = path
        self.row = row
        self.column = column


@dataclass(frozen=True)
class Tickets:
    """Validated tickets: `frame` has string `id` and `text` columns plus carried columns."""

    path: Path
    frame: pd.DataFrame
    id_column: str
    text_column: str

    @property
    def carried_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c not in ("id", "text")]


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            path,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); "
            "save the file as UTF-8",
        ) from exc


def _read(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        try:
            frame: pd.DataFrame = pq.read_table(path).to_pandas()
            return frame
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(path, f"not a readable Parquet file ({exc})") from exc
    data = path.read_bytes()
    if not data.strip():
        raise InputError(path, "the file is empty")
    text = _decode(path, data)
    if fmt == "csv":
        try:
            # Everything as text: ids like 007 keep their zeros, and nothing is guessed.
            return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
        except pd.errors.ParserError as exc:
            raise InputError(path, f"not valid CSV ({exc})") from exc
    if fmt == "json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON ({exc.msg} on line {exc.lineno})") from exc
        if not isinstance(records, list):
            raise InputError(path, "a .json input must be an array of objects, one per ticket")
    else:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise InputError(path, f"line {number} is not valid JSON ({exc.msg})") from exc
    for row, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise InputError(path, "each ticket must be a JSON object", row=row)
    return pd.DataFrame.from_records(records)


class _NotAnId(ValueError):
    pass


def _as_id(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    if isinstance(value, (bool, list, dict, tuple)) or hasattr(value, "__array__"):
        raise _NotAnId(f"id must be a string or a number, not {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 17.0 from a JSON number column is ticket 17
    text = str(value).strip()
    return text or None


def load_tickets(path: str | Path, id_column: str = "id", text_column: str = "text") -> Tickets:
    """Read and validate tickets; raise InputError naming file, row and column."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            path,
            f"unsupported file type {path.suffix or '(none)'!r}; use " + ", ".join(sorted(FORMATS)),
        )
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        frame = _read(path, fmt)
    except PermissionError as exc:
        raise InputError(path, "cannot be read (permission denied)") from exc
    if frame.empty:
        raise InputError(path, "contains no tickets")
    for column in (id_column, text_column):
        if column not in frame.columns:
            present = ", ".join(map(str, frame.columns))
            raise InputError(path, f"missing column (columns present: {present})", column=column)

    problems: list[InputError] = []
    ids: list[str | None] = []
    first_row: dict[str, int] = {}
    for row, value in enumerate(frame[id_column].tolist(), start=1):
        try:
            ticket_id = _as_id(value)
        except _NotAnId as exc:
            problems.append(InputError(path, str(exc), row=row, column=id_column))
            ids.append(None)
            continue
        ids.append(ticket_id)
        if ticket_id is None:
            problems.append(InputError(path, "empty or null id", row=row, column=id_column))
        elif ticket_id in first_row:
            problems.append(
                InputError(
                    path,
                    f"duplicate id {ticket_id!r} (first at row {first_row[ticket_id]})",
                    row=row,
                    column=id_column,
                )
            )
        else:
            first_row[ticket_id] = row
    texts = frame[text_column].tolist()
    for row, text in enumerate(texts, start=1):
        if not isinstance(text, str):
            if text is None or (isinstance(text, float) and pd.isna(text)):
                problems.append(InputError(path, "empty or null text", row=row, column=text_column))
                continue
            problems.append(
                InputError(
                    path,
                    f"text must be a string, not {type(text).__name__}",
                    row=row,
                    column=text_column,
                )
            )
        elif not text.strip():
            problems.append(InputError(path, "empty text", row=row, column=text_column))
    if problems:
        if len(problems) == 1:
            raise problems[0]
        listed = "\n  ".join(str(p) for p in problems[:MAX_PROBLEMS_LISTED])
        more = len(problems) - MAX_PROBLEMS_LISTED
        suffix = f"\n  ... and {more} more" if more > 0 else ""
        error = InputError(path, f"{len(problems)} problems:\n  {listed}{suffix}")
        raise error from problems[0]

    carried = frame.drop(columns=[id_column, text_column])
    # The output's own columns win; an input column of the same name is kept as input_<name>.
    carried = carried.rename(columns=lambda c: f"input_{c}" if str(c) in RESERVED else str(c))
    tickets = pd.DataFrame({"id": ids, "text": texts}).astype({"id": "string", "text": "string"})
    frame = pd.concat([tickets, carried.reset_index(drop=True)], axis=1)
    return Tickets(path=path, frame=frame, id_column=id_column, text_column=text_column)


# Columns of the results dataset; input columns with these names are renamed.
RESERVED = frozenset({
    "id", "text", "job", "result", "model", "prompt_version", "input_tokens", "output_tokens",
    "cache_creation_input_tokens", "cache_read_input_tokens", "attempts", "latency_ms",
    "cost_usd", "mode", "run_id", "completed_at", "run_date",
})  # fmt: skip
