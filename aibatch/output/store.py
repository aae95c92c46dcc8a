"""Where results live, and how they survive a kill -9 at any instant.

Layout of an output directory (one pair of datasets per job: their columns differ):

    OUTPUT/JOB/results/run_date=YYYY-MM-DD/part-*.parquet   one row per processed row
    OUTPUT/JOB/failures/run_date=YYYY-MM-DD/part-*.parquet  permanent failures
    OUTPUT/_aibatch/                          state, never inside a dataset root
        lock                                  held (flock) by the run writing here
        batches/*.json                        the Message Batches ledger
        jobs/JOB/definition.json              the job's definition, as its last run had it
        jobs/JOB/journal/*.jsonl              every response, appended as it arrives
        jobs/JOB/staging/                     Parquet files being written
        jobs/JOB/shards/SHARD/                a shard run's own lock, journal, staging

A results dataset's files all share one schema, so every reader (pandas, pyarrow, duckdb,
polars) sees every column whichever file it opens first: `results_schema` adds the columns a
run brings (a json job's new property) to the dataset's, refuses a column whose type would
change, and rewrites each older file with the new columns as nulls, one atomic replace per
file (a crash leaves each file old or new, never half, and the next run goes on).

Output directories of earlier versions had one `OUTPUT/results/` for every job; it is left
as it is (still readable), and nothing in it counts as done: its answers were to the
questions of that version, which have other resume keys.

A response is appended to the journal the moment it arrives (a write() to the kernel,
which a kill -9 of this process cannot lose). Every so often the journal is committed:
its current segment is closed, its rows are written as Parquet into staging with an
explicit schema, fsynced, and renamed into the dataset, and only then is the segment
deleted. A crash anywhere leaves either the segment (folded in by the next run, skipping
ids already in results) or a staged file (ignored and removed), never a half file in
the dataset and never an id twice.

The output can be a bucket (`s3://bucket/prefix`) with the same layout and the same
promises, from what an object store has instead of renames, appends and flock: a PUT is
atomic per object, so a Parquet file is written straight to its key (a multipart upload a
crash interrupts is never visible), a widened file is overwritten in one PUT, the journal
is a sequence of small objects (output/journal.py), and the lock a lease the store
arbitrates with conditional writes (output/lease.py). Nothing is staged there.

Why not a table format's commit log (Delta Lake's conditional-put log, Iceberg): its files
are only "in" the table once the log says so, so the plain Parquet readers this layout
promises (pandas, duckdb, polars reading the folder) would see rows a log never committed,
or rows it removed. With one atomic PUT per file and ids de-duplicated before each publish,
the folder itself is the truth, as on a disk.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Collection, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aibatch.errors import BadInput, OutputLocked, SchemaConflict
from aibatch.output import crashpoints
from aibatch.output.journal import Journal, open_journal
from aibatch.output.lease import Lease, describe, live_lease
from aibatch.output.records import FailedRecord, OkRecord
from aibatch.result_columns import RESULT_COLUMNS
from aibatch.storage.bucket import BucketError, StoredObject, clients
from aibatch.storage.location import Location, fsync_dir, location

# A failure row: the key of the result it could not become, then why.
FAILURE_SCHEMA = pa.schema([
    *(RESULT_COLUMNS.field(name) for name in ("id", "job", "model", "prompt_version")),
    ("error_type", pa.string()), ("status_code", pa.int32()), ("message", pa.string()),
    ("attempts", pa.int32()),
    ("cost_usd", pa.float64()),  # answers billed before the row failed (bad output)
    ("stop_reason", pa.string()),  # refusal, max_tokens, ...: why an answer was not complete
    ("run_id", pa.string()), ("failed_at", pa.timestamp("us", tz="UTC")),
])  # fmt: skip
PARTITIONING = ds.partitioning(pa.schema([("run_date", pa.string())]), flavor="hive")


def _normalised(field: pa.Field) -> pa.Field:
    """Types every reader agrees on: no `null` type, UTC timestamps, plain strings."""
    t = field.type
    if pa.types.is_null(t) or pa.types.is_dictionary(t) or pa.types.is_large_string(t):
        return pa.field(field.name, pa.string())
    if pa.types.is_integer(t):
        return pa.field(field.name, pa.int64())
    if pa.types.is_floating(t):
        return pa.field(field.name, pa.float64())
    if pa.types.is_boolean(t):
        return field
    if pa.types.is_timestamp(t):
        return pa.field(field.name, pa.timestamp("us", tz="UTC"))
    if pa.types.is_string(t):
        return field
    return pa.field(field.name, pa.string())  # nested or exotic: stored as text


def carried_schema(carried: pd.DataFrame) -> pa.Schema:
    """The Arrow schema of the input's carried columns, fixed once per run."""
    if carried.shape[1] == 0:
        return pa.schema([])
    inferred = pa.Schema.from_pandas(carried.head(1000), preserve_index=False)
    return pa.schema([_normalised(f) for f in inferred])


