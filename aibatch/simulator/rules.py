"""What each Claude model accepts, as the simulated API enforces it.

The simulator keeps its own copy of these rules rather than reading the client's capability
table, because it stands in for the API: if it read the client's table, a wrong entry there
would be both sent and accepted, and the tests would hide it. For the same reason the
simulator imports nothing from the client side.

Facts come from the platform docs (the URL per model is in the comments below). Where the
docs say little about a model, it gets the strictest plausible rules of its family or
siblings; where they are silent on a point, the stricter behaviour is chosen. Both are
marked "docs silent" or "by family" next to the entry, so that the simulator is at least as
strict as the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

ThinkingDefault = Literal["off", "adaptive"]
ThinkingDisplay = Literal["omitted", "summarized"]
# "strict": temperature only 1, any top_p or top_k is a 400 (the 5.x models, 4.7, 4.8).
# "haiku55": temperature only 1, top_p only 0.99, no top_k, not temperature and top_p both.
# "legacy": not temperature and top_p both; while thinking is on, temperature only 1, no
#   top_k and top_p within 0.95-1 (4.6 and 4.5 models).
Sampling = Literal["strict", "haiku55", "legacy"]
# "never": a last message from the assistant is a 400; "thinking_off": only without thinking.
Prefill = Literal["never", "thinking_off"]

EFFORT_LEVELS = ("low", "medium", "high", "xhigh", "max")
THINKING_TYPES = ("enabled", "adaptive", "disabled", "between_tools")
ABOVE_HIGH = frozenset({"xhigh", "max"})
_ALL = EFFORT_LEVELS
_NO_XHIGH = ("low", "medium", "high", "max")

USE_ADAPTIVE = (
    'Use "thinking.type.adaptive" and "output_config.effort" to control thinking behavior.'
)
# Verbatim from https://platform.claude.com/docs/en/models/opus-5-5/whats-new-opus-5-5
DISABLED_ADAPTIVE_ONLY = f'"thinking.type.disabled" is not supported for this model. {USE_ADAPTIVE}'
ENABLED_ADAPTIVE_ONLY = f'"thinking.type.enabled" is not supported for this model. {USE_ADAPTIVE}'
# Verbatim from https://platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting
DISABLED_FABLE = (
    '"thinking.type.disabled" is not supported for this model. Thinking defaults to adaptive '
    'mode when not specified; use "thinking.type.enabled" with "budget_tokens" for extended '
    "thinking."
)
# The Sonnet 5.5 page says the 400 "points to between_tools" without quoting it: our wording.
DISABLED_SONNET_55 = (
    '"thinking.type.disabled" is not supported for this model. Use "thinking.type.between_tools" '
    f"to turn off up-front thinking. {USE_ADAPTIVE}"
)
# Verbatim from https://platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting
ADAPTIVE_NOT_SUPPORTED = "adaptive thinking is not supported on this model"
# Verbatim from the Opus 5.5 / Sonnet 5.5 / Fable 5.1 what's-new pages.
FORCED_TOOL_CHOICE = 'tool_choice: type "tool" and "any" are not supported for this model.'


@dataclass(frozen=True, slots=True)
class ModelRules:
    """One model's rules. `effort_levels` empty: `output_config.effort` is not accepted."""

    doc: str  # the docs page the entry comes from
    forced_tool_choice: bool
    thinking_default: ThinkingDefault
    thinking_types: frozenset[str]
    effort_levels: tuple[str, ...]
    default_effort: str | None
    sampling: Sampling
    prefill: Prefill
    cache_min_tokens: int
    context_window: int
    max_output_tokens: int
    tokenizer_factor: float
    thinking_display: ThinkingDisplay = "omitted"
    structured_outputs: bool = True
    # thinking type -> effort levels it may not be combined with
    thinking_refused_at: dict[str, frozenset[str]] = field(default_factory=dict)
    # thinking type -> the 400's message when the type is not accepted
    thinking_messages: dict[str, str] = field(default_factory=dict)
    # Haiku 5.5: a forced tool_choice answers with the tool call first and no thinking.
    forced_tool_skips_thinking: bool = False
    # Models a refusal's fallback credit may be redeemed on; empty: the model's refusals
    # carry no credit (https://platform.claude.com/docs/en/build-with-claude/fallback-credit).
    fallback_targets: frozenset[str] = frozenset()

    def refusal_for_thinking(self, kind: str) -> str:
        return self.thinking_messages.get(kind) or (
            f'"thinking.type.{kind}" is not supported for this model.'
        )


