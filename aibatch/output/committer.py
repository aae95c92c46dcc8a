"""Journal every outcome as it arrives; publish them to the Parquet datasets in batches.

The crash points it passes (`commit:results-published`, `commit:published`) are where the
kill -9 tests stop it: at every one of them, each answer is in the journal, the dataset, or
both, and a re-run's fold-in publishes what only the journal holds, never a row twice.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from aibatch.errors import OutputUnwritable
from aibatch.jobs.answer_columns import NO_COLUMNS, AnswerColumns
from aibatch.output import crashpoints
from aibatch.output.journal import journal_segments, read_segment, remove
from aibatch.output.records import FailedRecord, JournalRecord, OkRecord
from aibatch.output.store import (
    ResultStore,
    carried_schema,
    failures_table,
    results_table,
    run_date_of,
)
from aibatch.result_columns import RESULT_COLUMNS

# Committing results to Parquet: often enough that a crash re-commits little, seldom
# enough that the dataset is not thousands of tiny files.
# Both can be tuned from the environment (tests use small values to get many commits).
COMMIT_EVERY_ROWS = int(os.environ.get("AIBATCH_COMMIT_EVERY_ROWS", "1000"))
COMMIT_EVERY_S = float(os.environ.get("AIBATCH_COMMIT_EVERY_S", "15"))


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:8]


class Committer:
    """Journal every outcome as it arrives; publish them to Parquet in batches."""

    def __init__(
        self,
        store: ResultStore,
        run_id: str,
        carried: pd.DataFrame,
        schema: pa.Schema,
        committed: set[tuple[str, str, str, str]],
        answer_columns: AnswerColumns = NO_COLUMNS,
    ) -> None:
        self.store = store
        self.run_id = run_id
        self.run_date = run_date_of(datetime.now(UTC))
        self.carried = carried
        self.schema = schema  # the results dataset's, fixed for the run
        self.answer_columns = answer_columns
        self.committed = committed  # (id, job, model, prompt_version) already in results
        self.journal = store.open_journal(run_id)
        self.pending: list[JournalRecord] = []
        self.last_commit = time.monotonic()
        self.rows_published = 0
        self.files_published = 0
        self._lock = asyncio.Lock()

    @classmethod
    def open(
        cls,
        store: ResultStore,
        run_id: str,
        carried: pd.DataFrame,
        answer: AnswerColumns = NO_COLUMNS,
    ) -> Committer:
        """The committer of a run into a store it holds locked, carrying the input's
        `carried` columns (by id) and a json job's typed `answer` columns: the results
        schema settled first (SchemaConflict before any call)."""
        wanted = pa.schema([*RESULT_COLUMNS, *answer.schema, *carried_schema(carried)])
        schema = store.results_schema(wanted, answer.schema.names)
        return cls(store, run_id, carried, schema, store.all_result_keys(), answer)

    def record(self, record: JournalRecord) -> None:
        try:
            self.journal.append(record)
        except OSError as error:
            raise OutputUnwritable.from_error(error, "the journal") from error
        self.pending.append(record)

    def due(self) -> bool:
        return len(self.pending) >= COMMIT_EVERY_ROWS or (
            bool(self.pending) and time.monotonic() - self.last_commit >= COMMIT_EVERY_S
        )

    async def commit_if_due(self) -> None:
        if self.due():
            await self.commit(only_if_due=True)
        elif self.journal.flush_due():  # a bucket's journal: what arrived goes up now
            try:
                await asyncio.wrap_future(self.journal.flush())
            except OSError as error:
                raise OutputUnwritable.from_error(error, "the journal") from error

    async def commit(self, only_if_due: bool = False) -> None:
        """Publish what is pending. Runs in a thread so responses keep flowing meanwhile."""
        async with self._lock:
            # Callers queued behind a commit find little pending; with `only_if_due` they
            # leave it for later instead of publishing a handful of rows each.
            if not self.pending or (only_if_due and not self.due()):
                return
            try:
                # The journal's boundary and `pending`'s are drawn together, with no await
                # between: the segments hold exactly the records published now.
                rotated = self.journal.rotate()
            except OSError as error:
                raise OutputUnwritable.from_error(error, "the journal") from error
            records, self.pending = self.pending, []
            self.last_commit = time.monotonic()

            async def publish() -> None:
                try:
                    segments = await asyncio.wrap_future(rotated)  # in a bucket: a PUT
                except OSError as error:
                    self.pending[:0] = records  # still to publish, by the run's last commit
                    raise OutputUnwritable.from_error(error, "the journal") from error
                await asyncio.to_thread(self._publish, records, segments)

            publishing = asyncio.ensure_future(publish())
            try:
                await asyncio.shield(publishing)
            except asyncio.CancelledError:
                # A chunk stopped mid-commit (SIGTERM, a stop): its thread publishes on, so
                # the lock is held until it is done; the run's last commit must not publish
                # beside it or find the dataset half-way through.
                await publishing
                raise

    def fold_in(self) -> int:
        """Commit what earlier runs journaled but did not publish (they crashed)."""
        segments = [p for directory in self.store.journal_dirs_to_recover()
                    for p in journal_segments(directory)
                    if not p.name.startswith(self.run_id)]  # fmt: skip
        records = [r for path in segments for r in read_segment(path)]
        before = self.rows_published
        # A crash after the failures were published but before the segment was removed
        # leaves them in both places: publish only those not already there.
        published_failures = (
            self.store.failure_keys() if any(r.get("kind") == "failed" for r in records)
            else set()
        )  # fmt: skip
        self._publish(records, segments, published_failures)
        return self.rows_published - before

    def close(self) -> None:
        self.journal.close()

    def _publish(
        self,
        records: list[JournalRecord],
        segments: Sequence[Any],
        published_failures: AbstractSet[tuple[str, str]] = frozenset(),
    ) -> None:
        ok: dict[tuple[str, str, str, str], OkRecord] = {}
        failed: dict[tuple[str, str], FailedRecord] = {}
        for record in records:
            if record["kind"] == "ok":
                key = (record["id"], record["job"], record["model"], record["prompt_version"])
                if key not in self.committed:
                    ok.setdefault(key, record)  # no id twice, even if journaled twice
            else:
                failure = (record["id"], record["run_id"])
                if failure not in published_failures:
                    failed.setdefault(failure, record)
        if not (ok or failed or segments):
            return
        try:
            if ok:
                rows = list(ok.values())
                answer = self.answer_columns.arrays([r["result"] for r in rows])
                table = results_table(rows, self.carried, self.schema, self.run_date, answer)
                self.files_published += len(
                    self.store.publish(table, self.store.results_dir, self.run_id)
                )
                self.committed.update(ok)
                self.rows_published += len(ok)
            crashpoints.reached("commit:results-published")
            if failed:
                table = failures_table(list(failed.values()), self.run_date)
                self.store.publish(table, self.store.failures_dir, self.run_id)
            crashpoints.reached("commit:published")
            remove(segments)  # only now: their rows are in the datasets
        except OSError as error:
            raise OutputUnwritable.from_error(error, f"results to {self.store.root}") from error