def conformed(columns: dict[str, pa.Array], rows: int, schema: pa.Schema) -> pa.Table:
    """A table of `schema`, from the columns given and nulls for the others."""
    arrays = [columns[f.name] if f.name in columns else pa.nulls(rows, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def _to_arrow(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    columns = []
    for field in schema:
        values = frame[field.name] if field.name in frame.columns else None
        if values is None:
            columns.append(pa.nulls(len(frame), field.type))
        elif pa.types.is_string(field.type) and values.dtype == object:
            columns.append(
                pa.array(
                    [None if v is None or v is pd.NA or v != v else str(v) for v in values],
                    pa.string(),
                )
            )
        else:
            columns.append(pa.array(values, from_pandas=True).cast(field.type))
    return pa.Table.from_arrays(columns, schema=schema)


SHARD_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
JOB_DIR = re.compile(r"^[a-z0-9-]{1,64}$")


class ResultStore:
    """The output directory of a run: its datasets, journal, staging area and lock.

    A whole-input run holds the directory alone. Shard runs (parts of one input, fanned
    out to several workers) share it: each holds the directory's lock shared and its own
    shard lock exclusively, and keeps its own journal and staging area, so shards never
    fold in or clear each other's state. A whole-input run folds in every shard's journal.
    In a bucket, each lock is a lease: a whole-input run holds the directory's and finds no
    shard's live; a shard holds its own and finds no whole-input run's live.
    """

    def __init__(
        self, output_dir: str | Path | Location, job: str, shard: str | None = None
    ) -> None:
        if shard is not None and not SHARD_NAME.match(shard):
            raise BadInput(f"shard name {shard!r}: use letters, digits, '_', '-' or '.'")
        if not JOB_DIR.match(job):
            raise BadInput(f"job name {job!r}: use lowercase letters, digits and '-'")
        try:
            self.root = output_dir if isinstance(output_dir, Location) else location(output_dir)
        except BucketError as error:
            raise BadInput(str(error)) from error
        self.job = job
        self.shard = shard
        # Each job its own datasets (their columns differ by job); one lock per directory.
        self.results_dir = self.root / job / "results"
        self.eval_dir = self.root / job / "eval"  # the samples `aibatch eval` scores
        self.failures_dir = self.root / job / "failures"
        self.state_dir = self.root / "_aibatch"
        job_state = self.state_dir / "jobs" / job
        self.definition_path = job_state / "definition.json"
        self.shards_dir = job_state / "shards"
        own = job_state if shard is None else self.shards_dir / shard
        self.journal_dir = own / "journal"
        self.staging_dir = own / "staging"  # on a disk only: a bucket needs no staging
        self._own_dir = own
        self._lock_fds: list[int] = []
        self._leases: list[Lease] = []

    def check_reachable(self) -> None:
        """BadInput saying what to fix when the output's bucket cannot be used."""
        if self.root.bucket is not None:
            try:
                clients()[0].check(self.root.bucket)
            except BucketError as error:
                raise BadInput(str(error)) from error

    def journal_dirs_to_recover(self) -> list[Location]:
        """Journals this run may fold in: its own; for a whole-input run, every shard's."""
        if self.shard is not None:
            return [self.journal_dir]
        shards = self.shards_dir.subfolders()
        return [self.journal_dir, *(shard / "journal" for shard in shards)]

    def open_journal(self, run_id: str) -> Journal:
        return open_journal(self.journal_dir, run_id)

    # -- the lock -------------------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[ResultStore]:
        """Hold the output directory for this run; a second run is refused, not queued.

        flock is released by the kernel when the process dies, even by kill -9, so a
        crashed run never leaves a stale lock behind; a bucket's lease runs out instead
        (at once for a dead process of this machine).
        """
        if self.root.bucket is not None:
            with self._leased():
                yield self
            return
        for path in (self.results_dir, self.failures_dir, self.journal_dir, self.staging_dir):
            path.make_dirs()
        exclusive = self.shard is None
        directory_lock = self._flock(
            self.state_dir.local / "lock", fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH,
            "another aibatch run (or its shards)" if exclusive else "a whole-input aibatch run",
        )  # fmt: skip
        self._lock_fds = [directory_lock]
        try:
            if not exclusive:
                self._lock_fds.append(
                    self._flock(
                        self._own_dir.local / "lock", fcntl.LOCK_EX, f"shard {self.shard!r}"
                    )
                )
            self._clear_staging()
            yield self
        finally:
            for fd in self._lock_fds:
                os.close(fd)
            self._lock_fds = []

    @contextlib.contextmanager
    def _leased(self) -> Iterator[None]:
        # The bucket was checked by the run's plan (check_reachable); a lock it cannot
        # take is said by the lease's own error.
        whole = self.shard is None
        what = "an aibatch run of the whole input" if whole else f"aibatch shard {self.shard!r}"
        lease = Lease((self.state_dir if whole else self._own_dir) / "lock", what)
        try:
            holder = lease.take()
        except BucketError as error:
            raise BadInput(str(error)) from error
        if holder is not None:
            raise OutputLocked(f"{self.root} is in use by {describe(holder)}; wait for it to "
                               "finish or choose another --output")  # fmt: skip
        try:
            others = self._live_shard_leases() if whole else [
                found for found in [live_lease(self.state_dir / "lock")] if found is not None
            ]  # fmt: skip
            if others:
                raise OutputLocked(f"{self.root} is in use by {describe(others[0])}; wait for "
                                   "it to finish or choose another --output")  # fmt: skip
            self._leases = [lease]
            yield
        finally:
            self._leases = []
            lease.release()

    def _live_shard_leases(self) -> list[StoredObject]:
        locks = [found for found in (self.state_dir / "jobs").files()
                 if found.name == "lock" and "/shards/" in found.path]  # fmt: skip
        return [held for held in map(live_lease, locks) if held is not None]

    def check_held(self) -> None:
        """LeaseLost when this run has lost the output's lease (a bucket's lock): it must
        publish nothing more. A flock cannot be lost."""
        for lease in self._leases:
            lease.check()

    def _flock(self, lock_path: Path, mode: int, holder_kind: str) -> int:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise OutputLocked(
                f"{self.root} is in use by {holder_kind}"
                + (f" (pid {holder})" if holder else "")
                + "; wait for it to finish or choose another --output"
            ) from None
        if mode == fcntl.LOCK_EX:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _clear_staging(self) -> None:
        """Files left in staging by a crash were never published: remove them (a whole-input
        run also clears the shards' staging: no shard can be running beside it)."""
        areas = [self.staging_dir.local]
        if self.shard is None:
            areas += sorted(self.shards_dir.local.glob("*/staging"))
        for area in areas:
            if area.exists():
                shutil.rmtree(area)
                area.mkdir()

    # -- reading --------------------------------------------------------------------------

    def _dataset(self, directory: Location, schema: pa.Schema) -> ds.Dataset | None:
        if not directory.files(".parquet"):
            return None
        # An explicit schema: files written before a column was added read it as null,
        # instead of the first file's columns deciding for all.
        return ds.dataset(
            directory.path, filesystem=directory.fs, format="parquet",
            partitioning=PARTITIONING, schema=pa.schema([*schema, ("run_date", pa.string())]),
        )  # fmt: skip

    def _rows(self, failures: bool) -> ds.Dataset | None:
        """The job's results (or failures) dataset, read with its own schema."""
        if failures:
            return self._dataset(self.failures_dir, FAILURE_SCHEMA)
        return self._dataset(self.results_dir, RESULT_COLUMNS)

    def job_table(self, columns: list[str], failures: bool = False) -> pa.Table | None:
        """Columns of every row of this job, whatever the model and prompt version, from
        results (or failures); None when the dataset has no file yet."""
        dataset = self._rows(failures)
        if dataset is None:
            return None
        return dataset.to_table(columns=columns, filter=ds.field("job") == self.job)

    def key_table(
        self,
        columns: list[str],
        model: str,
        prompt_version: str,
        failures: bool = False,
        where: ds.Expression | None = None,
    ) -> pa.Table | None:
        """Columns of the rows of a resume key (and `where`), from results (or failures);
        None when the dataset has no file yet."""
        dataset = self._rows(failures)
        if dataset is None:
            return None
        by_model = ds.field("model") == model
        if not failures:  # a cascade's escalated rows belong to the key of its first model
            by_model |= ds.field("escalated_from") == model
        key = (
            (ds.field("job") == self.job)
            & by_model
            & (ds.field("prompt_version") == prompt_version)
        )
        if where is not None:
            key &= where
        return dataset.to_table(columns=columns, filter=key)

    def key_column(
        self,
        column: str,
        model: str,
        prompt_version: str,
        failures: bool = False,
        where: ds.Expression | None = None,
    ) -> pa.ChunkedArray | None:
        """One column of the rows of a resume key (and `where`), from results (or failures);
        None when the dataset has no file yet."""
        table = self.key_table([column], model, prompt_version, failures, where)
        return None if table is None else table.column(column)

    def done_ids(self, model: str, prompt_version: str) -> set[str]:
        """Ids already in results for this resume key (this store's job, `model`,
        `prompt_version`)."""
        ids = self.key_column("id", model, prompt_version)
        return set() if ids is None else set(ids.to_pylist())

    def settled_ids(self, model: str, prompt_version: str) -> set[str]:
        """Ids a run does not send again: in results, or refused by this model (a refusal
        follows the content, so asking the same model again would pay for the same)."""
        refused = self.key_column(
            "id", model, prompt_version, failures=True,
            where=ds.field("error_type") == "refusal",
        )  # fmt: skip
        done = self.done_ids(model, prompt_version)
        return done if refused is None else done | set(refused.to_pylist())

    def all_result_keys(self) -> set[tuple[str, str, str, str]]:
        """(id, job, model, prompt_version) of every result row, for folding in journals."""
        dataset = self._dataset(self.results_dir, RESULT_COLUMNS)
        if dataset is None:
            return set()
        table = dataset.to_table(columns=["id", "job", "model", "prompt_version"])
        return set(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))

    def spent_usd(self, model: str, prompt_version: str) -> float:
        """What earlier runs paid for this resume key: its results and its failures."""
        total = 0.0
        for failures in (False, True):
            costs = self.key_column("cost_usd", model, prompt_version, failures)
            if costs is not None:
                total += pc.sum(costs).as_py() or 0.0
        return total

    def failure_keys(self) -> set[tuple[str, str]]:
        """(id, run_id) of every failure row: a run records a row's failure once."""
        dataset = self._dataset(self.failures_dir, FAILURE_SCHEMA)
        if dataset is None:
            return set()
        table = dataset.to_table(columns=["id", "run_id"])
        return set(zip(table.column("id").to_pylist(), table.column("run_id").to_pylist(),
                       strict=True))  # fmt: skip

    def results_schema(self, wanted: pa.Schema, answer_columns: Collection[str] = ()) -> pa.Schema:
        """The schema every file of the results dataset has from now on: the dataset's
        columns, then those of `wanted` it lacks. A column `wanted` would give another type
        is refused (SchemaConflict), before any call; files lacking a column are rewritten
        with it as nulls. `answer_columns` names the job's typed answer columns, for the
        message."""
        files = self.results_dir.files(".parquet")
        schema = pa.schema([])
        file_columns: list[tuple[Location, set[str]]] = []
        for path in files:
            own = pq.read_schema(path.path, filesystem=path.fs)
            file_columns.append((path, set(own.names)))
            for field in own:
                if field.name not in schema.names:
                    schema = schema.append(field.remove_metadata())
        for field in wanted:
            if field.name not in schema.names:
                schema = schema.append(field)
                continue
            held = schema.field(field.name).type
            if held != field.type:
                what = "property" if field.name in answer_columns else "input column"
                raise SchemaConflict(
                    f"{self.results_dir}: the {what} {field.name!r} would be stored as "
                    f"{field.type}, but the dataset holds it as {held}; a changed type is "
                    "refused (readers would fail on the mix). Give the job another name, or "
                    "move this results directory away"
                )
        for path, names in file_columns:
            if set(schema.names) - names:
                self._widen(path, schema)
        return schema

    def record_definition(self, definition: dict[str, Any]) -> None:
        """Keep the job's definition beside its state (readers such as the notebook learn
        the kind of answer, labels and schema from it), replaced atomically."""
        self.definition_path.write_bytes(orjson.dumps(definition, option=orjson.OPT_INDENT_2))

    def _widen(self, published: Location, schema: pa.Schema) -> None:
        """Rewrite one published file with `schema`'s columns it lacks as nulls, atomically:
        on a disk staged outside the dataset, fsynced, then renamed over the old file; in a
        bucket overwritten in one PUT."""
        with published.open_input() as handle:
            table = pq.ParquetFile(handle).read()
        columns = {name: table.column(name) for name in table.column_names}
        widened = conformed(columns, table.num_rows, schema)
        if published.bucket is not None:
            pq.write_table(widened, published.path, filesystem=published.fs)
            crashpoints.reached("widen:replaced")
            return
        path = published.local
        stage = self.staging_dir.local / uuid.uuid4().hex
        stage.mkdir(parents=True)
        staged = stage / path.name
        pq.write_table(widened, staged)
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, path)
        crashpoints.reached("widen:replaced")
        fsync_dir(path.parent)
        shutil.rmtree(stage)

    # -- writing ----------------------------------------------------------------------------

    def publish(self, table: pa.Table, dataset_dir: Location, run_id: str) -> list[Location]:
        """Write `table` (with a run_date column) into a dataset, atomically per file.

        If writing fails (a full disk, say), the staged files are removed and the error
        raised: nothing partial ever reaches the dataset.
        """
        if table.num_rows == 0:
            return []
        self.check_held()
        token = uuid.uuid4().hex[:12]
        if dataset_dir.bucket is not None:
            return self._put(table, dataset_dir, f"part-{run_id}-{token}-0.parquet")
        stage = self.staging_dir.local / uuid.uuid4().hex
        stage.mkdir(parents=True)
        try:
            staged_files = self._stage(table, stage, run_id, token)
        except Exception:  # not on a (simulated) crash: a killed process cleans nothing
            shutil.rmtree(stage)
            raise
        published: list[Location] = []
        for staged in staged_files:
            relative = str(staged.relative_to(stage))
            target = dataset_dir / relative
            target.local.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target.local)  # atomic: readers see all of the file or none
            crashpoints.reached("publish:renamed")
            fsync_dir(target.local.parent)
            published.append(target)
        shutil.rmtree(stage)
        return published

    def _put(self, table: pa.Table, dataset_dir: Location, name: str) -> list[Location]:
        """Each run_date's rows as one object, written straight to its key: an upload is
        visible whole once complete, and a crash before that leaves nothing to see (the
        store drops an unfinished multipart upload; see the README's lifecycle rule)."""
        published: list[Location] = []
        dates = table.column("run_date")
        for run_date in sorted(set(dates.to_pylist())):
            rows = table.filter(pc.equal(dates, run_date)).drop_columns(["run_date"])
            target = dataset_dir / f"run_date={run_date}" / name
            pq.write_table(rows, target.path, filesystem=target.fs)
            crashpoints.reached("publish:renamed")
            published.append(target)
        return published

    def _stage(self, table: pa.Table, stage: Path, run_id: str, token: str) -> list[Path]:
        """Write the table's files into `stage` and fsync them; nothing is visible yet."""
        ds.write_dataset(
            table,
            stage,
            format="parquet",
            partitioning=PARTITIONING,
            basename_template=f"part-{run_id}-{token}-{{i}}.parquet",
            existing_data_behavior="error",
        )
        staged_files = sorted(stage.rglob("*.parquet"))
        for staged in staged_files:
            with open(staged, "rb") as handle:
                os.fsync(handle.fileno())
        crashpoints.reached("publish:staged")
        return staged_files


