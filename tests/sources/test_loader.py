"""Input loading: every format, and every kind of bad input refused with file, row, column."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from aibatch.errors import InputError
from aibatch.sources.loader import load_text_rows

Write = Callable[[str, bytes | str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def write(name: str, content: bytes | str) -> Path:
        path = tmp_path / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return write


TICKETS = [
    {"id": "A-1", "text": "My invoice is wrong.", "tier": "free"},
    {"id": "A-2", "text": "The app crashes.", "tier": "business"},
]


@pytest.mark.parametrize("fmt", ["csv", "json", "jsonl", "parquet"])
def test_every_format_loads_with_carried_columns(tmp_path: Path, fmt: str) -> None:
    frame = pd.DataFrame(TICKETS)
    path = tmp_path / f"tickets.{fmt}"
    if fmt == "csv":
        frame.to_csv(path, index=False)
    elif fmt == "json":
        path.write_text(json.dumps(TICKETS))
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(t) for t in TICKETS) + "\n")
    else:
        frame.to_parquet(path)
    tickets = load_text_rows(path)
    assert tickets.frame["id"].tolist() == ["A-1", "A-2"]
    assert tickets.frame["text"].tolist() == ["My invoice is wrong.", "The app crashes."]
    assert tickets.frame["tier"].tolist() == ["free", "business"]


def test_configurable_column_names_and_zero_padded_ids_survive(write: Write) -> None:
    path = write("t.csv", "ticket_no,body\n007,hello there\n010,second one\n")
    tickets = load_text_rows(path, id_column="ticket_no", text_column="body")
    assert tickets.frame["id"].tolist() == ["007", "010"]


def test_numeric_json_ids_become_strings(write: Write) -> None:
    path = write("t.json", json.dumps([{"id": 17, "text": "a"}, {"id": 18, "text": "b"}]))
    assert load_text_rows(path).frame["id"].tolist() == ["17", "18"]


def test_an_input_column_named_like_an_output_column_is_renamed(write: Write) -> None:
    path = write("t.csv", "id,text,model\n1,hello,laptop\n")
    assert "input_model" in load_text_rows(path).carried().columns


def test_bad_encoding_names_the_line(write: Write) -> None:
    path = write("t.csv", b"id,text\n1,fine\n2,caf\xe9 au lait\n")
    with pytest.raises(InputError, match=r"not valid UTF-8 \(byte 0xe9 on line 3\)"):
        load_text_rows(path)


def test_truncated_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame(TICKETS).to_parquet(path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InputError, match="not a readable Parquet file"):
        load_text_rows(path)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_text_rows(tmp_path / "nope.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="no such file"):
        load_text_rows(tmp_path / "dir.csv")


def test_many_problems_are_listed_together(write: Write) -> None:
    rows = "\n".join(f"{i % 3},t{i}" for i in range(30))
    with pytest.raises(InputError) as caught:
        load_text_rows(write("t.csv", "id,text\n" + rows + "\n"))
    assert "27 problems" in str(caught.value) and "and 17 more" in str(caught.value)


def test_a_column_named_id_beside_the_id_column_is_kept_as_input_id(write: Write) -> None:
    tickets = load_text_rows(write("t.csv", "sku,id,text\nS1,7,hello\n"), id_column="sku")
    assert tickets.frame["id"].tolist() == ["S1"]
    assert tickets.frame["input_id"].tolist() == ["7"]