_MTOK = 1_000_000
_NEW_TOKENIZER = 1.3  # "approximately 30% more tokens" than the tokenizer before Opus 4.7

# -- the current models ----------------------------------------------------------------------

# https://platform.claude.com/docs/en/models/opus-5-5/whats-new-opus-5-5
# Always-on adaptive thinking; forced tool_choice refused (also on count_tokens); default
# effort medium; 512-token cache minimum; 1M / 128K. Sampling and prefill: docs silent on
# the page, so the Opus 5 rules (non-default sampling 400, no prefill) - the stricter.
OPUS_5_5 = ModelRules(
    doc="https://platform.claude.com/docs/en/models/opus-5-5/whats-new-opus-5-5",
    forced_tool_choice=False,
    thinking_default="adaptive",
    thinking_types=frozenset({"adaptive"}),
    thinking_messages={"disabled": DISABLED_ADAPTIVE_ONLY, "enabled": ENABLED_ADAPTIVE_ONLY},
    effort_levels=_ALL,
    default_effort="medium",
    sampling="strict",
    prefill="never",
    cache_min_tokens=512,
    context_window=_MTOK,
    max_output_tokens=128_000,
    tokenizer_factor=_NEW_TOKENIZER,
)

# https://platform.claude.com/docs/en/models/sonnet-5-5/whats-new-sonnet-5-5
# Adaptive on by default; `between_tools` only at low/medium/high; `disabled` is a 400 that
# points to between_tools; `enabled` 400; forced tool_choice refused (also on count_tokens);
# default effort high; 512-token cache minimum; 1M / 128K (spec block of
# https://platform.claude.com/docs/zh-CN/models/sonnet-5-5/overview); tokenizer as Sonnet 5.
# Sampling and prefill: docs silent, so the stricter Sonnet 5 rules.
SONNET_5_5 = ModelRules(
    doc="https://platform.claude.com/docs/en/models/sonnet-5-5/whats-new-sonnet-5-5",
    forced_tool_choice=False,
    thinking_default="adaptive",
    thinking_types=frozenset({"adaptive", "between_tools"}),
    thinking_refused_at={"between_tools": ABOVE_HIGH},
    thinking_messages={"disabled": DISABLED_SONNET_55, "enabled": ENABLED_ADAPTIVE_ONLY},
    effort_levels=_ALL,
    default_effort="high",
    sampling="strict",
    prefill="never",
    cache_min_tokens=512,
    context_window=_MTOK,
    max_output_tokens=128_000,
    tokenizer_factor=_NEW_TOKENIZER,
)

# https://platform.claude.com/docs/en/models/haiku-5-5/migration-guide (and whats-new-haiku-5-5,
# overview). Forced tool_choice accepted, answered with the tool call and no thinking block;
# adaptive on by default; `disabled` only at effort high or below; `enabled` 400;
# between_tools: docs silent, refused. Default effort medium (levels: docs silent, the
# 5.x set). Sampling: temperature only 1, top_p only 0.99, no top_k, not both. Prefill 400
# even with thinking off. 512-token cache minimum; 1M / 128K; newer tokenizer (+30%).
HAIKU_5_5 = ModelRules(
    doc="https://platform.claude.com/docs/en/models/haiku-5-5/migration-guide",
    forced_tool_choice=True,
    forced_tool_skips_thinking=True,
    thinking_default="adaptive",
    thinking_types=frozenset({"adaptive", "disabled"}),
    thinking_refused_at={"disabled": ABOVE_HIGH},
    thinking_messages={"enabled": ENABLED_ADAPTIVE_ONLY},
    effort_levels=_ALL,
    default_effort="medium",
    sampling="haiku55",
    prefill="never",
    cache_min_tokens=512,
    context_window=_MTOK,
    max_output_tokens=128_000,
    tokenizer_factor=_NEW_TOKENIZER,
)

