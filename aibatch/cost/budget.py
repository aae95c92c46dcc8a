"""A hard spending cap: reserve a request's worst case before sending it, settle after.

The cap covers a job's whole output, not one invocation: what earlier runs already spent on
the same job, model and prompt version counts, so a crash and a re-run cannot spend it
twice. A request is sent only if its worst case (every prompt token at the dearest input
rate, every allowed output token) fits beside what is spent and what is in flight; when it
does not fit, the request waits for those in flight to settle (they usually cost less than
reserved) and the run stops only when it cannot fit with nothing in flight. So a stopped
run has spent within one request's worst case of the cap, and never more than the cap.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aibatch.cost.pricing import PriceBook
from aibatch.errors import BadInput, BudgetExhausted


@dataclass(frozen=True)
class WorstCase:
    """The most one request can cost, from the prompt estimate and its max_tokens (which
    bounds thinking and answer together: thinking is billed as output)."""

    prices: PriceBook
    model: str
    batch: bool = False

    def check_price(self) -> None:
        """ValueError naming the fix when the model has no known price."""
        if self.prices.price_for(self.model) is None:
            raise BadInput(
                f"--budget-usd needs a price for {self.model}: add it to a price file (--prices)"
            )

    def cost_usd(self, prompt_tokens: float, max_tokens: int) -> float:
        self.check_price()
        price = self.prices.price_for(self.model)
        assert price is not None
        # A margin on the estimate: it is calibrated, but the first requests are a guess.
        prompt = int(prompt_tokens * 1.2) + 1
        rates = price.for_prompt(prompt + max_tokens)
        writes = max(rates.cache_write, rates.cache_write_1h_rate)
        worst = prompt * max(rates.input, writes) + max_tokens * rates.output
        worst /= 1_000_000
        return worst * rates.batch_discount if self.batch else worst


class Budget:
    """Spend so far, reservations in flight, and the cap they must stay under."""

    def __init__(self, limit_usd: float, spent_before_usd: float = 0.0) -> None:
        self.limit_usd = limit_usd
        self.spent_before_usd = spent_before_usd
        self.spent_usd = 0.0  # by this run
        self.reserved_usd = 0.0
        self.in_flight = 0
        self._settled = asyncio.Condition()

    @property
    def committed_usd(self) -> float:
        return self.spent_before_usd + self.spent_usd + self.reserved_usd

    def fits(self, amount_usd: float) -> bool:
        return self.committed_usd + amount_usd <= self.limit_usd

    async def reserve(self, amount_usd: float) -> None:
        """Hold `amount_usd` for a request; raise BudgetExhausted if it can never fit."""
        async with self._settled:
            while not self.fits(amount_usd):
                if self.in_flight == 0:
                    raise BudgetExhausted(self.exhausted_message(amount_usd))
                await self._settled.wait()
            self.hold(amount_usd)

    def try_reserve(self, amount_usd: float) -> bool:
        """Reserve without waiting (for batches, sized before submission)."""
        if not self.fits(amount_usd):
            return False
        self.hold(amount_usd)
        return True

    def hold(self, amount_usd: float) -> None:
        """Reserve without checking the cap: a request let through, or what is already
        committed at the API (a batch submitted before a crash)."""
        self.reserved_usd += amount_usd
        self.in_flight += 1

    async def settle(self, reserved_usd: float, actual_usd: float) -> None:
        """The request is done: replace its reservation by what it cost (0 if not billed)."""
        async with self._settled:
            self.settle_now(reserved_usd, actual_usd)
            self._settled.notify_all()

    def settle_now(self, reserved_usd: float, actual_usd: float) -> None:
        self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd)
        self.in_flight = max(0, self.in_flight - 1)
        self.spent_usd += actual_usd

    def exhausted_message(self, next_usd: float) -> str:
        spent = self.spent_before_usd + self.spent_usd
        return (
            f"budget reached: ${spent:.4f} of --budget-usd {self.limit_usd:g} spent "
            f"(${self.spent_usd:.4f} by this run); the next request could cost up to "
            f"${next_usd:.4f}; run again with a higher --budget-usd to continue"
        )
