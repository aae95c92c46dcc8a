"""What a run draws from limits it shares with other processes: requests, input tokens and
output tokens per minute, each granted by a limit elsewhere (in aibatch's flow, a Prefect
rate limit) through an `acquire` the caller passes in. The engine knows no server.

Each grant is a round trip to that server, so units are fetched a batch at a time and
spent here. A request's tokens are known only once its answer is back: it draws the
pacer's estimate before it goes (the same amounts its own buckets reserve), and the
difference is settled after, as a debt the next draw repays first or as credit kept here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aibatch.engine.pacer import Reservation

Acquire = Callable[[int], Awaitable[None]]


class SharedAllowance:
    """Units (requests, or tokens) granted by a limit shared with other processes.

    `acquire(n)` blocks until the shared limit grants `n` units. Units are fetched `batch`
    at a time and spent locally; what is left when the run ends simply decays.
    """

    def __init__(self, acquire: Acquire, batch: int) -> None:
        if batch < 1:
            raise ValueError("batch must be at least 1")
        self.acquire = acquire
        self.batch = batch
        self.credit = 0.0  # fetched and not spent; below 0, a debt the next draw repays
        self.acquired = 0
        self._lock = asyncio.Lock()

    @classmethod
    def for_rate(cls, acquire: Acquire, per_min: float, batch_s: float) -> SharedAllowance:
        return cls(acquire, max(1, round(per_min / 60 * batch_s)))

    async def take(self, amount: float = 1.0) -> None:
        """Spend `amount` units, first fetching batches until the credit covers it. A
        request larger than a batch fetches several, one at a time: each is a share of
        the limit's burst, so large requests do not starve behind small ones."""
        async with self._lock:  # one fetch at a time; the others wait for its batch
            while self.credit < amount:
                await self.acquire(self.batch)
                self.credit += self.batch
                self.acquired += self.batch
            self.credit -= amount

    def settle(self, extra: float) -> None:
        """`extra` units more were used than drawn (negative: fewer). A debt is repaid by
        the next draw. A refund stays as credit, up to a batch: credit held longer would be
        spent later, in a burst the shared limit never granted at that time."""
        if extra >= 0:
            self.credit -= extra
        else:
            self.credit = min(self.credit - extra, max(self.credit, float(self.batch)))


@dataclass(frozen=True)
class SharedLimits:
    """The limits a run shares with other processes; each is None if it is not shared."""

    requests: SharedAllowance | None = None
    input_tokens: SharedAllowance | None = None
    output_tokens: SharedAllowance | None = None

    async def take(self, drawn: Reservation) -> None:
        """Draw one request and its estimated tokens: the part of each rate that the other
        processes leave us."""
        if self.requests is not None:
            await self.requests.take()
        if self.input_tokens is not None:
            await self.input_tokens.take(drawn.input_tokens)
        if self.output_tokens is not None:
            await self.output_tokens.take(drawn.output_tokens)

    def settle(self, drawn: Reservation, input_tokens: float, output_tokens: float) -> None:
        """An answer used these tokens (as the API counts them against its limits) where
        `drawn` was taken: charge or refund the difference."""
        if self.input_tokens is not None:
            self.input_tokens.settle(input_tokens - drawn.input_tokens)
        if self.output_tokens is not None:
            self.output_tokens.settle(output_tokens - drawn.output_tokens)

    def release(self, drawn: Reservation) -> None:
        """A request sent but never answered (an error): its tokens back, as the pacer
        gives back its own reservation. The request itself was made: it stays spent."""
        self.settle(drawn, 0.0, 0.0)

    def cancel(self, drawn: Reservation) -> None:
        """A request drawn for and then not sent: the request and its tokens back."""
        if self.requests is not None:
            self.requests.settle(-1.0)
        self.release(drawn)