# https://platform.claude.com/docs/en/models/fable-5-1/whats-new-fable-5-1
# Forced tool_choice refused (also on count_tokens); adaptive only, always on (`disabled`
# and `enabled` 400, https://platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting);
# default effort high; non-default sampling 400; prefill 400 while thinking is on, and
# thinking is always on; 512-token cache minimum; 1M / 128k; newer tokenizer.
FABLE_5_1 = ModelRules(
    doc="https://platform.claude.com/docs/en/models/fable-5-1/whats-new-fable-5-1",
    forced_tool_choice=False,
    thinking_default="adaptive",
    thinking_types=frozenset({"adaptive"}),
    thinking_messages={"disabled": DISABLED_FABLE, "enabled": ENABLED_ADAPTIVE_ONLY},
    effort_levels=_ALL,
    default_effort="high",
    sampling="strict",
    prefill="never",
    cache_min_tokens=512,
    context_window=_MTOK,
    max_output_tokens=128_000,
    tokenizer_factor=_NEW_TOKENIZER,
    # "For Claude Fable 5.1 and Claude Fable 5, those are Claude Opus 4.8 and Claude Opus 5."
    fallback_targets=frozenset({"claude-opus-4-8", "claude-opus-5"}),
)

# https://platform.claude.com/docs/en/models/fable-5-2/whats-new-fable-5-2
# Fable 5.2 and Mythos 5.2: the page gives 1M context, 128k output and adaptive thinking
# always on, and little else: by family, the Fable 5.1 rules (the strictest of the family).
# The fallback-credit page names no targets for it: docs silent, so no credit.
FABLE_5_2 = replace(
    FABLE_5_1,
    doc="https://platform.claude.com/docs/en/models/fable-5-2/whats-new-fable-5-2",
    fallback_targets=frozenset(),
)

# -- legacy 5.x and 4.x ------------------------------------------------------------------------

# https://platform.claude.com/docs/id/models/opus-5/migration-guide
# (and https://platform.claude.com/docs/zh-CN/models/opus-5/overview). Forced tool_choice
# accepted; adaptive on by default; `disabled` only at effort high or below; `enabled` 400;
# default effort high; non-default sampling 400; prefill removed; 512-token cache minimum;
# 1M / 128k; newer tokenizer.
OPUS_5 = ModelRules(
    doc="https://platform.claude.com/docs/id/models/opus-5/migration-guide",
    forced_tool_choice=True,
    thinking_default="adaptive",
    thinking_types=frozenset({"adaptive", "disabled"}),
    thinking_refused_at={"disabled": ABOVE_HIGH},
    thinking_messages={"enabled": ENABLED_ADAPTIVE_ONLY},
    effort_levels=_ALL,
    default_effort="high",
    sampling="strict",
    prefill="never",
    cache_min_tokens=512,
    context_window=_MTOK,
    max_output_tokens=128_000,
    tokenizer_factor=_NEW_TOKENIZER,
)

# https://platform.claude.com/docs/zh-CN/models/sonnet-5/overview
# As Opus 5 except a 1,024-token cache minimum
# (https://platform.claude.com/docs/en/build-with-claude/prompt-caching). The effort limit
# on `disabled` is documented for Opus 5 only: by family, the stricter Opus 5 rule. Prefill:
# docs silent, refused (thinking is on by default and prefill is refused while it is on).
SONNET_5 = replace(
    OPUS_5,
    doc="https://platform.claude.com/docs/zh-CN/models/sonnet-5/overview",
    cache_min_tokens=1024,
)

