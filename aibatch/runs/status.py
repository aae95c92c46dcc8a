"""What an output directory holds, job by job, read from its datasets and batch ledger alone:
`aibatch status` (nothing is sent to the API, nothing is written).

Per job: the results and the rows that failed for good (by error type; a failure later
answered counts as a result), what every billed answer cost, the models and prompt versions
answered, the last run and when it wrote, and the Message Batches still open.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from aibatch.engine.batches import BatchLedger
from aibatch.output.store import JOB_DIR, ResultStore
from aibatch.storage.location import Location, location


@dataclass
class JobStatus:
    """One job's state in an output directory (the `--json` report's entries)."""

    job: str
    results: int = 0
    failures: int = 0  # rows failed for good and not answered since
    failures_by_type: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = 0.0  # None: some answer's model has no known price
    cost_unknown_rows: int = 0
    models: dict[str, int] = field(default_factory=dict)  # results per model
    prompt_versions: dict[str, int] = field(default_factory=dict)
    escalated: int = 0
    last_run_id: str | None = None
    last_written_at: str | None = None  # UTC, ISO 8601
    open_batches: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _counts(column: pa.ChunkedArray) -> dict[str, int]:
    counted = pc.value_counts(column.drop_null()).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in sorted(counted, key=lambda c: -c["counts"])}


def job_status(output: Path | Location, job: str) -> JobStatus:
    status = JobStatus(job)
    store = ResultStore(output, job)
    results = store.job_table(
        ["id", "model", "prompt_version", "cost_usd", "run_id", "completed_at", "escalated_from"]
    )
    costs: list[float | None] = []
    latest: list[tuple[Any, str]] = []
    answered: set[str] = set()
    if results is not None and results.num_rows:
        status.results = results.num_rows
        answered = set(results.column("id").to_pylist())
        status.models = _counts(results.column("model"))
        status.prompt_versions = _counts(results.column("prompt_version"))
        status.escalated = results.num_rows - results.column("escalated_from").null_count
        costs += results.column("cost_usd").to_pylist()
        at = pc.max(results.column("completed_at")).as_py()
        index = pc.index(results.column("completed_at"), at).as_py()
        latest.append((at, results.column("run_id")[index].as_py()))
    failed = store.job_table(["id", "error_type", "cost_usd", "run_id", "failed_at"], failures=True)
    if failed is not None and failed.num_rows:
        costs += failed.column("cost_usd").to_pylist()
        frame = failed.to_pandas().sort_values("failed_at").drop_duplicates("id", keep="last")
        standing = frame[~frame["id"].isin(answered)]
        status.failures = len(standing)
        status.failures_by_type = {str(k): int(v) for k, v in
                                   standing["error_type"].value_counts().items()}  # fmt: skip
        last = frame.iloc[-1]
        latest.append((last["failed_at"].to_pydatetime(), str(last["run_id"])))
    status.cost_unknown_rows = sum(1 for c in costs if c is None)
    status.cost_usd = None if status.cost_unknown_rows else round(sum(c or 0.0 for c in costs), 8)
    if latest:
        at, run_id = max(latest, key=lambda pair: pair[0])
        status.last_run_id, status.last_written_at = run_id, at.isoformat()
    ledger = BatchLedger(store.state_dir / "batches")
    status.open_batches = [s.batch_id or s.key for s in ledger.load() if s.open and s.job == job]
    return status


def output_status(output: str | Path) -> list[JobStatus]:
    """Every job of an output directory or bucket prefix (a folder named like a job, holding
    its results or failures), in name order; FileNotFoundError if there is no such
    directory."""
    try:
        root = location(output)
        found = root.exists()
    except OSError as error:  # a bucket that cannot be read: say why
        raise FileNotFoundError(str(error)) from error
    if not found:
        raise FileNotFoundError(f"{root}: no such output directory")
    jobs = [
        folder.name for folder in root.subfolders()
        if JOB_DIR.match(folder.name)
        and ((folder / "results").exists() or (folder / "failures").exists())
    ]  # fmt: skip
    return [job_status(root, job) for job in jobs]


def render(output: str | Path, jobs: list[JobStatus]) -> None:
    """The jobs as one table on stdout, with what is open or failing underneath."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, markup=False)
    if not console.is_terminal:
        console = Console(highlight=False, markup=False, width=max(console.width, 120))
    if not jobs:
        console.print(f"{output}: no job has results or failures here yet")
        return
    table = Table(title=f"{output}: {len(jobs)} job(s)")
    for name, justify in (("job", "left"), ("results", "right"), ("failed", "right"),
                          ("cost", "right"), ("models", "left"), ("last run", "left"),
                          ("open batches", "right")):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for s in jobs:
        cost = "unknown" if s.cost_usd is None else f"${s.cost_usd:,.4f}"
        models = ", ".join(f"{m} ({n:,})" for m, n in s.models.items())
        last = f"{s.last_written_at[:19].replace('T', ' ')} UTC" if s.last_written_at else ""
        table.add_row(s.job, f"{s.results:,}", f"{s.failures:,}", cost, models, last,
                      str(len(s.open_batches)) if s.open_batches else "")  # fmt: skip
    console.print(table)
    for s in jobs:
        if s.failures_by_type:
            kinds = ", ".join(f"{k}: {n:,}" for k, n in s.failures_by_type.items())
            console.print(f"{s.job}: failed rows by error type: {kinds}")
        if len(s.prompt_versions) > 1:
            console.print(f"{s.job}: {len(s.prompt_versions)} prompt versions answered "
                          f"({', '.join(s.prompt_versions)})")  # fmt: skip
        if s.open_batches:
            console.print(f"{s.job}: open Message Batches {', '.join(s.open_batches)}: run "
                          "again with --mode batch to collect them")  # fmt: skip
