"""run_all: task runs side by side, all stopped at once by a SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from types import FrameType

import pytest
from prefect.exceptions import TerminationSignal

from aibatch.flows.run_all import run_all
from aibatch.runs.interrupts import SIGTERM_IN_EVENT_LOOP


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals need the main thread"
)
def test_a_sigterm_stops_every_run_and_each_reports_the_signal() -> None:
    reached_by_old_handler: list[int] = []

    def old_handler(number: int, frame: FrameType | None) -> None:
        reached_by_old_handler.append(number)

    previous = signal.signal(signal.SIGTERM, old_handler)
    in_loop = SIGTERM_IN_EVENT_LOOP.set(True)  # as `aibatch run` sets it
    stops: list[str] = []
    try:

        async def waits(started: asyncio.Event) -> str:
            started.set()
            await asyncio.sleep(30)  # only a cancel ends it sooner
            return "finished"

        async def finishes() -> str:
            return "done"

        async def main() -> list[str | BaseException]:
            started = [asyncio.Event(), asyncio.Event()]
            running = asyncio.ensure_future(
                run_all([waits(started[0]), finishes(), waits(started[1])], stops.append)
            )
            await asyncio.gather(*(event.wait() for event in started))
            os.kill(os.getpid(), signal.SIGTERM)
            return await asyncio.wait_for(running, timeout=20)

        outcomes = asyncio.run(main())
        assert outcomes[1] == "done"
        for stopped in (outcomes[0], outcomes[2]):
            assert isinstance(stopped, TerminationSignal) and stopped.signal == signal.SIGTERM
        assert stops == ["interrupted (SIGTERM)"]
        assert reached_by_old_handler == []  # the loop took it, not the handler before
        assert signal.getsignal(signal.SIGTERM) is old_handler  # and gave it back
    finally:
        SIGTERM_IN_EVENT_LOOP.reset(in_loop)
        signal.signal(signal.SIGTERM, previous)