# https://platform.claude.com/docs/en/models/fable-5/overview
# Claude Fable 5 and Claude Mythos 5: the docs say little beyond forced tool use working with
# adaptive thinking (https://platform.claude.com/docs/en/build-with-claude/thinking, which
# rejects it only on the 5.1 models) and a 512-token cache minimum: otherwise the strictest
# rules of the family (Fable 5.1: thinking always on, no sampling parameters, no prefill).
FABLE_5 = replace(
    FABLE_5_1,
    doc="https://platform.claude.com/docs/en/models/fable-5/overview",
    forced_tool_choice=True,
)

# https://platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting
# Claude Opus 4.7: adaptive only, off by default, `enabled` 400; effort accepted (xhigh
# introduced here; API default: docs silent, high); forced tool_choice works with adaptive
# thinking; non-default sampling 400 (https://platform.claude.com/docs/en/build-with-claude/thinking);
# prefill: 400 while thinking is on, docs silent otherwise, so always 400; 2,048-token cache
# minimum; 128k output; 1M context (third-party source only); the newer tokenizer starts here.
OPUS_4_7 = ModelRules(
    doc="https://platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting",
    forced_tool_choice=True,
    thinking_default="off",
    thinking_types=frozenset({"adaptive", "disabled"}),
    thinking_messages={"enabled": ENABLED_ADAPTIVE_ONLY},
    effort_levels=_ALL,
    default_effort="high",
    sampling="strict",
    prefill="never",
    cache_min_tokens=2048,
    context_window=_MTOK,
    max_output_tokens=128_000,
    tokenizer_factor=_NEW_TOKENIZER,
)

# https://platform.claude.com/docs/en/about-claude/pricing (and the thinking tables of
# https://platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting)
# Claude Opus 4.8: the docs say little (omitted thinking display, structured outputs, a
# 1,024-token cache minimum, prefill gone before Opus 5): by family, the Opus 4.7 rules,
# with 4.7's and Opus 5's 1M context.
OPUS_4_8 = replace(
    OPUS_4_7,
    doc="https://platform.claude.com/docs/en/about-claude/pricing",
    cache_min_tokens=1024,
)

# https://platform.claude.com/docs/en/build-with-claude/prompt-caching
# Claude Mythos Preview: the docs give a 2,048-token cache minimum, effort support and
# structured outputs, little else: the Opus 4.7 rules of its time, effort without xhigh
# (docs silent) and, docs silent, the smaller 200K context window and 64K output.
MYTHOS_PREVIEW = replace(
    OPUS_4_7,
    doc="https://platform.claude.com/docs/en/build-with-claude/prompt-caching",
    effort_levels=_NO_XHIGH,
    context_window=200_000,
    max_output_tokens=64_000,
)

# https://platform.claude.com/docs/en/build-with-claude/thinking
# Claude Opus 4.6: adaptive and (deprecated) extended thinking, off by default, summarized
# display; effort low/medium/high/max, default high; sampling limited only while thinking is
# on (temperature and top_p together: refused, the stricter); forced tool_choice refused with
# manual extended thinking; prefill: 400 while thinking is on, docs silent otherwise, so
# always 400; 4,096-token cache minimum; 128k output; context: docs silent, 200K.
OPUS_4_6 = ModelRules(
    doc="https://platform.claude.com/docs/en/build-with-claude/thinking",
    forced_tool_choice=True,
    thinking_default="off",
    thinking_display="summarized",
    thinking_types=frozenset({"adaptive", "enabled", "disabled"}),
    effort_levels=_NO_XHIGH,
    default_effort="high",
    sampling="legacy",
    prefill="never",
    cache_min_tokens=4096,
    context_window=200_000,
    max_output_tokens=128_000,
    tokenizer_factor=1.0,
)

