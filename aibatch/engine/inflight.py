"""An in-flight limit whose size can change while requests wait (asyncio.Semaphore's cannot)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class InFlightLimiter:
    """At most `limit()` holders at once; waiters are served in arrival order."""

    def __init__(self, limit: Callable[[], int]) -> None:
        self.limit = limit
        self.holders = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if self.holders < self.limit() and not self._waiters:
            self.holders += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as we were cancelled: give it back
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.holders -= 1
        self.wake()

    def wake(self) -> None:
        """Admit waiters up to the current limit (call after the limit grows)."""
        while self._waiters and self.holders < self.limit():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.holders += 1
                waiter.set_result(None)
