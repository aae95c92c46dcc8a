"""What processing every row would cost, estimated before any generation call.

Input tokens are counted by the API itself (`POST /v1/messages/count_tokens`, which makes
no generation and costs nothing) for a seeded random sample of rows, per candidate
model since tokenizers differ between models. The sample calibrates a local model,

    prompt tokens of a row ≈ fixed overhead + tokens per character × len(row text)

where the fixed overhead (system prompt, tools, the <data> framing) is measured by
counting one request with an empty row, and the ratio is fitted to the sample (ratio of
sums, so the estimate reproduces the sample's own total). The model is then summed over
every row. The shared prefix (tools + system, what `cache_control` marks) is measured by
counting the same request without them.

Output tokens come from history when OUTPUT/JOB/results already holds answers to the same job,
model and prompt version (their mean: thinking included, as the API bills it), else from a
per-job default that follows from the prompt and the model's entry in the capability table
(see `default_output_tokens`: the answer's expected length at the model's tokenizer factor,
plus the thinking expected where the model thinks), never more than the first request's
`max_tokens`.

Costs use the PriceBook per request (a model's rates may depend on the prompt's length),
realtime and Message Batches, with prompt caching assumed only when the shared prefix
reaches the model's own caching minimum (512 to 4,096 tokens, from the capability table).
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import statistics
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anthropic

from aibatch.cost.pricing import PriceBook, Usage
from aibatch.engine import policy
from aibatch.engine.backend import ApiTarget, TokenCountingBackend
from aibatch.errors import EstimateError, MissingAPIKey
from aibatch.jobs.models import THINKING_EXPECTED, ModelBook
from aibatch.jobs.spec import JobDefinition, JobSpec
from aibatch.output.store import ResultStore
from aibatch.sources.loader import Rows

DEFAULT_SAMPLE = 200
COUNT_CONCURRENCY = 8  # count_tokens has its own rate limit: a few calls at a time
COUNT_TIMEOUT_S = 30.0
SAMPLE_SEED = 0
# Characters per token of English prose on the older tokenizer; the capability table's
# tokenizer factor scales it for the newer one (about 30% more tokens for the same text).
CHARS_PER_TOKEN = 4.0
DATA_TAGS = re.compile(r"</?data>")  # the framing of row values: not part of a summary
# What the default output estimate assumes, by job (the built-in summarize) or kind.
DEFAULT_NOTES = {
    "summarize": "default: at most two sentences, as long as the row's own sentences",
    "label": "default: one label as a JSON object",
    "json": "default: a JSON object of the schema's shape, with short values",
    "text": "default: as long as the row's own text, at most max_tokens",
}
# Summaries: "at most two sentences". A sentence of fewer words than this is a greeting or
# a sign-off ("Thanks, Priya"), not one a summary would be made of.
SUMMARY_SENTENCES = 2
SUBSTANTIVE_SENTENCE_WORDS = 4
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

T = TypeVar("T")


class CountFailed(RuntimeError):
    """count_tokens failed for one model (unknown model, a request the API refuses)."""


# -- the local model of prompt tokens ---------------------------------------------------------


@dataclass(frozen=True)
class PromptModel:
    """Prompt tokens of a row's request ≈ overhead + per_char × len(text)."""

    overhead: float  # system + tools + framing: the request with an empty row
    per_char: float  # tokens per character of row text

    def predict(self, length: int) -> float:
        return self.overhead + self.per_char * length


def fit_prompt_model(overhead: int, lengths: Sequence[int], counts: Sequence[int]) -> PromptModel:
    """Fit the ratio to counted rows (ratio of sums: the sample's total is reproduced)."""
    if len(lengths) != len(counts) or not lengths:
        raise ValueError("need one count per sampled row, and at least one")
    characters = sum(lengths)
    variable = sum(counts) - overhead * len(counts)
    per_char = max(0.0, variable / characters) if characters else 0.0
    return PromptModel(float(overhead), per_char)


def spread(values: Iterable[float]) -> list[int]:
    """Whole numbers that add up to the rounded running total of `values` (no rounding
    bias: 5,000 rows of 14.4 tokens are 72,000 tokens, not 70,000)."""
    out: list[int] = []
    total = 0.0
    given = 0
    for value in values:
        total += value
        whole = round(total) - given
        out.append(whole)
        given += whole
    return out


