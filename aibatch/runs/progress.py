"""A run's progress where a person reads it.

In a terminal: one live bar at the bottom (done/total, rate, 429s, failures, ETA), and every
log line printed above it through the same console, so the scrollback holds each line once
and the bar once. Without a terminal (a log file, CI): a plain line every PLAIN_EVERY_S
seconds and one at the end, which a log reader can use. Chunks finishing are not shown in
a terminal unless `verbose`: retries and failures still are.

Log handlers that print through a rich console (Prefect's do) are pointed at the bar's
console while it shows; the handlers are found by that attribute, so this module imports
nothing from Prefect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from aibatch.engine.stats import RunStats

PLAIN_EVERY_S = 10.0  # a progress line this often without a terminal
REDRAW_EVERY_S = 0.25


def plain_line(stats: RunStats, description: str) -> str:
    """One progress line for a log: done of total, rate, 429s, failures, time, ETA."""
    elapsed = stats.elapsed_s()
    rate = stats.done / elapsed if elapsed > 0 else 0.0
    share = f" ({stats.done / stats.total:.0%})" if stats.total else ""
    left = stats.total - stats.done
    eta = str(timedelta(seconds=round(left / rate))) if rate > 0 and left > 0 else "-"
    return (
        f"{description}: {stats.done:,}/{stats.total:,} rows{share}, {rate:.1f} rows/s, "
        f"429s {stats.http_429}, failed {stats.failed}, elapsed "
        f"{timedelta(seconds=round(elapsed))}, ETA {eta}"
        + (f", {stats.status}" if stats.status else "")
    )


class _QuietChunks(logging.Filter):
    """Drops a task run's "Finished in state Completed" line (a chunk done): the bar says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and record.name.endswith("task_runs")
            and "Finished in state Completed" in record.getMessage()
        )


def _console_handlers() -> list[logging.Handler]:
    """Handlers that print through a rich console (Prefect's console handler)."""
    loggers = [logging.getLogger(), *(
        logging.getLogger(name) for name in list(logging.root.manager.loggerDict)
    )]  # fmt: skip
    found: list[logging.Handler] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(getattr(handler, "console", None), Console) and handler not in found:
                found.append(handler)
    return found


@contextlib.contextmanager
def _logs_above(console: Console, verbose: bool) -> Iterator[None]:
    """Point rich log handlers at `console` (the bar's) while it shows, quiet chunks."""
    handlers = _console_handlers()
    saved = [handler.console for handler in handlers]  # type: ignore[attr-defined]
    quiet = _QuietChunks()
    for handler in handlers:
        handler.console = console  # type: ignore[attr-defined]
        if not verbose:
            handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler, original in zip(handlers, saved, strict=True):
            handler.console = original  # type: ignore[attr-defined]
            handler.removeFilter(quiet)


@contextlib.asynccontextmanager
async def progress_bar(
    stats: RunStats,
    description: str,
    show: bool = True,
    console: Console | None = None,
    verbose: bool = False,
) -> AsyncIterator[None]:
    """Show progress from `stats` until the block ends (if `show`): the live bar in a
    terminal, plain lines otherwise."""
    if not show:
        yield
        return
    console = console or Console(stderr=True)
    if not console.is_terminal:
        async with _plain_lines(stats, description):
            yield
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]:>6.1f} req/s"),
        TextColumn("429s {task.fields[http_429]}"),
        TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )
    bar = progress.add_task(
        description, total=stats.total, rate=0.0, http_429=0, failed=0, status=""
    )

    def redraw() -> None:
        elapsed = stats.elapsed_s()
        progress.update(
            bar,
            completed=stats.done,
            total=stats.total,
            rate=stats.http_requests / elapsed if elapsed > 0 else 0.0,
            http_429=stats.http_429,
            failed=stats.failed,
            status=stats.status,
        )

    with progress, _logs_above(progress.console, verbose):
        async with _every(REDRAW_EVERY_S, redraw):
            yield


@contextlib.asynccontextmanager
async def _plain_lines(stats: RunStats, description: str) -> AsyncIterator[None]:
    def show() -> None:
        print(plain_line(stats, description), file=sys.stderr, flush=True)

    async with _every(PLAIN_EVERY_S, show):
        yield


@contextlib.asynccontextmanager
async def _every(seconds: float, show: Callable[[], None]) -> AsyncIterator[None]:
    """Call `show` every `seconds` while the block runs, and once more when it ends."""

    async def repeat() -> None:
        while True:
            await asyncio.sleep(seconds)
            show()

    repeater = asyncio.create_task(repeat())
    try:
        yield
    finally:
        repeater.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await repeater
        show()


def render_summary(
    summary: dict[str, object], results: str, console: Console | None = None
) -> None:
    """A run's summary as a table (on stderr, beside the progress): rows, requests, rate,
    time, tokens, cost, and where the results are."""
    from rich.table import Table

    console = console or Console(stderr=True, highlight=False)

    def count(key: str) -> int:
        value = summary.get(key)
        return int(value) if isinstance(value, int | float) else 0

    title = f"{summary.get('job')} on {summary.get('model')}: run {summary.get('run_id')}"
    table = Table(title=title, show_header=False)
    table.add_column("what", style="bold")
    table.add_column("figures")
    failures = summary.get("failures_by_type") or {}
    by_type = (
        ", ".join(f"{k} {v}" for k, v in failures.items()) if isinstance(failures, dict) else ""
    )
    rows = f"{count('ok'):,} ok, {count('failed'):,} failed" + (f" ({by_type})" if by_type else "")
    rows += f", {count('already_done'):,} already done"
    if count("held_back"):
        rows += f", {count('held_back'):,} left for a later run"
    if count("unfinished"):
        rows += f", {count('unfinished'):,} unfinished"
    table.add_row("rows", rows)
    table.add_row("requests", (
        f"{count('http_requests'):,}: {count('retries'):,} retries, {count('http_429'):,} 429s, "
        f"{count('http_529'):,} 529s, {count('server_errors'):,} server errors, "
        f"{count('connection_errors'):,} connection errors"
    ))  # fmt: skip
    if count("escalated") or count("calls_saved"):
        table.add_row("saved and escalated", (
            f"{count('calls_saved'):,} rows answered by another row's call, "
            f"{count('escalated'):,} asked again of the stronger model"
        ))  # fmt: skip
    table.add_row("rate, time", f"{summary.get('rows_per_s')} rows/s, {summary.get('elapsed_s')} s")
    table.add_row("tokens", (
        f"{count('input_tokens'):,} in, {count('output_tokens'):,} out, "
        f"{count('cache_read_input_tokens'):,} cache read, "
        f"{count('cache_creation_input_tokens'):,} cache written"
    ))  # fmt: skip
    cost = summary.get("cost_usd")
    table.add_row("cost", "unknown (a model without a price)" if cost is None
                  else f"${float(str(cost)):,.4f}")  # fmt: skip
    table.add_row("results", results)
    console.print(table)
