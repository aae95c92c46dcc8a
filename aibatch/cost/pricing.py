"""What a request costs, from a dated price table that a user file can override.

Prices change and model names move, so the table carries the date it was checked, a user
can replace or add prices with a TOML file (`--prices FILE` or `AIBATCH_PRICES`), and a
model without a known price costs `None` ("unknown"), never a silent $0.

A price file looks like this (every rate in US dollars per million tokens; cache rates
default to 1.25 × input for 5-minute writes, 2 × input for 1-hour writes and 0.1 × input
for reads, the batch discount to 0.5):

    checked = "2026-12-01"

    [models.claude-haiku-5-5]
    input = 0.10
    output = 0.50
    cache_read = 0.01
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aibatch.errors import PriceFileError
from aibatch.tomlfile import overlay_file, read_toml

PRICES_CHECKED = "2026-12-06"
PRICES_ENV = "AIBATCH_PRICES"


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens of each kind, for one model."""

    input: float
    output: float
    cache_write: float  # 5-minute cache writes
    cache_read: float
    batch_discount: float = 0.5  # the Message Batches API bills this share of each rate
    # 1-hour cache writes (batch mode's shared prefix); None: CACHE_WRITE_1H_SHARE × input.
    cache_write_1h: float | None = None
    # Some models bill a whole request at higher rates once its prompt (input, cache writes
    # and cache reads together) is longer than a threshold.
    long_prompt_threshold: int | None = None
    long_prompt: Price | None = None

    @property
    def cache_write_1h_rate(self) -> float:
        return (
            self.input * CACHE_WRITE_1H_SHARE
            if self.cache_write_1h is None
            else self.cache_write_1h
        )

    def for_prompt(self, prompt_tokens: int) -> Price:
        threshold = self.long_prompt_threshold
        if self.long_prompt is not None and threshold is not None and prompt_tokens > threshold:
            return self.long_prompt
        return self


# The usual cache rates, as shares of the input rate (5-minute writes, 1-hour writes,
# reads: https://platform.claude.com/docs/en/build-with-claude/prompt-caching).
CACHE_WRITE_SHARE = 1.25
CACHE_WRITE_1H_SHARE = 2.0
CACHE_READ_SHARE = 0.1


def _price(
    input_per_mtok: float, output_per_mtok: float, cache_read_share: float = CACHE_READ_SHARE
) -> Price:
    return Price(
        input_per_mtok,
        output_per_mtok,
        cache_write=input_per_mtok * CACHE_WRITE_SHARE,
        cache_read=input_per_mtok * cache_read_share,
    )


# Published list prices, as read on PRICES_CHECKED. Matched by prefix, so dated snapshots
# (claude-haiku-4-5-20251001) share their alias's price.
BUILT_IN_PRICES: dict[str, Price] = {
    # Haiku 5.5 bills requests whose prompt passes 100k tokens at five times the rates.
    "claude-haiku-5-5": replace(
        _price(0.10, 0.50), long_prompt_threshold=100_000, long_prompt=_price(0.50, 2.50)
    ),
    "claude-sonnet-5-5": _price(2.0, 10.0, cache_read_share=0.05),  # cache reads cut 2026-10
    "claude-opus-5-5": _price(4.0, 20.0, cache_read_share=0.05),
    "claude-fable-5-1": _price(10.0, 50.0, cache_read_share=0.025),
    "claude-sonnet-5": _price(2.0, 10.0),
    "claude-opus-5": _price(5.0, 25.0),
    "claude-haiku-4-5": _price(1.0, 5.0),
    "claude-sonnet-4-5": _price(3.0, 15.0),
    "claude-sonnet-4-6": _price(3.0, 15.0),
    "claude-opus-4-5": _price(5.0, 25.0),
    "claude-opus-4-6": _price(5.0, 25.0),
    "claude-opus-4-7": _price(5.0, 25.0),
    # https://platform.claude.com/docs/en/models/opus-4-8/overview: $5 / $25 (legacy).
    "claude-opus-4-8": _price(5.0, 25.0),
    # Claude Fable 5.2: no price on the platform's pages yet, so its cost shows as unknown
    # (a price file adds it). No "claude-fable-5" entry either: as a prefix it would price
    # claude-fable-5-2 at Fable 5's rates.
}


class _PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    cache_write_1h: float | None = Field(default=None, ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    batch_discount: float = Field(default=0.5, gt=0, le=1)

    def price(self) -> Price:
        return Price(
            self.input,
            self.output,
            self.input * CACHE_WRITE_SHARE if self.cache_write is None else self.cache_write,
            self.input * CACHE_READ_SHARE if self.cache_read is None else self.cache_read,
            self.batch_discount,
            self.cache_write_1h,
        )


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checked: str | None = None
    models: dict[str, _PriceEntry] = Field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    """The tokens one answer was billed for, as the API's `usage` reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_write_tokens: int = 0  # every cache write, 1-hour ones included
    cache_read_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part written to the 1-hour cache

    @classmethod
    def of(cls, usage: Any) -> Usage:
        """From an SDK `Usage` (or anything with its attributes)."""
        creation = getattr(usage, "cache_creation", None)
        return cls(
            usage.input_tokens,
            usage.output_tokens,
            getattr(usage, "cache_creation_input_tokens", None) or 0,
            getattr(usage, "cache_read_input_tokens", None) or 0,
            getattr(creation, "ephemeral_1h_input_tokens", None) or 0,
        )

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens


@dataclass(frozen=True)
class PriceBook:
    """The prices in force for a run: the built-in table, overridden by the user's file."""

    prices: Mapping[str, Price]
    checked: str = PRICES_CHECKED
    source: str = "built-in table"

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceBook:
        """The built-in table, with `path` (or $AIBATCH_PRICES) laid over it."""
        file = overlay_file(path, PRICES_ENV)
        if file is None:
            return cls(dict(BUILT_IN_PRICES))
        parsed = read_toml(file, _PriceFile, "price file", PriceFileError)
        prices = dict(BUILT_IN_PRICES)
        prices.update({name: entry.price() for name, entry in parsed.models.items()})
        checked = parsed.checked or f"unknown (file {file.name} gives no date)"
        return cls(prices, checked=checked, source=f"{file} over the built-in table")

    def price_for(self, model: str) -> Price | None:
        for prefix in sorted(self.prices, key=len, reverse=True):
            if model == prefix or model.startswith(prefix + "-"):
                return self.prices[prefix]
        return None

    def cost_usd(self, model: str, usage: Usage, batch: bool = False) -> float | None:
        """What `usage` costs on `model`, or None when the model's price is unknown."""
        price = self.price_for(model)
        if price is None:
            return None
        rates = price.for_prompt(usage.prompt_tokens)
        total = (
            usage.input_tokens * rates.input
            + usage.output_tokens * rates.output
            + (usage.cache_write_tokens - usage.cache_write_1h_tokens) * rates.cache_write
            + usage.cache_write_1h_tokens * rates.cache_write_1h_rate
            + usage.cache_read_tokens * rates.cache_read
        ) / 1_000_000
        return total * rates.batch_discount if batch else total
