"""Disk full: an ENOSPC while writing Parquet or the journal publishes nothing partial, stops
the run with a message saying what to do, and the next run (with space) completes."""

from __future__ import annotations

import errno
import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pytest

from aibatch.app.local import run_locally
from aibatch.errors import EXIT_OK, EXIT_STOPPED
from aibatch.flows.process_rows import process_rows
from aibatch.output import committer, journal
from aibatch.output.records import JournalRecord
from aibatch.runs.parameters import RunParameters
from aibatch.storage.location import Location
from tests.conftest import FlowSimulator
from tests.helpers import job_dataset, job_state, read_everywhere, write_tickets

pytestmark = pytest.mark.reliability

IN_FLIGHT = 4
GOOD_WRITES = 2  # the disk fills up after this many Parquet files / this many journal lines


def no_space(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def fill_disk_under_parquet(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the third Parquet write on, the file is cut short and the write fails."""
    real = ds.write_dataset  # the module aibatch.output.store writes with
    calls = 0

    def write_dataset(data: Any, base_dir: Any, **options: Any) -> None:
        nonlocal calls
        calls += 1
        real(data, base_dir, **options)
        if calls > GOOD_WRITES:
            written = sorted(Path(base_dir).rglob("*.parquet"))[0]
            with written.open("r+b") as handle:
                handle.truncate(written.stat().st_size // 2)
            raise no_space(written)

    monkeypatch.setattr(ds, "write_dataset", write_dataset)


def fill_disk_under_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    """After 130 journal lines, a line is half written and the write fails."""
    real = journal.FileJournal.append
    lines = 0

    def append(self: journal.FileJournal, record: JournalRecord) -> None:
        nonlocal lines
        lines += 1
        if lines <= 130:
            real(self, record)
            return
        assert self._fd is not None and self._segment is not None
        os.write(self._fd, b'{"kind": "ok", "id": "torn')
        raise no_space(self._segment.local)

    monkeypatch.setattr(journal.FileJournal, "append", append)


def fill_disk_under_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    """The third time a journal segment is closed for a commit, its fsync fails."""
    real = journal.FileJournal.rotate
    calls = 0

    def rotate(self: journal.FileJournal) -> Future[list[Location]]:
        nonlocal calls
        calls += 1
        if calls > GOOD_WRITES:
            assert self._segment is not None
            raise no_space(self._segment.local)
        return real(self)

    monkeypatch.setattr(journal.FileJournal, "rotate", rotate)


FILL_DISK = {
    "parquet": fill_disk_under_parquet,
    "journal": fill_disk_under_journal,
    "rotation": fill_disk_under_rotation,
}


@pytest.mark.parametrize("where", list(FILL_DISK))
def test_a_full_disk_publishes_nothing_partial_and_the_next_run_completes(
    flow_simulator: FlowSimulator,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    where: str,
) -> None:
    texts = write_tickets(tmp_path / "tickets.csv", 300)
    output = tmp_path / "out"
    params = RunParameters(
        input_path=str(tmp_path / "tickets.csv"), output_dir=str(output), chunk_size=100,
        max_concurrency=IN_FLIGHT,
    )  # fmt: skip
    server = flow_simulator(latency_ms=5)
    said: list[str] = []
    monkeypatch.setattr("aibatch.app.local.say", said.append)  # Prefect's handlers vs capsys
    monkeypatch.setattr(committer, "COMMIT_EVERY_ROWS", 50)
    with monkeypatch.context() as disk:
        FILL_DISK[where](disk)
        assert run_locally(params, process_rows) == EXIT_STOPPED

    told = "\n".join(said)
    assert "No space left on device" in told and "Free space" in told, told
    published = read_everywhere(job_dataset(output))  # every file whole and readable
    assert len(published) == len(set(published)) and set(published) <= set(texts)
    if where == "parquet":
        assert len(published) == GOOD_WRITES * 50  # the third commit published nothing
    assert not any((job_state(output) / "staging").rglob("*.parquet"))
    answered = server.stats()["by_status"]["200"]
    journaled = {
        record["id"]
        for segment in journal.journal_segments(job_state(output) / "journal")
        for record in journal.read_segment(segment)
        if record["kind"] == "ok"
    }
    # Answers not published are in the journal; only those in flight at the stop are lost.
    assert answered - IN_FLIGHT <= len(set(published) | journaled) <= answered

    assert run_locally(params, process_rows) == EXIT_OK  # space again
    final = read_everywhere(job_dataset(output))
    assert sorted(final) == sorted(texts)
    assert server.stats()["prompts_paid_repeated"] <= IN_FLIGHT
