"""Running a flow's task runs side by side, and stopping them all on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from prefect.exceptions import TerminationSignal

from aibatch.runs.interrupts import SIGTERM_IN_EVENT_LOOP

T = TypeVar("T")


async def run_all(
    runs: list[Coroutine[Any, Any, T]], stop: Callable[[str], None]
) -> list[T | BaseException]:
    """Run every task run (chunks, batch polls); one that fails leaves the others running,
    but a signal (SIGTERM, Ctrl-C) stops them all at once, so the flow can publish what
    was answered (and cancel its batches) and exit. The task runs stopped by a SIGTERM
    report it as their outcome: a `TerminationSignal`, as Prefect itself raises."""
    tasks = [asyncio.ensure_future(run) for run in runs]
    terminated: list[TerminationSignal] = []

    def stop_all(reason: str) -> None:
        stop(reason)
        for other in tasks:
            other.cancel()

    def on_done(task: asyncio.Task[T]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, Exception):
            stop_all(f"interrupted ({type(error).__name__})")

    def on_sigterm() -> None:
        terminated.append(TerminationSignal(signal=signal.SIGTERM))
        stop_all("interrupted (SIGTERM)")

    for task in tasks:
        task.add_done_callback(on_done)
    with _sigterm_calls(on_sigterm):
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    if not terminated:
        return outcomes
    return [terminated[0] if isinstance(o, asyncio.CancelledError) else o for o in outcomes]


@contextlib.contextmanager
def _sigterm_calls(callback: Callable[[], None]) -> Iterator[None]:
    """While inside, a SIGTERM calls `callback` from the event loop.

    Prefect's own handler raises `TerminationSignal` wherever the main thread happens to
    be, and asyncio swallows an exception raised inside its transports' callbacks (seen:
    "Fatal write error on socket transport" from a Prefect API call): the signal was then
    lost and the run went on to the end. The event loop's handler runs between callbacks.
    Outside the main thread (or where the loop has no signal support) Prefect's stays, and
    under a Prefect worker too (see `SIGTERM_IN_EVENT_LOOP`).
    """
    if not SIGTERM_IN_EVENT_LOOP.get():
        yield
        return
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        loop.add_signal_handler(signal.SIGTERM, callback)
    except (NotImplementedError, RuntimeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGTERM)  # it leaves SIGTERM at its default
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)  # Prefect's, as the engine expects
