"""What a request costs, from a dated price table.

Prices change and model names move, so every price carries the date it was checked and a
model without a known price costs `None` ("unknown"), never a silent $0.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_CHECKED = "2026-11-28"


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens."""

    input: float
    output: float
    cache_write: float  # 5-minute cache writes: 1.25 × input
    cache_read: float  # 0.1 × input
    batch_discount: float = 0.5


def _price(input_per_mtok: float, output_per_mtok: float) -> Price:
    return Price(input_per_mtok, output_per_mtok, input_per_mtok * 1.25, input_per_mtok * 0.1)


# Published list prices for the models whose price was known on PRICES_CHECKED. Matched by
# prefix, so dated snapshots (claude-haiku-4-5-20251001) share their alias's price.
PRICE_TABLE: dict[str, Price] = {
    "claude-haiku-4-5": _price(1.0, 5.0),
    "claude-sonnet-4-5": _price(3.0, 15.0),
    "claude-sonnet-4-6": _price(3.0, 15.0),
    "claude-opus-4-5": _price(5.0, 25.0),
    "claude-opus-4-6": _price(5.0, 25.0),
}


def price_for(model: str) -> Price | None:
    for prefix in sorted(PRICE_TABLE, key=len, reverse=True):
        if model == prefix or model.startswith(prefix + "-"):
            return PRICE_TABLE[prefix]
    return None


def cost_usd(
    model: str,
    input_tokens: int,
    output_tokens: int,
    cache_write_tokens: int = 0,
    cache_read_tokens: int = 0,
    batch: bool = False,
) -> float | None:
    price = price_for(model)
    if price is None:
        return None
    total = (
        input_tokens * price.input
        + output_tokens * price.output
        + cache_write_tokens * price.cache_write
        + cache_read_tokens * price.cache_read
    ) / 1_000_000
    return total * price.batch_discount if batch else total