def run_date_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")


def results_table(
    records: list[OkRecord],
    carried: pd.DataFrame,
    schema: pa.Schema,
    run_date: str,
    answer: dict[str, pa.Array] | None = None,
) -> pa.Table:
    """Result rows (from the journal) joined to their carried input columns and their typed
    answer columns (`answer`), as a table of the dataset's `schema` plus run_date."""
    frame = pd.DataFrame.from_records(records, columns=RESULT_COLUMNS.names)
    frame["completed_at"] = pd.to_datetime(frame["completed_at"], utc=True, format="ISO8601")
    carried_names = [c for c in carried.columns if c in schema.names]
    if carried_names:
        frame = frame.merge(carried[carried_names], how="left", left_on="id", right_index=True)
    answer = answer or {}
    framed = [f for f in schema if f.name in frame.columns and f.name not in answer]
    table = _to_arrow(frame, pa.schema(framed))
    columns = {**dict(zip(table.column_names, table.columns, strict=True)), **answer}
    columns["run_date"] = pa.array([run_date] * len(frame), pa.string())
    return conformed(columns, len(frame), pa.schema([*schema, ("run_date", pa.string())]))


def failures_table(records: list[FailedRecord], run_date: str) -> pa.Table:
    frame = pd.DataFrame.from_records(records, columns=FAILURE_SCHEMA.names)
    frame["failed_at"] = pd.to_datetime(frame["failed_at"], utc=True, format="ISO8601")
    frame["run_date"] = run_date
    return _to_arrow(frame, pa.schema([*FAILURE_SCHEMA, ("run_date", pa.string())]))
