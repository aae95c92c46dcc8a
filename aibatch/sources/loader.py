"""Load rows (CSV, JSON array, JSONL, Parquet) into a DataFrame, and refuse bad input.

Every problem is found before any API call and reported with the file, the row (1-based,
counting rows, not the header) and the column, so a user can fix it in one go: the id
column, the columns a job's prompt template reads (`load_rows`), and then each row's prompt
(`render_prompts`: a value the template needs that a row lacks is refused here too).
"""

from __future__ import annotations

import io
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from aibatch.errors import InputError
from aibatch.result_columns import OWN_COLUMNS
from aibatch.storage.bucket import BucketError
from aibatch.storage.location import Location, location

FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}  # fmt: skip
MAX_PROBLEMS_LISTED = 10


@dataclass(frozen=True)
class Rows:
    """Validated rows: `frame` has a string `id` column, then the input's other columns (for
    the built-in jobs, the row text as `text`)."""

    path: Location  # the file as the user named it: a path, or s3://bucket/key
    frame: pd.DataFrame
    id_column: str
    text_column: str = "text"
    used: frozenset[str] = frozenset({"text"})  # columns the job's prompt reads

    @property
    def carried_columns(self) -> list[str]:
        return [c for c in self.frame.columns if c != "id" and c not in self.used]

    def carried(self, answer_columns: Collection[str] = ()) -> pd.DataFrame:
        """The columns results carry along, by id; one named like an output column (one of
        aibatch's, or of the job's typed answer) is kept as input_<name>: the output's own
        columns win."""
        taken = RESERVED | set(answer_columns)
        frame = self.frame[["id", *self.carried_columns]].set_index("id")
        return frame.rename(columns=lambda c: f"input_{c}" if str(c) in taken else str(c))


