"""A live terminal progress bar for local runs: done/total, rate, ETA, 429s."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

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


@contextlib.asynccontextmanager
async def progress_bar(
    stats: RunStats, description: str, show: bool = True, console: Console | None = None
) -> AsyncIterator[None]:
    """Redraw from `stats` a few times a second until the block ends (if `show`)."""
    if not show:
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
        console=console or Console(stderr=True),
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

    async def refresh() -> None:
        while True:
            redraw()
            await asyncio.sleep(0.25)

    with progress:
        refresher = asyncio.create_task(refresh())
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            redraw()
