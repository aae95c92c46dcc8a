"""The journal: every outcome kept the moment it arrives, until the datasets hold it.

On this machine's disk a segment is a file appended to with one write() per record:
once the kernel has the bytes, a kill -9 of this process cannot lose them. A bucket has
no append: there the journal is a sequence of small objects, one PUT of what arrived since
the last every `JOURNAL_FLUSH_S` (2 s) and at each commit, so a run killed (or a container
lost) re-pays at most the requests in flight and the answers of the last 2 s. Either way
the committer rotates the journal at a commit, publishes the rows, and only then removes
the segments it published; the next run folds in the segments a crash left.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import orjson

from aibatch.output.records import JournalRecord, is_record
from aibatch.storage.location import Location, location

JOURNAL_FLUSH_S = float(os.environ.get("AIBATCH_JOURNAL_FLUSH_S", "2"))


class Journal(Protocol):
    """Called on the event loop: each call decides at once which records it covers (so a
    record is never on both sides of a commit by chance), and returns a future for the
    writing, which may block (a PUT) and is awaited off the loop."""

    def append(self, record: JournalRecord) -> None: ...

    def flush_due(self) -> bool:
        """Whether records wait in memory to be written (only in a bucket)."""
        ...

    def flush(self) -> Future[None]: ...

    def rotate(self) -> Future[list[Location]]:
        """Close off everything appended so far: the future gives the segments that hold
        it (to be removed once committed); what is appended from now on goes to new ones."""
        ...

    def close(self) -> None: ...


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


class FileJournal:
    """Segments as files on this machine's disk, appended to (O_APPEND)."""

    def __init__(self, directory: Location, run_id: str) -> None:
        self.directory = directory
        self.run_id = run_id
        self._sequence = 0
        self._fd: int | None = None
        self._segment: Location | None = None
        self._open_next()

    def _open_next(self) -> None:
        self._sequence += 1
        self._segment = self.directory / f"{self.run_id}-{self._sequence:06d}.jsonl"
        self._fd = os.open(self._segment.local, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: JournalRecord) -> None:
        assert self._fd is not None
        # One write() per record: O_APPEND keeps records whole and in order, and once the
        # kernel has the bytes a kill -9 of this process cannot lose them.
        os.write(self._fd, orjson.dumps(record) + b"\n")

    def flush_due(self) -> bool:
        return False

    def flush(self) -> Future[None]:
        return _done(None)

    def rotate(self) -> Future[list[Location]]:
        assert self._fd is not None and self._segment is not None
        os.fsync(self._fd)
        os.close(self._fd)
        closed = self._segment
        self._open_next()
        return _done([closed])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._segment is not None:
            path = self._segment.local
            if path.exists() and path.stat().st_size == 0:
                path.unlink()


class ObjectJournal:
    """Segments as objects in a bucket: records wait in memory for at most
    `JOURNAL_FLUSH_S`, then go up in one PUT (atomic: a segment is whole or absent).

    The PUTs run one after another on a thread of their own, in the order their records
    were taken: when a rotation's PUT runs, every segment written before it holds only
    records from before the rotation, and none after it does."""

    def __init__(self, directory: Location, run_id: str, flush_s: float = JOURNAL_FLUSH_S) -> None:
        self.directory = directory
        self.run_id = run_id
        self.flush_s = flush_s
        self._sequence = 0
        self._lines: list[bytes] = []
        self._written: list[Location] = []  # only touched by the writer thread
        self._last_flush = time.monotonic()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aibatch-journal")

    def append(self, record: JournalRecord) -> None:
        self._lines.append(orjson.dumps(record) + b"\n")

    def flush_due(self) -> bool:
        return bool(self._lines) and time.monotonic() - self._last_flush >= self.flush_s

    def _take(self) -> tuple[list[bytes], Location | None]:
        lines, self._lines = self._lines, []
        self._last_flush = time.monotonic()
        if not lines:
            return lines, None
        self._sequence += 1
        return lines, self.directory / f"{self.run_id}-{self._sequence:06d}.jsonl"

    def _put(self, lines: list[bytes], segment: Location | None) -> None:
        if segment is not None:
            segment.write_bytes(b"".join(lines))
            self._written.append(segment)

    def flush(self) -> Future[None]:
        return self._writer.submit(self._put, *self._take())

    def rotate(self) -> Future[list[Location]]:
        lines, segment = self._take()

        def put_then_hand_over() -> list[Location]:
            self._put(lines, segment)
            written, self._written = self._written, []
            return written

        return self._writer.submit(put_then_hand_over)

    def close(self) -> None:
        # A run that stops early leaves its last answers where a re-run looks; if the
        # bucket cannot be reached now, they are among what a re-run pays for again.
        with contextlib.suppress(OSError):
            self.flush().result()
        self._writer.shutdown(wait=True)


def open_journal(directory: Location, run_id: str) -> Journal:
    if directory.is_local:
        return FileJournal(directory, run_id)
    return ObjectJournal(directory, run_id)


def read_segment(segment: Location | Path) -> list[JournalRecord]:
    """Records of one journal segment; a torn line (a crash mid-write) is skipped."""
    records: list[JournalRecord] = []
    data = segment.read_bytes()
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if is_record(record):
            records.append(record)
    return records


def journal_segments(directory: Location | Path) -> list[Location]:
    if not isinstance(directory, Location):
        directory = location(directory)
    return directory.files(".jsonl", recursive=False)


def remove(segments: Iterable[Location]) -> None:
    for segment in segments:
        segment.remove()