def _decode(path: Location, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(
            path,
            f"not valid UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); "
            "save the file as UTF-8",
        ) from exc


def source_of(path: str | Path | Location) -> Location:
    """The input file a user named (a path, or an object in a bucket)."""
    if isinstance(path, Location):
        return path
    try:
        return location(path)
    except BucketError as exc:
        raise InputError(path, str(exc).removeprefix(f"{path}: ")) from exc


def read_file(path: str | Path | Location) -> pd.DataFrame:
    """An input file's rows as they are (CSV as text), unvalidated; InputError if the file
    cannot be read as its type."""
    path = source_of(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(
            path,
            f"unsupported file type {path.suffix or '(none)'!r}; use " + ", ".join(sorted(FORMATS)),
        )
    try:
        if not path.is_file():
            raise InputError(path, "no such file")
        return _read(path, fmt)
    except PermissionError as exc:
        raise InputError(path, "cannot be read (permission denied)") from exc
    except OSError as exc:  # a bucket refused or out of reach, an I/O error
        raise InputError(path, f"cannot be read ({exc})") from exc


def as_ids(values: Sequence[object]) -> list[str | None]:
    """Ids as a run keys them (None for a value that is not one)."""
    ids: list[str | None] = []
    for value in values:
        try:
            ids.append(_as_id(value))
        except _NotAnId:
            ids.append(None)
    return ids


def _read(path: Location, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        try:
            frame: pd.DataFrame = pq.read_table(path.path, filesystem=path.fs).to_pandas()
            return frame
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(path, f"not a readable Parquet file ({exc})") from exc
    try:
        # On a disk through pathlib, whose errors (PermissionError) say what went wrong.
        data = path.local.read_bytes() if path.is_local else path.read_bytes()
    except OSError as exc:
        if isinstance(exc, PermissionError):
            raise
        raise InputError(path, f"cannot be read ({exc})") from exc
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
            raise InputError(path, "a .json input must be an array of objects, one per row")
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
            raise InputError(path, "each row must be a JSON object", row=row)
    return pd.DataFrame.from_records(records)


class _NotAnId(ValueError):
    pass


def _as_id(value: object) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    if isinstance(value, (bool, list, dict, tuple)) or hasattr(value, "__array__"):
        raise _NotAnId(f"id must be a string or a number, not {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # 17.0 from a JSON number column is row 17
    text = str(value).strip()
    return text or None


def load_text_rows(path: str | Path, id_column: str = "id", text_column: str = "text") -> Rows:
    """Rows for the built-in jobs: an id and a text column (named as given; read as
    `text`); InputError naming file, row and column."""
    return load_rows(path, id_column, {"text"}, {text_column: "text"} if text_column else {})


def load_rows(
    named: str | Path | Location,
    id_column: str = "id",
    needed: Collection[str] = ("text",),
    rename: Mapping[str, str] | None = None,
) -> Rows:
    """Read and validate rows: the id column, and the `needed` columns a prompt reads (after
    `rename`, input name → name the prompt uses); InputError naming file, row and column."""
    path = source_of(named)
    frame = read_file(path)
    if frame.empty:
        raise InputError(path, "contains no rows")
    frame.columns = [str(c) for c in frame.columns]
    renamed = {k: v for k, v in (rename or {}).items() if k != v}
    for source, target in renamed.items():
        if source in frame.columns and target in frame.columns and target != id_column:
            frame = frame.drop(columns=[target])  # the column named by the option wins
    frame = frame.rename(columns=renamed)
    present = ", ".join(frame.columns)
    if id_column not in frame.columns:
        raise InputError(path, f"missing column (columns present: {present})", column=id_column)
    original = {v: k for k, v in renamed.items()}
    for column in sorted(needed):
        if column not in frame.columns:
            raise InputError(
                path,
                f"missing column: the prompt template reads it (columns present: {present})",
                column=original.get(column, column),
            )

    problems: list[InputError] = []
    ids: list[str | None] = []
    first_row: dict[str, int] = {}
    for row, value in enumerate(frame[id_column].tolist(), start=1):
        try:
            row_id = _as_id(value)
        except _NotAnId as exc:
            problems.append(InputError(path, str(exc), row=row, column=id_column))
            ids.append(None)
            continue
        ids.append(row_id)
        if row_id is None:
            problems.append(InputError(path, "empty or null id", row=row, column=id_column))
        elif row_id in first_row:
            problems.append(
                InputError(
                    path,
                    f"duplicate id {row_id!r} (first at row {first_row[row_id]})",
                    row=row,
                    column=id_column,
                )
            )
        else:
            first_row[row_id] = row
    for column in sorted(needed):
        for row, value in enumerate(frame[column].tolist(), start=1):
            if isinstance(value, (list, dict, tuple)) or hasattr(value, "__array__"):
                problems.append(InputError(
                    path, f"must be text or a number, not {type(value).__name__}", row=row,
                    column=original.get(column, column),
                ))  # fmt: skip
    raise_all(path, problems)
    rest = frame.drop(columns=[id_column]).reset_index(drop=True)
    if "id" in rest.columns:  # another column named id, beside the one the job uses
        rest = rest.rename(columns={"id": "input_id"})
    frame = pd.concat([pd.DataFrame({"id": pd.array(ids, dtype="string")}), rest], axis=1)
    return Rows(path, frame, id_column, rename_back(renamed), frozenset(needed))


def rename_back(renamed: Mapping[str, str]) -> str:
    """The input's name of the column read as `text` (for messages), or "text"."""
    return next((k for k, v in renamed.items() if v == "text"), "text")


def blank(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    if isinstance(value, float) and pd.isna(value):
        return True
    return isinstance(value, str) and not value.strip()


TRIAL_SEED = 0


def trial_rows(pending: pd.DataFrame, limit: int | None, sample: int | None) -> pd.DataFrame:
    """A trial run's rows: the first `limit` pending, or a seeded random `sample` of them
    (in input order); all of them otherwise."""
    if limit is not None:
        return pending.head(limit)
    if sample is not None and sample < len(pending):
        return pending.sample(n=sample, random_state=TRIAL_SEED).sort_index()
    return pending


def raise_all(path: Path | Location, problems: list[InputError]) -> None:
    if not problems:
        return
    if len(problems) == 1:
        raise problems[0]
    listed = "\n  ".join(str(p) for p in problems[:MAX_PROBLEMS_LISTED])
    more = len(problems) - MAX_PROBLEMS_LISTED
    suffix = f"\n  ... and {more} more" if more > 0 else ""
    error = InputError(path, f"{len(problems)} problems:\n  {listed}{suffix}")
    raise error from problems[0]


# Columns of the results dataset; input columns with these names are renamed.
RESERVED = OWN_COLUMNS | {"text"}
