"""Running a flow's task runs side by side, and stopping them all on a signal."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


async def run_all(
    runs: list[Coroutine[Any, Any, T]], stop: Callable[[str], None]
) -> list[T | BaseException]:
    """Run every task run (chunks, batch polls); one that fails leaves the others running,
    but a signal (SIGTERM, Ctrl-C: a BaseException that Prefect raises in whichever task
    run is running) stops them all at once, so the flow can publish what was answered (and
    cancel its batches) and exit."""
    tasks = [asyncio.ensure_future(run) for run in runs]

    def on_done(task: asyncio.Task[T]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, Exception):
            stop(f"interrupted ({type(error).__name__})")
            for other in tasks:
                other.cancel()

    for task in tasks:
        task.add_done_callback(on_done)
    return await asyncio.gather(*tasks, return_exceptions=True)
