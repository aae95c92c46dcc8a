"""Bad input: every case refused before any API call, with file, row and column, a non-zero
exit and nothing written; odd but valid ids go through and come back exactly."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from aibatch.app.local import run_locally
from aibatch.errors import EXIT_BAD_INPUT
from aibatch.flows.process_rows import process_rows
from aibatch.runs.parameters import RunParameters
from aibatch.simulator import SimulatorServer
from tests.conftest import FlowSimulator
from tests.helpers import job_dataset, read_everywhere

pytestmark = pytest.mark.reliability


def truncated_parquet() -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame({"id": ["1", "2"], "text": ["a", "b"]}).to_parquet(buffer)
    return buffer.getvalue()[:-20]


BAD_INPUTS = [
    ("t.csv", "ident,text\n1,hello\n", None, "id", "missing column"),
    ("t.csv", "id,body\n1,hello\n", None, "text", "missing column"),
    ("t.csv", "id,text\n1,hello\n1,again\n", 2, "id", "duplicate id '1' (first at row 1)"),
    ("t.csv", "id,text\n1,hello\n,again\n", 2, "id", "empty or null id"),
    ("t.json", '[{"id": "1", "text": "a"}, {"id": null, "text": "b"}]', 2, "id",
     "empty or null id"),
    ("t.json", '[{"id": 7, "text": "a"}, {"id": "7", "text": "b"}]', 2, "id",
     "duplicate id '7'"),  # mixed types in id: 7 and "7" are one ticket
    ("t.json", '[{"id": [1, 2], "text": "a"}]', 1, "id", "must be a string or a number"),
    ("t.csv", "id,text\n1,hello\n2,\n", 2, "text", "empty"),
    ("t.csv", "id,text\n1,hello\n2,\"   \"\n", 2, "text", "empty or null text"),
    ("t.json", '[{"id": "1", "text": null}]', 1, "text", "empty or null text"),
    ("t.json", '[{"id": "1", "text": {"a": 1}}]', 1, "text", "must be text or a number"),
    ("t.csv", b"id,text\n1,fine\n2,caf\xe9 au lait\n", None, None, "byte 0xe9 on line 3"),
    ("t.json", '{"id": "1", "text": "a"}', None, None, "array of objects"),
    ("t.json", '[{"id": "1", "text": "a"}, 3]', 2, None, "JSON object"),
    ("t.json", '[{"id": "1", "text": "a"', None, None, "not valid JSON"),
    ("t.jsonl", '{"id": "1", "text": "a"}\n{"id": "2", "text": \n', None, None, "line 2"),
    ("t.csv", "", None, None, "empty"),
    ("t.csv", "id,text\n", None, None, "no rows"),
    ("t.txt", "id,text\n1,a\n", None, None, "unsupported file type"),
    ("t.parquet", truncated_parquet(), None, None, "not a readable Parquet file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "content", "row", "column", "fragment"),
    BAD_INPUTS,
    ids=[f"{i:02d}-{case[4][:30]}" for i, case in enumerate(BAD_INPUTS)],
)
def test_bad_input_is_refused_before_any_call_and_nothing_is_written(
    tmp_path: Path,
    simulator: SimulatorServer,
    use_simulator: Callable[[SimulatorServer], None],
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | bytes,
    row: int | None,
    column: str | None,
    fragment: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    output = tmp_path / "out"
    use_simulator(simulator)
    params = RunParameters(input_path=str(path), output_dir=str(output))

    assert run_locally(params, process_rows) == EXIT_BAD_INPUT

    message = capsys.readouterr().err
    assert f"error: {path}" in message
    assert fragment in message
    if row is not None:
        assert f"row {row}" in message
    if column is not None:
        assert f"column '{column}'" in message
    assert simulator.stats()["requests_total"] == 0
    assert not output.exists()


def test_the_command_line_exits_2_and_creates_no_output(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,text\n1,hello\n1,again\n")
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "aibatch", "run", str(path), "--output", str(output)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"error: {path}, row 2, column 'id': duplicate id '1'" in result.stderr
    assert not output.exists()


def test_odd_ids_round_trip_and_an_over_long_ticket_fails_alone(
    flow_simulator: FlowSimulator,
    tmp_path: Path,
) -> None:
    """Ids that look like paths, partitions or another script are just ids; a ticket too
    long for the context window is that ticket's failure, not the run's."""
    odd_ids = ["a/b/../c", "run_date=2020-01-01", "x=1/y=2", "チケット-7", "naïve café",
               "007", " padded ", "tab\tid", "%2F", "emoji-🎫"]  # fmt: skip
    frame = pd.DataFrame({
        "id": [*odd_ids, "too-long"],
        "text": [f"Ticket {i}: the export to CSV fails." for i in range(len(odd_ids))]
        + ["The export fails. " * 400],
    })  # fmt: skip
    frame.to_parquet(tmp_path / "tickets.parquet")
    flow_simulator(context_window=2_000)
    params = RunParameters(
        input_path=str(tmp_path / "tickets.parquet"), output_dir=str(tmp_path / "out"),
        chunk_size=50,
    )  # fmt: skip
    summary = asyncio.run(process_rows(params))
    assert summary["ok"] == len(odd_ids) and summary["failed"] == 1
    # Surrounding spaces are trimmed from ids, as from every text field of the input.
    expected = sorted(i.strip() for i in odd_ids)
    assert sorted(read_everywhere(job_dataset(tmp_path / "out"))) == expected
    failures = pd.read_parquet(job_dataset(tmp_path / "out", "failures"))
    assert failures["id"].tolist() == ["too-long"]
    assert failures["status_code"].tolist() == [400]
    partitions = [p.name for p in (job_dataset(tmp_path / "out")).iterdir()]
    assert all(p.startswith("run_date=") for p in partitions) and len(partitions) == 1