# https://platform.claude.com/docs/en/build-with-claude/thinking
# Claude Sonnet 4.6: the Opus 4.6 rules with a 1,024-token cache minimum
# (https://platform.claude.com/docs/en/build-with-claude/prompt-caching); max output 128k or
# 64K (sources conflict): the smaller.
SONNET_4_6 = replace(OPUS_4_6, cache_min_tokens=1024, max_output_tokens=64_000)

# https://platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting
# Claude Opus 4.5: extended thinking only (`adaptive` 400), off by default; effort
# low/medium/high; the older sampling rules; prefill only with thinking off; 4,096-token
# cache minimum; context and output: docs silent, 200K / 64K.
OPUS_4_5 = ModelRules(
    doc="https://platform.claude.com/docs/en/build-with-claude/thinking-troubleshooting",
    forced_tool_choice=True,
    thinking_default="off",
    thinking_display="summarized",
    thinking_types=frozenset({"enabled", "disabled"}),
    thinking_messages={"adaptive": ADAPTIVE_NOT_SUPPORTED},
    effort_levels=("low", "medium", "high"),
    default_effort="high",
    sampling="legacy",
    prefill="thinking_off",
    cache_min_tokens=4096,
    context_window=200_000,
    max_output_tokens=64_000,
    tokenizer_factor=1.0,
)

# https://platform.claude.com/docs/en/models/haiku-4-5/migration-guide (and the Haiku 5.5
# migration guide's comparison): effort not supported; temperature and top_p together 400;
# prefill accepted with thinking off; 4,096-token cache minimum; 200K / 64K.
HAIKU_4_5 = replace(
    OPUS_4_5,
    doc="https://platform.claude.com/docs/en/models/haiku-4-5/migration-guide",
    effort_levels=(),
    default_effort=None,
)

RULES: dict[str, ModelRules] = {
    "claude-fable-5-2": FABLE_5_2,
    "claude-mythos-5-2": FABLE_5_2,  # Fable 5.2's restricted sibling
    "claude-haiku-5-5": HAIKU_5_5,
    "claude-sonnet-5-5": SONNET_5_5,
    "claude-fable-5-1": FABLE_5_1,
    "claude-opus-5-5": OPUS_5_5,
    "claude-mythos-5-1": FABLE_5_1,  # Fable 5.1's restricted sibling (same page)
    "claude-sonnet-5": SONNET_5,
    "claude-fable-5": FABLE_5,
    "claude-mythos-5": FABLE_5,  # Fable 5's restricted sibling
    "claude-opus-5": OPUS_5,
    "claude-opus-4-8": OPUS_4_8,
    "claude-opus-4-7": OPUS_4_7,
    "claude-mythos-preview": MYTHOS_PREVIEW,
    "claude-opus-4-6": OPUS_4_6,
    "claude-sonnet-4-6": SONNET_4_6,
    "claude-haiku-4-5": HAIKU_4_5,
    "claude-opus-4-5": OPUS_4_5,
}
# Dated snapshots follow their alias. Every `claude-*` name of the installed SDK's
# `ModelParam` has an entry (tests/simulator/test_model_rules.py checks it).
SNAPSHOTS = {
    "claude-haiku-4-5-20251001": "claude-haiku-4-5",
    "claude-opus-4-5-20251101": "claude-opus-4-5",
}
for _snapshot, _alias in SNAPSHOTS.items():
    RULES[_snapshot] = RULES[_alias]

# A model the SDK knows but this table does not yet: the strictest rules of any entry.
STRICTEST = replace(
    FABLE_5_1,
    doc="(no entry: strictest rules)",
    cache_min_tokens=4096,
    context_window=200_000,
    max_output_tokens=64_000,
)


def rules_for(model: str) -> ModelRules:
    """The rules of a model (a dict lookup: cheap enough for every request)."""
    return RULES.get(model, STRICTEST)
