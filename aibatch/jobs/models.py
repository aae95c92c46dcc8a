"""What each model accepts and does, from the platform docs: one dated table, overridable.

Models differ in ways a request must respect (late 2026): forced `tool_choice` is a 400 on
Sonnet 5.5, Opus 5.5 and Fable 5.1; the 5.x models think by default and their thinking
tokens count toward `max_tokens`; some refuse `thinking: disabled`; the 5.5 models refuse
non-default sampling parameters and assistant prefill; the shortest cacheable prefix runs
from 512 to 4,096 tokens; the newer tokenizer counts about 30% more tokens for the same text.
Every request aibatch builds is shaped by the entry of its model here (`aibatch/jobs/spec.py`),
and the defaults for each output kind come from here too.

The facts were read on CAPABILITIES_CHECKED from the pages named per entry (base
https://platform.claude.com/docs/en/). Where the docs are silent, an entry says so in its
`silent` note and takes the stricter choice. A model not in the table gets `CONSERVATIVE`:
rules that hold on every current model (no forced tools, no sampling parameters, no prefill,
no effort, thinking left to the model's default with room for it in `max_tokens`, answers
asked for in the prompt rather than with structured outputs).

A TOML file laid over the table (`--models FILE` or `AIBATCH_MODELS`) changes entries or
adds models, field by field; a new model starts from `CONSERVATIVE`:

    checked = "2026-12-24"

    [defaults]
    text = "claude-sonnet-5-5"

    [models.claude-fable-5-2]
    structured_outputs = true
    cache_min_tokens = 512
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aibatch.errors import ModelFileError
from aibatch.jobs.outputs import OutputKindName
from aibatch.tomlfile import overlay_file, read_toml

CAPABILITIES_CHECKED = "2026-12-02"
MODELS_ENV = "AIBATCH_MODELS"

Effort = Literal["low", "medium", "high", "xhigh", "max"]
EFFORTS: tuple[Effort, ...] = ("low", "medium", "high", "xhigh", "max")
ThinkingType = Literal["enabled", "adaptive", "disabled", "between_tools"]

# Room aibatch leaves in `max_tokens` for thinking it cannot turn off, by effort. The docs
# give no typical thinking length per effort level; these are planning figures, and an
# answer cut short by them is retried with more room (policy.TRUNCATION_RETRIES).
THINKING_ROOM: dict[Effort, int] = {
    "low": 2048, "medium": 6144, "high": 12288, "xhigh": 24576, "max": 49152,
}  # fmt: skip
# What the estimate expects thinking to take, by effort, where thinking is on (tokens).
THINKING_EXPECTED: dict[Effort, int] = {
    "low": 300, "medium": 1200, "high": 3000, "xhigh": 6000, "max": 12000,
}  # fmt: skip


@dataclass(frozen=True)
class ModelRules:
    """One model as requests must treat it."""

    forced_tool_choice: bool  # tool_choice `any` / `tool` accepted
    thinking_default: Literal["off", "adaptive"]  # what the model does when `thinking` is omitted
    thinking_types: frozenset[str]  # accepted `thinking.type` values
    # Highest effort at which `thinking_off` (disabled / between_tools) is still accepted.
    thinking_off_max_effort: Effort | None
    efforts: tuple[Effort, ...]  # accepted `output_config.effort` values; () = no effort param
    default_effort: Effort | None
    sampling: bool  # non-default temperature / top_p / top_k accepted
    prefill: bool  # an assistant turn last in `messages` accepted
    structured_outputs: bool  # `output_config.format` json_schema
    cache_min_tokens: int  # shortest prefix `cache_control` caches
    context_window: int
    max_output_tokens: int
    tokenizer_factor: float  # tokens for the same text, relative to the older tokenizer
    sources: tuple[str, ...] = ()
    silent: str = ""  # what the docs do not say, and what the entry assumes
    current: bool = True  # a default-eligible model (not legacy, not restricted access)

    @property
    def thinking_off(self) -> ThinkingType | None:
        """The `thinking` setting that turns thinking off, if the model takes one."""
        if "disabled" in self.thinking_types:
            return "disabled"
        if "between_tools" in self.thinking_types:
            return "between_tools"
        return None

    def effort_for(self, wanted: Effort) -> Effort | None:
        """`wanted`, or the nearest accepted level above it; None: send no effort."""
        if not self.efforts:
            return None
        for level in EFFORTS[EFFORTS.index(wanted) :]:
            if level in self.efforts:
                return level
        return self.efforts[-1]


_ALL_EFFORTS: tuple[Effort, ...] = EFFORTS
_NEW_TOKENIZER = 1.3
_MTOK = 1_000_000

# Pages (under https://platform.claude.com/docs/en/) the entries below rest on.
_OVERVIEW = "about-claude/models/overview"
_THINKING = "build-with-claude/thinking"
_THINKING_TROUBLE = "build-with-claude/thinking-troubleshooting"
_CACHING = "build-with-claude/prompt-caching"
_STRUCTURED = "build-with-claude/structured-outputs"
_EFFORT = "build-with-claude/effort"

# What the 5.x generation (and Opus 4.7 / 4.8) share: no sampling parameters, no prefill,
# structured outputs, every effort level, 1M context, 128k output, the newer tokenizer.
_NEW_GENERATION = ModelRules(
    forced_tool_choice=True, thinking_default="adaptive",
    thinking_types=frozenset({"adaptive"}), thinking_off_max_effort=None,
    efforts=_ALL_EFFORTS, default_effort="high", sampling=False, prefill=False,
    structured_outputs=True, cache_min_tokens=512, context_window=_MTOK,
    max_output_tokens=128_000, tokenizer_factor=_NEW_TOKENIZER,
)  # fmt: skip

# What the 4.5 and 4.6 models share: thinking off by default (extended thinking, and on 4.6
# adaptive), sampling parameters and prefill accepted while it is off, structured outputs,
# 200k context, 64k output, the older tokenizer.
_OLDER_GENERATION = ModelRules(
    forced_tool_choice=True, thinking_default="off",
    thinking_types=frozenset({"enabled", "disabled"}), thinking_off_max_effort="max",
    efforts=("low", "medium", "high"), default_effort="high", sampling=True, prefill=True,
    structured_outputs=True, cache_min_tokens=4096, context_window=200_000,
    max_output_tokens=64_000, tokenizer_factor=1.0, current=False,
)  # fmt: skip

BUILT_IN_MODELS: dict[str, ModelRules] = {
    "claude-haiku-5-5": replace(
        _NEW_GENERATION,
        forced_tool_choice=True,  # "accepts a forced tool_choice ... no thinking block"
        thinking_default="adaptive",
        thinking_types=frozenset({"adaptive", "disabled"}),
        thinking_off_max_effort="high",  # disabled "at high effort or below"
        default_effort="medium",
        sources=(
            "models/haiku-5-5/whats-new-haiku-5-5",
            "models/haiku-5-5/migration-guide",
            "models/haiku-5-5/overview",
        ),
        silent="between_tools and the list of effort levels: not stated; between_tools is "
        "assumed refused, and every level accepted (aibatch sends low)",
    ),
    "claude-sonnet-5-5": replace(
        _NEW_GENERATION,
        forced_tool_choice=False,  # 400, on count_tokens too
        thinking_default="adaptive",
        thinking_types=frozenset({"adaptive", "between_tools"}),  # disabled: 400
        thinking_off_max_effort="high",  # between_tools at low, medium, high only
        default_effort="high",
        sources=("models/sonnet-5-5/whats-new-sonnet-5-5", "models/sonnet-5-5/overview"),
        silent="sampling parameters, prefill and structured outputs are not stated for "
        "Sonnet 5.5: assumed refused, refused, supported (as on Sonnet 5)",
    ),
    "claude-opus-5-5": replace(
        _NEW_GENERATION,
        forced_tool_choice=False,
        thinking_default="adaptive",
        thinking_types=frozenset({"adaptive"}),  # always on: disabled and enabled are 400s
        thinking_off_max_effort=None,
        default_effort="medium",
        sources=("models/opus-5-5/whats-new-opus-5-5", _STRUCTURED, _OVERVIEW),
        silent="sampling parameters and prefill: not stated; assumed refused",
    ),
    "claude-fable-5-1": replace(
        _NEW_GENERATION,
        forced_tool_choice=False,
        thinking_default="adaptive",
        thinking_types=frozenset({"adaptive"}),
        thinking_off_max_effort=None,
        default_effort="high",
        sources=("models/fable-5-1/whats-new-fable-5-1", _THINKING, _THINKING_TROUBLE),
    ),
    # Fable 5.2 (November 2026): its page gives 1M context, 128k output and thinking always
    # on; the rest is taken from Fable 5.1, the strictest of the current models.
    "claude-fable-5-2": replace(
        _NEW_GENERATION,
        forced_tool_choice=False,
        default_effort="high",
        sources=("models/fable-5-2/whats-new-fable-5-2", "models/fable-5-1/whats-new-fable-5-1"),
        silent="tool_choice, effort, sampling, prefill, structured outputs and caching are "
        "not stated for Fable 5.2: taken from Fable 5.1",
        current=False,  # no list price published yet
    ),
    "claude-opus-5": replace(
        _NEW_GENERATION,
        forced_tool_choice=True,
        thinking_default="adaptive",
        thinking_types=frozenset({"adaptive", "disabled"}),
        thinking_off_max_effort="high",
        default_effort="high",
        sources=("models/opus-5/migration-guide", _THINKING, _THINKING_TROUBLE, _CACHING),
        current=False,  # legacy since Opus 5.5
    ),
    "claude-sonnet-5": replace(
        _NEW_GENERATION,
        forced_tool_choice=True,
        thinking_default="adaptive",
        thinking_types=frozenset({"adaptive", "disabled"}),
        thinking_off_max_effort="high",
        default_effort="high",
        cache_min_tokens=1024,
        sources=("models/sonnet-5/overview", _THINKING_TROUBLE, _CACHING),
        silent="prefill and the effort at which disabled is refused: not stated; assumed as "
        "on Opus 5",
        current=False,
    ),
    "claude-opus-4-8": replace(
        _NEW_GENERATION,
        forced_tool_choice=True,
        thinking_default="off",
        thinking_types=frozenset({"adaptive", "disabled"}),
        thinking_off_max_effort="max",
        default_effort="high",
        cache_min_tokens=1024,
        sources=(_THINKING_TROUBLE, _CACHING, _STRUCTURED),
        silent="default effort and prefill with thinking off: not stated; high, refused",
        current=False,
    ),
    "claude-opus-4-7": replace(
        _NEW_GENERATION,
        forced_tool_choice=True,
        thinking_default="off",
        thinking_types=frozenset({"adaptive", "disabled"}),
        thinking_off_max_effort="max",
        default_effort="high",
        cache_min_tokens=2048,
        sources=(_THINKING_TROUBLE, _CACHING, _STRUCTURED, _EFFORT),
        silent="default effort on the API and prefill with thinking off: not stated; high, refused",
        current=False,
    ),
    "claude-opus-4-6": replace(
        _OLDER_GENERATION,
        thinking_types=frozenset({"adaptive", "enabled", "disabled"}),
        efforts=("low", "medium", "high", "max"),
        max_output_tokens=128_000,
        sources=(_THINKING, _THINKING_TROUBLE, _CACHING, _STRUCTURED, _EFFORT),
        silent="context window: not stated; 200k assumed",
    ),
    "claude-sonnet-4-6": replace(
        _OLDER_GENERATION,
        thinking_types=frozenset({"adaptive", "enabled", "disabled"}),
        efforts=("low", "medium", "high", "max"),
        cache_min_tokens=1024,
        sources=(_THINKING, _THINKING_TROUBLE, _CACHING, _STRUCTURED, _EFFORT),
        silent="max output: 128k in a cut-off table row, 64k elsewhere; 64k assumed",
    ),
    "claude-opus-4-5": replace(
        _OLDER_GENERATION,
        sources=(_THINKING_TROUBLE, _EFFORT, _CACHING, _STRUCTURED),
        silent="context window and max output: not stated; 200k and 64k assumed",
    ),
    "claude-haiku-4-5": replace(
        _OLDER_GENERATION,
        thinking_off_max_effort=None,
        efforts=(),  # "Default effort: Not supported"
        default_effort=None,
        sources=(_OVERVIEW, "models/haiku-5-5/migration-guide", _CACHING, _STRUCTURED),
    ),
}

# Rules that hold on every current model, for a model the table does not know.
CONSERVATIVE = ModelRules(
    forced_tool_choice=False,
    thinking_default="adaptive",  # assume it thinks, and leave room for it
    thinking_types=frozenset(),  # send no `thinking`
    thinking_off_max_effort=None,
    efforts=(),  # send no effort (Haiku 4.5 refuses the parameter)
    default_effort="high",  # for the room left for thinking
    sampling=False,
    prefill=False,
    structured_outputs=False,  # ask in the prompt; the answer is validated all the same
    cache_min_tokens=4096,  # the largest minimum: caching is not counted on
    context_window=200_000,
    max_output_tokens=64_000,
    tokenizer_factor=_NEW_TOKENIZER,  # the larger count: estimates err high
    silent="not in the table: conservative rules",
    current=False,
)

# The model each output kind uses when a job names none: a cheap one for labels and
# extraction, a stronger one for writing.
BUILT_IN_DEFAULTS: dict[OutputKindName, str] = {
    "text": "claude-sonnet-5-5",
    "label": "claude-haiku-5-5",
    "json": "claude-haiku-5-5",
}

_SNAPSHOT = re.compile(r"-\d{8}$")


class _RulesEntry(BaseModel):
    """A file's entry: any field of ModelRules, the rest from the built-in entry."""

    model_config = ConfigDict(extra="forbid")

    forced_tool_choice: bool | None = None
    thinking_default: Literal["off", "adaptive"] | None = None
    thinking_types: list[ThinkingType] | None = None
    thinking_off_max_effort: Effort | None = None
    efforts: list[Effort] | None = None
    default_effort: Effort | None = None
    sampling: bool | None = None
    prefill: bool | None = None
    structured_outputs: bool | None = None
    cache_min_tokens: int | None = Field(default=None, ge=0)
    context_window: int | None = Field(default=None, ge=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    tokenizer_factor: float | None = Field(default=None, gt=0)
    current: bool | None = None

    def over(self, base: ModelRules, source: str) -> ModelRules:
        changes: dict[str, Any] = {}
        for name, value in self.model_dump(exclude_unset=True).items():
            if name == "thinking_types":
                value = frozenset(value)
            elif name == "efforts":
                value = tuple(value)
            changes[name] = value
        return replace(base, **changes, sources=(*base.sources, source), silent=base.silent)


class _ModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checked: str | None = None
    defaults: dict[OutputKindName, str] = Field(default_factory=dict)
    models: dict[str, _RulesEntry] = Field(default_factory=dict)


@dataclass(frozen=True)
class ModelBook:
    """The model table in force: the built-in one, with a user's file laid over it."""

    rules: Mapping[str, ModelRules] = field(default_factory=lambda: dict(BUILT_IN_MODELS))
    defaults: Mapping[OutputKindName, str] = field(default_factory=lambda: dict(BUILT_IN_DEFAULTS))
    checked: str = CAPABILITIES_CHECKED
    source: str = "built-in table"

    @classmethod
    def load(cls, path: str | Path | None = None) -> ModelBook:
        file = overlay_file(path, MODELS_ENV)
        if file is None:
            return cls()
        parsed = read_toml(file, _ModelFile, "model table", ModelFileError)
        rules = dict(BUILT_IN_MODELS)
        for name, entry in parsed.models.items():
            rules[name] = entry.over(rules.get(name, CONSERVATIVE), str(file))
        defaults = {**BUILT_IN_DEFAULTS, **parsed.defaults}
        checked = parsed.checked or f"unknown (file {file.name} gives no date)"
        return cls(rules, defaults, checked, f"{file} over the built-in table")

    def rules_for(self, model: str) -> ModelRules:
        """The model's entry (a dated snapshot shares its alias's), else CONSERVATIVE."""
        found = self.rules.get(model) or self.rules.get(_SNAPSHOT.sub("", model))
        return found if found is not None else CONSERVATIVE

    def known(self, model: str) -> bool:
        return self.rules_for(model) is not CONSERVATIVE

    def default_model(self, kind: OutputKindName) -> str:
        return self.defaults[kind]

    def current_models(self) -> list[str]:
        return [name for name, rules in self.rules.items() if rules.current]
