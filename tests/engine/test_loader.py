"""Input loading: every format, and every kind of bad input refused with file, row, column."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from aibatch.loader import InputError, load_tickets

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
    tickets = load_tickets(path)
    assert tickets.frame["id"].tolist() == ["A-1", "A-2"]
    assert tickets.frame["text"].tolist() == ["My invoice is wrong.", "The app crashes."]
    assert tickets.frame["tier"].tolist() == ["free", "business"]


def test_configurable_column_names_and_zero_padded_ids_survive(write: Write) -> None:
    path = write("t.csv", "ticket_no,body\n007,hello there\n010,second one\n")
    tickets = load_tickets(path, id_column="ticket_no", text_column="body")
    assert tickets.frame["id"].tolist() == ["007", "010"]


def test_numeric_json_ids_become_strings(write: Write) -> None:
    path = write("t.json", json.dumps([{"id": 17, "text": "a"}, {"id": 18, "text": "b"}]))
    assert load_tickets(path).frame["id"].tolist() == ["17", "18"]


def test_an_input_column_named_like_an_output_column_is_renamed(write: Write) -> None:
    path = write("t.csv", "id,text,model\n1,hello,laptop\n")
    assert "input_model" in load_tickets(path).frame.columns


@pytest.mark.parametrize(
    ("name", "content", "row", "column", "fragment"),
    [
        ("t.csv", "ident,text\n1,hello\n", None, "id", "missing column"),
        ("t.csv", "id,body\n1,hello\n", None, "text", "missing column"),
        ("t.csv", "id,text\n1,hello\n1,again\n", 2, "id", "duplicate id '1' (first at row 1)"),
        ("t.csv", "id,text\n1,hello\n,again\n", 2, "id", "empty or null id"),
        ("t.json", '[{"id": "1", "text": "a"}, {"id": null, "text": "b"}]', 2, "id",
         "empty or null id"),
        ("t.csv", "id,text\n1,hello\n2,\n", 2, "text", "empty"),
        ("t.csv", "id,text\n1,hello\n2,\"   \"\n", 2, "text", "empty text"),
        ("t.json", '[{"id": "1", "text": null}]', 1, "text", "empty or null text"),
        ("t.json", '[{"id": "1", "text": 5}]', 1, "text", "must be a string"),
        ("t.json", '{"id": "1", "text": "a"}', None, None, "array of objects"),
        ("t.json", '[{"id": "1", "text": "a"}, 3]', 2, None, "JSON object"),
        ("t.json", '[{"id": "1", "text": "a"', None, None, "not valid JSON"),
        ("t.jsonl", '{"id": "1", "text": "a"}\n{"id": "2", "text": \n', None, None, "line 2"),
        ("t.csv", "", None, None, "empty"),
        ("t.csv", "id,text\n", None, None, "no tickets"),
        ("t.txt", "id,text\n1,a\n", None, None, "unsupported file type"),
    ],
)  # fmt: skip
def test_bad_input_is_refused_with_where_and_what(
    write: Write, name: str, content: str, row: int | None, column: str | None, fragment: str
) -> None:
    path = write(name, content)
    with pytest.raises(InputError) as caught:
        load_tickets(path)
    message = str(caught.value)
    assert str(path) in message
    assert fragment in message
    if row is not None:
        assert f"row {row}" in message
    if column is not None:
        assert f"column '{column}'" in message


def test_bad_encoding_names_the_line(write: Write) -> None:
    path = write("t.csv", b"id,text\n1,fine\n2,caf\xe9 au lait\n")
    with pytest.raises(InputError, match=r"not valid UTF-8 \(byte 0xe9 on line 3\)"):
        load_tickets(path)


def test_truncated_parquet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame(TICKETS).to_parquet(path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(InputError, match="not a readable Parquet file"):
        load_tickets(path)


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_tickets(tmp_path / "nope.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(InputError, match="no such file"):
        load_tickets(tmp_path / "dir.csv")


def test_many_problems_are_listed_together(write: Write) -> None:
    rows = "\n".join(f"{i % 3},t{i}" for i in range(30))
    with pytest.raises(InputError) as caught:
        load_tickets(write("t.csv", "id,text\n" + rows + "\n"))
    assert "27 problems" in str(caught.value) and "and 17 more" in str(caught.value)


def test_the_command_exits_non_zero_and_writes_nothing(write: Write, tmp_path: Path) -> None:
    path = write("t.csv", "id,text\n1,hello\n1,again\n")
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "aibatch", "run", str(path), "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"error: {path}, row 2, column 'id': duplicate id '1'" in result.stderr
    assert not output.exists()