def extrapolate(
    model: PromptModel,
    lengths: Sequence[int],
    counted: dict[int, int] | None = None,
) -> list[int]:
    """Prompt tokens per row: counted where known (index → count), predicted elsewhere."""
    counted = counted or {}
    predicted = spread(
        0.0 if i in counted else model.predict(length) for i, length in enumerate(lengths)
    )
    return [counted.get(i, p) for i, p in enumerate(predicted)]


# -- output tokens ----------------------------------------------------------------------------


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_END.split(" ".join(text.split())) if s]


def summary_characters(text: str) -> float:
    """Expected length of a summary of at most two sentences, in characters: two sentences
    as long as the row's own substantive sentences, and never longer than the row."""
    sentences = _sentences(text)
    if not sentences:
        return 0.0
    substantive = [s for s in sentences if len(s.split()) >= SUBSTANTIVE_SENTENCE_WORDS]
    mean = statistics.fmean(len(s) for s in substantive or sentences)
    return min(float(len(text)), SUMMARY_SENTENCES * mean + (SUMMARY_SENTENCES - 1))


def default_output_tokens(spec: JobSpec, texts: Sequence[str]) -> list[float]:
    """Expected output tokens per row when there is no history to learn from.

    - the answer: summarize asks for at most two sentences about the problem and the ask
      (`summary_characters` of each row); a label is one small JSON object, any label as
      likely as another; other kinds say how long their answers are (`expected_lengths`).
      Characters become whole tokens (an answer bills whole tokens) at CHARS_PER_TOKEN
      times the model's tokenizer factor;
    - thinking: billed as output. Where the request cannot turn it off, the table's expected
      thinking at the effort sent (`THINKING_EXPECTED`).

    At least 1 (an answer always bills output) and at most the first request's max_tokens.
    """
    per_char = spec.rules.tokenizer_factor / CHARS_PER_TOKEN
    thinking = THINKING_EXPECTED[spec.effort or spec.rules.default_effort or "high"]
    thinking = thinking if spec.thinks else 0
    ceiling = float(spec.max_tokens())
    tokens: list[float] = []
    for text in texts:
        lengths = (
            (summary_characters(DATA_TAGS.sub("", text)),)
            if spec.job == "summarize"
            else spec.output.expected_lengths(text)
        )
        answer = statistics.fmean(math.ceil(length * per_char) for length in lengths)
        tokens.append(min(ceiling, max(1.0, answer + thinking)))
    return tokens


@dataclass(frozen=True)
class OutputHistory:
    mean_output_tokens: float
    rows: int


def output_history(output_dir: str | Path, spec: JobSpec) -> OutputHistory | None:
    """Mean output tokens of earlier answers to this job, model and prompt version."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        tokens = ResultStore(output_dir, spec.job).key_column(
            "output_tokens", spec.model, spec.prompt_version
        )
    except (pa.ArrowException, OSError, ValueError, KeyError):
        return None  # not a results dataset aibatch can read: fall back to the default
    if tokens is None or len(tokens) == 0:
        return None
    mean = pc.mean(tokens).as_py()
    if mean is None:
        return None
    return OutputHistory(float(mean), len(tokens))


# -- cost -------------------------------------------------------------------------------------


def request_usages(
    prompt_tokens: Sequence[int], output_tokens: Sequence[int], prefix: int, caching: bool
) -> Iterator[Usage]:
    """The Usage of each request: with caching, the first writes the shared prefix and every
    later one reads it; without, every prompt token is plain input."""
    for i, (prompt, output) in enumerate(zip(prompt_tokens, output_tokens, strict=True)):
        if not caching:
            yield Usage(input_tokens=prompt, output_tokens=output)
        elif i == 0:
            yield Usage(prompt - prefix, output, cache_write_tokens=prefix)
        else:
            yield Usage(prompt - prefix, output, cache_read_tokens=prefix)


def total_cost(book: PriceBook, model: str, usages: Iterable[Usage], batch: bool) -> float | None:
    """The sum of each request's cost (rates may depend on one request's prompt length), or
    None when the model's price is unknown."""
    if book.price_for(model) is None:
        return None
    total = 0.0
    for usage in usages:
        cost = book.cost_usd(model, usage, batch=batch)
        if cost is None:
            return None
        total += cost
    return total


