"""How late this event loop runs its callbacks: the sign that the client, not the API, is
the bottleneck.

When the process is short of CPU, every answer waits its turn in the loop and measured
latency grows for reasons the API has nothing to do with; more requests in flight then only
lengthen the queue. No library exposes this for a plain asyncio loop, so it is measured
here: a callback asks to run every `interval_s` and records how late it ran.
"""

from __future__ import annotations

import asyncio

INTERVAL_S = 0.02
SMOOTHING = 0.2  # weight of the newest sample in the moving average


class LoopLagProbe:
    """Smoothed lateness of this loop's callbacks, measured only while `active()` is true
    (so an idle run leaves no timer behind)."""

    def __init__(self, interval_s: float = INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._active = False

    def start(self) -> None:
        """Begin (or keep) measuring; call from inside the running loop."""
        self._active = True
        if self._handle is None:
            self._schedule(asyncio.get_running_loop())

    def stop(self) -> None:
        self._active = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        self._due = loop.time() + self.interval_s
        self._handle = loop.call_at(self._due, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        late = max(0.0, loop.time() - self._due)
        self.lag_s = (1 - SMOOTHING) * self.lag_s + SMOOTHING * late
        self._handle = None
        if self._active:
            self._schedule(loop)