# -- the estimate -----------------------------------------------------------------------------


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass(frozen=True)
class ModelEstimate:
    model: str
    rows: int  # that a run would still send: not already in results for this model
    error: str | None = None
    counted: int = 0  # rows whose prompt was counted by count_tokens
    fixed_overhead: float = 0.0  # tokens of a request with an empty row
    tokens_per_char: float = 0.0
    prefix_tokens: int = 0  # shared cacheable prefix (tools + system), per request
    input_tokens: int = 0
    output_tokens: int = 0
    output_source: str = ""  # "history" or "default"
    output_note: str = ""
    history_rows: int = 0
    already_done: int = 0  # rows OUTPUT/JOB/results already holds for this model
    output_per_row: float = 0.0
    prompt_per_row: float = 0.0
    caching: bool = False
    cache_min_tokens: int = 0  # the model's caching minimum (capability table)
    tokenizer_factor: float = 1.0
    thinking: bool = False  # answers come after thinking that cannot be turned off
    realtime_usd: float | None = None
    batch_usd: float | None = None
    price_known: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def as_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"model": self.model, "error": self.error}
        return {
            "model": self.model,
            "error": None,
            "tickets": self.rows,
            "already_done": self.already_done,
            "counted_tickets": self.counted,
            "input_tokens": self.input_tokens,
            "cacheable_prefix_tokens_per_request": self.prefix_tokens,
            "prefix_input_tokens": self.prefix_tokens * self.rows,
            "ticket_input_tokens": self.input_tokens - self.prefix_tokens * self.rows,
            "fixed_overhead_tokens": round(self.fixed_overhead, 3),
            "tokens_per_char": round(self.tokens_per_char, 6),
            "output_tokens": self.output_tokens,
            "output_tokens_per_ticket": round(self.output_per_row, 3),
            "output_source": self.output_source,
            "output_history_rows": self.history_rows,
            "output_note": self.output_note,
            "total_tokens": self.total_tokens,
            "caching": self.caching,
            "cache_min_tokens": self.cache_min_tokens,
            "tokenizer_factor": self.tokenizer_factor,
            "thinking": self.thinking,
            "price_known": self.price_known,
            "cost_usd": {
                "realtime": _rounded(self.realtime_usd),
                "batch": _rounded(self.batch_usd),
            },
        }


@dataclass(frozen=True)
class Estimate:
    input_path: str
    job: str
    prompt_version: str
    rows: int
    sample: int  # rows counted per model
    prices_checked: str
    prices_source: str
    models: list[ModelEstimate] = field(default_factory=list)
    count_tokens_calls: int = 0

    @property
    def failed(self) -> bool:
        return any(m.error is not None for m in self.models)

    def as_json(self) -> dict[str, Any]:
        return {
            "input": self.input_path,
            "job": self.job,
            "prompt_version": self.prompt_version,
            "tickets": self.rows,
            "sampled_tickets": self.sample,
            "count_tokens_calls": self.count_tokens_calls,
            "prices": {"checked": self.prices_checked, "source": self.prices_source},
            "models": [m.as_json() for m in self.models],
        }


def candidate_models(
    definition: JobDefinition, chosen: Sequence[str] | None, models: ModelBook | None = None
) -> list[str]:
    """The models given, else the job's default and the table's current models."""
    if chosen:
        return list(dict.fromkeys(m.strip() for m in chosen if m.strip()))
    book = models or ModelBook.load()
    first = definition.model or book.default_model(definition.output.kind)
    return list(dict.fromkeys([first, *book.current_models()]))


def sample_indices(count: int, size: int, seed: int = SAMPLE_SEED) -> list[int]:
    """A seeded random sample of row positions (all of them when there are few)."""
    if size >= count:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), size))


class TokenCounter:
    """count_tokens through the backend, a few calls in flight, with aibatch's retry policy
    (the client's own retries are off, as for messages)."""

    def __init__(self, backend: TokenCountingBackend, concurrency: int = COUNT_CONCURRENCY) -> None:
        self.backend = backend
        self.gate = asyncio.Semaphore(concurrency)
        self.rng = random.Random()
        self.calls = 0

    async def count(self, params: dict[str, Any]) -> int:
        for attempt in range(policy.MAX_ATTEMPTS):
            try:
                async with self.gate:
                    self.calls += 1
                    return await self.backend.count_tokens(params)
            except anthropic.AnthropicError as error:
                decision = policy.decide(error, attempt, self.rng)
                if decision.action is policy.Action.STOP_RUN:
                    raise EstimateError(decision.message) from None
                if decision.action is policy.Action.FAIL_ROW:
                    raise CountFailed(f"{decision.error_type}: {decision.message}") from None
                if attempt == policy.MAX_ATTEMPTS - 1:
                    raise CountFailed(
                        f"count_tokens still failing after {policy.MAX_ATTEMPTS} attempts: "
                        f"{decision.error_type}: {decision.message}"
                    ) from None
                await asyncio.sleep(decision.delay_s)
        raise AssertionError("unreachable")


async def _all_or_cancel(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """Every result, or the first failure as itself, with the rest cancelled (a TaskGroup
    does the cancelling; callers expect one error, not a group)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_awaited(a)) for a in awaitables]
    except ExceptionGroup as errors:
        raise errors.exceptions[0] from None
    return [task.result() for task in tasks]


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _prefix_request(spec: JobSpec) -> dict[str, Any]:
    """The request with an empty row and without the shared prefix (system and tools)."""
    params = spec.request(spec.template.render_empty())
    for key in ("system", "tools", "tool_choice"):
        params.pop(key, None)
    return params


async def estimate_model(
    counter: TokenCounter,
    spec: JobSpec,
    texts: Sequence[str],
    sample: Sequence[int],
    book: PriceBook,
    output_dir: str | Path | None,
    ids: Sequence[str] | None = None,
) -> ModelEstimate:
    """Count the sample for one model and extrapolate tokens and cost to every row a run
    would still send (those OUTPUT/JOB/results does not hold yet for this model)."""
    lengths = [len(t) for t in texts]
    try:
        overhead, bare, *counts = await _all_or_cancel(
            [
                counter.count(spec.request(spec.template.render_empty())),
                counter.count(_prefix_request(spec)),
                *(counter.count(spec.request(texts[i])) for i in sample),
            ]
        )
    except CountFailed as failure:
        return ModelEstimate(spec.model, len(texts), error=str(failure))
    done: set[str] = set()
    if output_dir is not None and ids is not None:
        store = ResultStore(output_dir, spec.job)
        done = store.settled_ids(spec.model, spec.prompt_version)
    todo = [k for k in range(len(texts)) if ids is None or ids[k] not in done]
    prompt_model = fit_prompt_model(overhead, [lengths[i] for i in sample], counts)
    prompts = extrapolate(prompt_model, lengths, dict(zip(sample, counts, strict=True)))
    prefix = max(0, overhead - bare)

    history = output_history(output_dir, spec) if output_dir is not None else None
    if history is not None:
        per_row = [min(float(spec.max_tokens()), history.mean_output_tokens)] * len(texts)
        source = "history"
        note = (
            f"mean of {history.rows:,} earlier answers in {output_dir}/{spec.job}/results "
            f"(same job, model and prompt version; thinking included)"
        )
    else:
        per_row = default_output_tokens(spec, texts)
        source = "default"
        note = DEFAULT_NOTES.get(spec.job) or DEFAULT_NOTES[spec.output.name]
        note += f" at tokenizer factor {spec.rules.tokenizer_factor:g}"
        if spec.thinks:
            effort = spec.effort or spec.rules.default_effort or "high"
            note += f", plus thinking at effort {effort} ({THINKING_EXPECTED[effort]:,} tokens)"
        note += f"; at most max_tokens={spec.max_tokens()}"
    outputs = spread(per_row)

    caching = prefix >= spec.rules.cache_min_tokens
    price_known = book.price_for(spec.model) is not None
    prompts_todo = [prompts[k] for k in todo]
    outputs_todo = [outputs[k] for k in todo]
    costs = [
        total_cost(
            book, spec.model, request_usages(prompts_todo, outputs_todo, prefix, caching), batch
        )
        for batch in (False, True)
    ]
    return ModelEstimate(
        model=spec.model,
        rows=len(todo),
        already_done=len(texts) - len(todo),
        output_per_row=statistics.fmean(outputs) if outputs else 0.0,
        prompt_per_row=statistics.fmean(prompts) if prompts else 0.0,
        counted=len(sample),
        fixed_overhead=prompt_model.overhead,
        tokens_per_char=prompt_model.per_char,
        prefix_tokens=prefix,
        input_tokens=sum(prompts_todo),
        output_tokens=sum(outputs_todo),
        output_source=source,
        output_note=note,
        history_rows=history.rows if history is not None else 0,
        caching=caching,
        cache_min_tokens=spec.rules.cache_min_tokens,
        tokenizer_factor=spec.rules.tokenizer_factor,
        thinking=spec.thinks,
        realtime_usd=costs[0],
        batch_usd=costs[1],
        price_known=price_known,
    )


async def estimate(
    rows: Rows,
    prompts: Sequence[str],
    specs: Sequence[JobSpec],
    book: PriceBook,
    *,
    backend: TokenCountingBackend | ApiTarget,
    output_dir: str | Path | None = None,
    sample_size: int = DEFAULT_SAMPLE,
    seed: int = SAMPLE_SEED,
) -> Estimate:
    """Estimate tokens and cost of every row under each job spec (one per model); no
    generation calls. `backend`: one to count with, or where to connect (closed after)."""
    if sample_size < 1:
        raise ValueError("the sample must hold at least one row")
    if not specs:
        raise ValueError("no model to estimate for")
    texts = list(prompts)
    ids = [str(i) for i in rows.frame["id"].tolist()]
    sample = sample_indices(len(texts), sample_size, seed)
    own_backend = isinstance(backend, ApiTarget)
    if isinstance(backend, ApiTarget):
        try:
            backend = backend.connect(timeout_s=COUNT_TIMEOUT_S)
        except MissingAPIKey as error:
            raise EstimateError(str(error)) from None
    counter = TokenCounter(backend)
    try:
        per_model = await _all_or_cancel(
            estimate_model(counter, spec, texts, sample, book, output_dir, ids) for spec in specs
        )
    finally:
        if own_backend:
            await backend.aclose()
    return Estimate(
        input_path=str(rows.path),
        job=specs[0].job,
        prompt_version=specs[0].prompt_version,
        rows=len(texts),
        sample=len(sample),
        prices_checked=book.checked,
        prices_source=book.source,
        models=per_model,
        count_tokens_calls=counter.calls,
    )


# -- showing it -------------------------------------------------------------------------------


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def render(result: Estimate) -> None:
    """The estimate as a table on stdout, with what it rests on underneath."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, markup=False)
    if not console.is_terminal:  # piped or redirected: wide enough that no name is cut
        console = Console(highlight=False, markup=False, width=max(console.width, 120))
    table = Table(title=f"{result.job} of {result.rows:,} rows in {result.input_path}: estimate")
    for name, justify in (
        ("model", "left"), ("rows", "right"), ("input tokens", "right"),
        ("output tokens", "right"), ("total tokens", "right"), ("realtime $", "right"),
        ("batch $", "right"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for m in result.models:
        if m.error is not None:
            table.add_row(m.model, f"{m.rows:,}", "error", "", "", "", "")
            continue
        table.add_row(
            m.model, f"{m.rows:,}", f"{m.input_tokens:,}", f"{m.output_tokens:,}",
            f"{m.total_tokens:,}", _usd(m.realtime_usd), _usd(m.batch_usd),
        )  # fmt: skip
    console.print(table)
    lines: list[str] = []
    sampled = (
        "every row"
        if result.sample >= result.rows
        else f"a seeded random sample of {result.sample:,} rows, extrapolated by length"
    )
    lines.append(f"Input: counted with count_tokens on {sampled}, per model.")
    for m in result.models:
        if m.error is not None:
            lines.append(f"  {m.model}: count_tokens failed: {m.error}")
            continue
        caching = (
            f"cached (≥ {m.cache_min_tokens:,} tokens, this model's minimum: the first "
            "request writes it, the rest read it)"
            if m.caching
            else f"not cached (< {m.cache_min_tokens:,} tokens, this model's minimum)"
        )
        lines.append(
            f"  {m.model}: shared prefix (system + tools) {m.prefix_tokens:,} tokens per "
            f"request, {caching}; per row {m.prompt_per_row - m.prefix_tokens:,.1f}"
            f" tokens on average"
        )
    for m in result.models:
        if m.error is None and m.already_done:
            lines.append(
                f"  {m.model}: {m.already_done:,} rows already done in the output "
                "directory: not counted (a run skips them)"
            )
    lines.append("Output tokens per row:")
    for m in result.models:
        if m.error is None:
            lines.append(f"  {m.model}: {m.output_per_row:,.1f} ({m.output_note})")
    lines.append(f"Prices: {result.prices_source}, checked {result.prices_checked}; batch = "
                 "Message Batches API.")  # fmt: skip
    for m in result.models:
        if m.error is None and not m.price_known:
            lines.append(
                f"  {m.model}: no known price; add [models.{m.model}] with input and output "
                "rates to a price file and pass it with --prices FILE"
            )
    for line in lines:
        console.print(line, soft_wrap=True)
