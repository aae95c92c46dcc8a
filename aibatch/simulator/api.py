"""What the simulated Messages API decides, independent of the HTTP server around it.

`SimulatedAPI` validates requests as the API does (including each model's own rules, kept
in `rules.py`, and structured-output schemas, `structured.py`), answers them with the fake model,
applies rate limits, prompt caching and injected faults, runs Message Batches, and keeps
the counters that tests and benchmarks read. The aiohttp layer in `server.py` only moves
bytes in and out.
"""

from __future__ import annotations

import base64
import hashlib
import math
import random
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson

from aibatch.sdk_models import known_models
from aibatch.simulator.config import SimulatorConfig
from aibatch.simulator.model import (
    built_in_accuracy,
    cache_controls,
    catch_all,
    choose_label,
    count_text_tokens,
    find_label_tool,
    label_definitions,
    listed_options,
    prompt_blocks,
    ranked_labels,
    scale_tokens,
    summarize,
    system_text,
    ticket_text,
    truncate_to_tokens,
)
from aibatch.simulator.ratelimit import RateLimiter
from aibatch.simulator.rules import (
    EFFORT_LEVELS,
    FORCED_TOOL_CHOICE,
    THINKING_TYPES,
    ModelRules,
    rules_for,
)
from aibatch.simulator.structured import SchemaError, check_format, fill, misread

KNOWN_MODELS: frozenset[str] = frozenset(known_models())
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_BATCH_REQUESTS = 100_000
BATCH_LIFETIME = timedelta(hours=24)
# Thinking tokens by effort, before the per-prompt factor in [0.5, 1.5] and thinking_scale.
THINKING_BASE = {"low": 300, "medium": 1200, "high": 3000, "xhigh": 6000, "max": 12000}
REFUSAL_CATEGORIES = ("cyber", "bio", "frontier_llm", "reasoning_extraction", "general_harms")
REFUSAL_EXPLANATIONS = {
    # the cyber one is the docs' example; the others follow its pattern
    "cyber": "This request was declined because it could enable cyber harm.",
    "bio": "This request was declined because it could enable biological harm.",
    "frontier_llm": (
        "This request was declined because it could assist the development of competing AI models."
    ),
    "reasoning_extraction": (
        "This request was declined because it asks the model to reproduce its internal reasoning."
    ),
    "general_harms": "This request was declined because it could be related to a harmful area.",
}
BOTH_TEMPERATURE_AND_TOP_P = (
    "`temperature` and `top_p` cannot both be specified for this model. Please use only one."
)
NO_PREFILL = (
    "This model does not support assistant message prefill. The conversation must end with a "
    "user message."
)
NO_PREFILL_WITH_THINKING = (
    "Assistant message prefill is not supported when thinking is enabled. The conversation "
    "must end with a user message."
)

TOKENS_HEADERS = "anthropic-ratelimit-tokens-"

Outcome = Literal["ok", "error", "drop", "slow"]

# https://platform.claude.com/docs/en/build-with-claude/fallback-credit: the headers that
# grant a refusal's credit fields (the 2026-06-01 one "remains accepted").
CREDIT_BETAS = frozenset(
    {"fallback-credit-2026-07-01", "fallback-credit-2026-06-01", "server-side-fallback-2026-07-01"}
)
CREDIT_LIFETIME_S = 300.0  # "The token expires five minutes after the refusal."
# The request fields a redeeming retry must send unchanged (the page's list).
CREDIT_MATCHED_FIELDS = (
    "system", "messages", "tools", "tool_choice", "thinking", "output_config", "mcp_servers",
    "context_management", "container",
)  # fmt: skip
# Models without safety classifiers: the 4.x generation never refuses.
_NO_CLASSIFIERS = re.compile(r"^claude-(?:opus|sonnet|haiku)-4-")


@dataclass(frozen=True)
class Credit:
    """A refusal's fallback credit: which model refused which request, and until when."""

    refused_model: str
    request: bytes  # the matched fields' fingerprint
    expires: float


class APIErrorReply(Exception):
    """An error answer: HTTP status, the API's error type, a message and extra headers."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}
        self.details = details

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.details is not None:
            error["details"] = self.details
        return {"type": "error", "error": error, "request_id": request_id}


def invalid(message: str) -> APIErrorReply:
    return APIErrorReply(400, "invalid_request_error", message)


@dataclass(frozen=True)
class PromptCost:
    """A request's input tokens as the API bills them: uncached, cache writes, cache reads."""

    uncached: int
    cache_write: int  # every cache write, 1-hour ones included
    cache_read: int
    cache_writes: tuple[tuple[int, float], ...]  # (prefix key, lifetime s) to store if answered
    cache_write_1h: int = 0  # the part of the writes kept an hour


@dataclass
class Answer:
    """A successful Message and what it costs, before latency is applied."""

    message: dict[str, Any]
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    cache_writes: tuple[tuple[int, float], ...]
    prompt_key: bytes
    refused: bool = False


@dataclass
class Counters:
    """What the simulator has seen; served at /_sim/stats."""

    started: float = field(default_factory=time.monotonic)
    requests_total: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    slow: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    count_tokens_requests: int = 0
    batches_created: int = 0
    batch_requests: int = 0
    batch_polls: int = 0  # GETs of one batch: how a client waits for it
    refusals: int = 0
    paid_prompts: set[bytes] = field(default_factory=set)
    repeated_prompts: int = 0
    ok_per_second: dict[int, int] = field(default_factory=dict)
    rate_limited_per_second: dict[int, int] = field(default_factory=dict)
    outage_answers: int = 0
    # Wall-clock times, so a benchmark can measure a client's rate from the server's side.
    first_message_at: float | None = None
    last_answer_at: float | None = None

    def message_arrived(self) -> None:
        self.requests_total += 1
        if self.first_message_at is None:
            self.first_message_at = time.time()

    def count_status(self, status: int) -> None:
        """One message answered with `status`."""
        self.last_answer_at = time.time()
        key = str(status)
        self.by_status[key] = self.by_status.get(key, 0) + 1
        second = int(time.monotonic() - self.started)
        if status == 200:
            self.ok_per_second[second] = self.ok_per_second.get(second, 0) + 1
        elif status == 429:
            self.rate_limited_per_second[second] = self.rate_limited_per_second.get(second, 0) + 1

    def paid(self, answer: Answer) -> None:
        self.input_tokens += answer.input_tokens
        self.output_tokens += answer.output_tokens
        self.cache_creation_input_tokens += answer.cache_write_tokens
        self.cache_read_input_tokens += answer.cache_read_tokens
        self.refusals += answer.refused
        if answer.prompt_key in self.paid_prompts:
            self.repeated_prompts += 1
        else:
            self.paid_prompts.add(answer.prompt_key)

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.monotonic() - self.started, 3),
            "requests_total": self.requests_total,
            "by_status": dict(self.by_status),
            "dropped": self.dropped,
            "slow": self.slow,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "count_tokens_requests": self.count_tokens_requests,
            "batches_created": self.batches_created,
            "batch_requests": self.batch_requests,
            "batch_polls": self.batch_polls,
            "refusals": self.refusals,
            "prompts_paid_distinct": len(self.paid_prompts),
            "prompts_paid_repeated": self.repeated_prompts,
            "ok_per_second": {str(k): v for k, v in sorted(self.ok_per_second.items())},
            "rate_limited_per_second": {
                str(k): v for k, v in sorted(self.rate_limited_per_second.items())
            },
            "outage_answers": self.outage_answers,
            "first_message_at": self.first_message_at,
            "last_answer_at": self.last_answer_at,
        }


@dataclass
class Batch:
    id: str
    created_at: datetime
    requests: list[dict[str, Any]]
    ends_at: float
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    results: list[bytes] | None = None
    counts: dict[str, int] = field(default_factory=dict)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


class SimulatedAPI:
    """The state of one simulated API endpoint (one key, one organisation)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.counters = Counters()
        self.rng = random.Random(config.seed)
        self.limiter = self._new_limiter()
        self.cache: dict[int, tuple[float, float]] = {}  # prefix key -> (expires, lifetime)
        self.batches: dict[str, Batch] = {}
        self.credits: dict[str, Credit] = {}
        self._ids = 0

    # -- configuration -------------------------------------------------------------------

    def _new_limiter(self) -> RateLimiter:
        c = self.config
        limiter = RateLimiter(c.rpm, c.itpm, c.otpm, c.burst_seconds, window=c.window)
        limiter.set_other_client(c.other_client_rpm, c.other_client_itpm)
        return limiter

    def reconfigure(self, changes: dict[str, Any]) -> None:
        """Apply changes while running. A limit that changes keeps what its bucket holds
        (as when another client of the key starts or stops); a limit added or removed, or
        a new window, starts afresh with full buckets."""
        merged = self.config.model_dump() | changes
        self.config = c = SimulatorConfig.model_validate(merged)
        if {"burst_seconds", "window"} & changes.keys() or (
            {"rpm", "itpm", "otpm"} & changes.keys()
            and not self.limiter.set_limits(c.rpm, c.itpm, c.otpm)
        ):
            self.limiter = self._new_limiter()
        self.limiter.set_other_client(c.other_client_rpm, c.other_client_itpm)

    def _retry_after(self, seconds: float) -> dict[str, str]:
        """The API's `retry-after`: whole seconds, rounded up, at least 1 (or none)."""
        if not self.config.send_retry_after:
            return {}
        return {"retry-after": str(max(1, math.ceil(seconds)))}

    def overloaded(self, status: int) -> APIErrorReply:
        """A 529 overloaded_error or a 503, with `retry-after` and the SDK's more precise
        `retry-after-ms` when `overload_retry_after_s` is set."""
        seconds = self.config.overload_retry_after_s
        headers: dict[str, str] = {}
        if seconds is not None:
            headers = {
                "retry-after": str(max(1, math.ceil(seconds))),
                "retry-after-ms": str(math.ceil(seconds * 1000)),
            }
        if status == 503:
            return APIErrorReply(503, "api_error", "Service Unavailable", headers=headers)
        return APIErrorReply(529, "overloaded_error", "Overloaded", headers=headers)

    def should_retry(self, status: int) -> str | None:
        """The `x-should-retry` the SDK obeys over its own rules: on every error with
        `send_should_retry`, else only on 500 and 529 as the simulator always did."""
        if not self.config.send_should_retry:
            return "true" if status in (500, 529) else None
        return "true" if status in (408, 409, 429) or status >= 500 else "false"

    def reset_counters(self) -> None:
        self.counters = Counters()

    def next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}_sim{self._ids:020d}"

    # -- headers -------------------------------------------------------------------------

    def check_auth(self, x_api_key: str | None, authorization: str | None) -> None:
        """Accept the key as `x-api-key` or `Authorization: Bearer` (SDK 2.10 sends Bearer)."""
        expected = self.config.api_key
        if expected is None:
            return
        bearer = None
        if authorization and authorization.lower().startswith("bearer "):
            bearer = authorization[7:].strip()
        if x_api_key == expected or bearer == expected:
            return
        message = "invalid x-api-key" if (x_api_key or bearer) else "x-api-key header is required"
        raise APIErrorReply(401, "authentication_error", message)

    def ratelimit_headers(self) -> dict[str, str]:
        c = self.config
        if not c.send_ratelimit_headers:
            return {}
        headers = self.limiter.headers()
        if c.ratelimit_header_set == "tokens":  # a gateway passes only the combined view
            return {k: v for k, v in headers.items() if k.startswith(TOKENS_HEADERS)}
        return headers

    # -- validation ----------------------------------------------------------------------

    def validate(self, body: Any, *, need_max_tokens: bool = True) -> dict[str, Any]:
        """Check a Messages request the way the API does; return it or raise an error reply."""
        if not isinstance(body, dict):
            raise invalid("request body must be a JSON object")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise invalid("model: Field required")
        if model not in KNOWN_MODELS:
            raise APIErrorReply(404, "not_found_error", f"model: {model}")
        if need_max_tokens:
            max_tokens = body.get("max_tokens")
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool):
                raise invalid("max_tokens: Field required")
            if max_tokens < 1:
                raise invalid("max_tokens: Input should be greater than or equal to 1")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise invalid("messages: at least one message is required")
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise invalid(f"messages.{i}: Input should be a valid dictionary")
            if message.get("role") not in ("user", "assistant"):
                raise invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
            content = message.get("content")
            if isinstance(content, str):
                if not content and i == len(messages) - 1 and message["role"] == "user":
                    raise invalid(f"messages.{i}: user messages must have non-empty content")
            elif isinstance(content, list):
                if not content:
                    raise invalid(f"messages.{i}: content must not be empty")
                for j, block in enumerate(content):
                    if not isinstance(block, dict) or "type" not in block:
                        raise invalid(f"messages.{i}.content.{j}: Input should be a content block")
                    if block["type"] == "text" and not isinstance(block.get("text"), str):
                        raise invalid(f"messages.{i}.content.{j}.text: Field required")
            else:
                raise invalid(f"messages.{i}.content: Input should be a string or a list")
        if messages[0].get("role") != "user":
            raise invalid('messages: first message must use the "user" role')
        system = body.get("system")
        if system is not None and not isinstance(system, (str, list)):
            raise invalid("system: Input should be a string or a list of text blocks")
        if isinstance(system, list):
            for j, block in enumerate(system):
                if not isinstance(block, dict) or block.get("type") != "text":
                    raise invalid(f"system.{j}: Input should be a text block")
        self._validate_tools(body)
        _validate_cache_controls(body)
        self._validate_model_rules(body, rules_for(model), need_max_tokens)
        return body

    def _validate_tools(self, body: dict[str, Any]) -> None:
        tools = body.get("tools")
        names: set[str] = set()
        if tools is not None:
            if not isinstance(tools, list):
                raise invalid("tools: Input should be a valid list")
            for i, tool in enumerate(tools):
                if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                    raise invalid(f"tools.{i}.name: Field required")
                if "type" in tool and tool["type"] != "custom":
                    continue  # a server tool; nothing more to check here
                schema = tool.get("input_schema")
                if not isinstance(schema, dict) or schema.get("type") != "object":
                    raise invalid(f"tools.{i}.input_schema: type must be 'object'")
                if tool["name"] in names:
                    raise invalid(f"tools: tool names must be unique ({tool['name']})")
                names.add(tool["name"])
        choice = body.get("tool_choice")
        if choice is not None:
            if not isinstance(choice, dict) or choice.get("type") not in (
                "auto",
                "any",
                "tool",
                "none",
            ):
                raise invalid("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'")
            if choice["type"] == "tool" and choice.get("name") not in names:
                raise invalid(f"tool_choice.name: no tool named {choice.get('name')!r}")
            if choice["type"] in ("any", "tool") and not names:
                raise invalid("tool_choice: tools must be provided with this tool_choice")

    def _validate_model_rules(
        self, body: dict[str, Any], rules: ModelRules, need_max_tokens: bool
    ) -> None:
        """The per-model rules (rules.py), on messages, count_tokens and batch requests."""
        max_tokens: int | None = body.get("max_tokens") if need_max_tokens else None
        if max_tokens is not None and max_tokens > rules.max_output_tokens:
            raise invalid(
                f"max_tokens: {max_tokens} > {rules.max_output_tokens}, which is the maximum "
                f"allowed number of output tokens for {body['model']}"
            )
        choice = body.get("tool_choice")
        forced = choice is not None and choice["type"] in ("any", "tool")
        if forced and not rules.forced_tool_choice:
            raise invalid(FORCED_TOOL_CHOICE)
        output_config = body.get("output_config")
        if output_config is not None and not isinstance(output_config, dict):
            raise invalid("output_config: Input should be a valid dictionary")
        output_config = output_config or {}
        for key in output_config:
            if key not in ("effort", "format"):
                raise invalid(f"output_config.{key}: Extra inputs are not permitted")
        effort = output_config.get("effort")
        if effort is not None:
            if effort not in EFFORT_LEVELS:
                raise invalid(
                    "output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' "
                    "or 'max'"
                )
            if not rules.effort_levels:
                raise invalid("output_config.effort: effort is not supported for this model.")
            if effort not in rules.effort_levels:
                allowed = ", ".join(f"'{e}'" for e in rules.effort_levels)
                raise invalid(
                    f"output_config.effort: '{effort}' is not supported for this model "
                    f"(supported: {allowed})."
                )
        thinking_on = self._validate_thinking(body, rules, effort, max_tokens, forced)
        self._validate_sampling(body, rules, thinking_on)
        last = body["messages"][-1]
        if last.get("role") == "assistant":
            if rules.prefill == "never":
                raise invalid(NO_PREFILL)
            if thinking_on:
                raise invalid(NO_PREFILL_WITH_THINKING)
        fmt = output_config.get("format")
        if fmt is not None:
            if not rules.structured_outputs:
                raise invalid(
                    "output_config.format: structured outputs are not supported for this model."
                )
            try:
                check_format(fmt)
            except SchemaError as exc:
                raise invalid(str(exc)) from exc

    def _validate_thinking(
        self,
        body: dict[str, Any],
        rules: ModelRules,
        effort: str | None,
        max_tokens: int | None,
        forced: bool,
    ) -> bool:
        """Check `thinking`; return whether thinking is on for this request."""
        thinking = body.get("thinking")
        if thinking is None:
            return rules.thinking_default == "adaptive"
        if not isinstance(thinking, dict) or thinking.get("type") not in THINKING_TYPES:
            raise invalid(
                "thinking.type: Input should be 'enabled', 'adaptive', 'disabled' or "
                "'between_tools'"
            )
        kind = thinking["type"]
        if kind not in rules.thinking_types:
            raise invalid(rules.refusal_for_thinking(kind))
        allowed_fields = {
            "enabled": {"type", "budget_tokens", "display"},
            "adaptive": {"type", "display"},
        }.get(kind, {"type"})
        for key in thinking:
            if key not in allowed_fields:
                raise invalid(f"thinking.{kind}.{key}: Extra inputs are not permitted")
        display = thinking.get("display")
        if display is not None and display not in ("summarized", "omitted"):
            raise invalid(f"thinking.{kind}.display: Input should be 'summarized' or 'omitted'")
        refused_efforts = rules.thinking_refused_at.get(kind)
        if refused_efforts:
            level = effort or rules.default_effort
            if level in refused_efforts:
                allowed = [e for e in rules.effort_levels if e not in refused_efforts]
                raise invalid(
                    f'"thinking.type.{kind}" is not supported with "output_config.effort" '
                    f'"{level}" on this model. Use effort '
                    + ", ".join(f'"{e}"' for e in allowed)
                    + ", or another thinking type."
                )
        if kind == "enabled":
            budget = thinking.get("budget_tokens")
            if not isinstance(budget, int) or isinstance(budget, bool):
                raise invalid("thinking.enabled.budget_tokens: Field required")
            if budget < 1024:
                raise invalid(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
                )
            if max_tokens is not None and max_tokens <= budget:
                raise invalid("`max_tokens` must be greater than `thinking.budget_tokens`.")
            if forced:
                raise invalid("Thinking may not be enabled when tool_choice forces tool use.")
        return kind in ("enabled", "adaptive")

    def _validate_sampling(
        self, body: dict[str, Any], rules: ModelRules, thinking_on: bool
    ) -> None:
        temperature, top_p, top_k = body.get("temperature"), body.get("top_p"), body.get("top_k")
        if temperature is None and top_p is None and top_k is None:
            return
        for name, value in (("temperature", temperature), ("top_p", top_p)):
            if value is not None and (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not 0 <= value <= 1
            ):
                raise invalid(f"{name}: Input should be a number between 0 and 1")
        if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool)):
            raise invalid("top_k: Input should be a valid integer")
        if rules.sampling == "strict":
            if temperature is not None and temperature != 1:
                raise invalid(
                    "`temperature` is not supported for this model except at its default (1). "
                    "Omit it."
                )
            if top_p is not None:
                raise invalid("`top_p` is not supported for this model. Omit it.")
            if top_k is not None:
                raise invalid("`top_k` is not supported for this model. Omit it.")
            return
        if temperature is not None and top_p is not None:
            raise invalid(BOTH_TEMPERATURE_AND_TOP_P)
        if rules.sampling == "haiku55":
            if temperature is not None and temperature != 1:
                raise invalid("`temperature` must be 1 (its default) for this model. Omit it.")
            if top_p is not None and top_p != 0.99:
                raise invalid("`top_p` must be 0.99 (its default) for this model. Omit it.")
            if top_k is not None:
                raise invalid("`top_k` is not supported for this model. Omit it.")
            return
        if thinking_on:  # "legacy": the limits apply while thinking is on
            if temperature is not None and temperature != 1:
                raise invalid("`temperature` may only be set to 1 when thinking is enabled.")
            if top_k is not None:
                raise invalid("`top_k` is not supported when thinking is enabled.")
            if top_p is not None and not 0.95 <= top_p <= 1:
                raise invalid("`top_p` must be between 0.95 and 1 when thinking is enabled.")

    # -- the Models API ----------------------------------------------------------------------

    def model_info(self, model: str) -> dict[str, Any]:
        """`GET /v1/models/{id}` from the simulator's own rules, in the API's shape
        (https://platform.claude.com/docs/en/api/models/retrieve): every capability key
        present, each `{"supported": bool}`."""
        if model not in KNOWN_MODELS:
            raise APIErrorReply(404, "not_found_error", f"model: {model}")
        rules = rules_for(model)

        def supported(flag: bool) -> dict[str, bool]:
            return {"supported": flag}

        thinking_types = {"adaptive", "enabled", "disabled"}
        return {
            "type": "model", "id": model, "display_name": model,
            "created_at": "2026-01-01T00:00:00Z",
            "max_input_tokens": rules.context_window, "max_tokens": rules.max_output_tokens,
            "capabilities": {
                "batch": supported(True), "citations": supported(True),
                "structured_outputs": supported(rules.structured_outputs),
                "effort": {**supported(bool(rules.effort_levels)),
                           **{e: supported(e in rules.effort_levels) for e in EFFORT_LEVELS}},
                "thinking": {**supported(bool(rules.thinking_types)), "types": {
                    t: supported(t in rules.thinking_types) for t in sorted(thinking_types)}},
            },
        }  # fmt: skip

    # -- tokens and caching ----------------------------------------------------------------

    def count_tokens(self, body: Any) -> dict[str, int]:
        self.validate(body, need_max_tokens=False)
        self.counters.count_tokens_requests += 1
        factor = rules_for(body["model"]).tokenizer_factor
        return {"input_tokens": sum(b.tokens for b in prompt_blocks(body, factor))}

    def _cache_split(self, body: dict[str, Any], rules: ModelRules) -> PromptCost:
        """The prompt's tokens as billed: uncached, written, read. The longest prefix still
        cached is read (A); what follows up to the last breakpoint is written (C), the part
        up to the last 1-hour breakpoint after A at the 1-hour rate (B): "cache read for A,
        1h write for (B - A), 5m write for (C - B)"
        (https://platform.claude.com/docs/en/build-with-claude/prompt-caching)."""
        blocks = prompt_blocks(body, rules.tokenizer_factor)
        total = sum(b.tokens for b in blocks)
        if not any(b.cache_breakpoint for b in blocks):
            return PromptCost(total, 0, 0, ())  # nothing cacheable: skip hashing the prompt
        now = time.monotonic()
        cumulative = 0
        prefix = hash(body.get("model"))  # caches are per model
        c = self.config
        breakpoints: list[tuple[int, int, float]] = []
        for block in blocks:
            cumulative += block.tokens
            prefix = hash((prefix, block.key))
            if block.cache_breakpoint:
                lifetime = c.cache_ttl_1h_seconds if block.one_hour else c.cache_ttl_seconds
                breakpoints.append((cumulative, prefix, lifetime))
        read = 0
        for cumulative, key, _ in reversed(breakpoints):
            entry = self.cache.get(key)
            if entry is not None and entry[0] > now:
                read = cumulative
                self.cache[key] = (now + entry[1], entry[1])  # a hit refreshes it
                break
        minimum = c.cache_min_tokens if c.cache_min_tokens is not None else rules.cache_min_tokens
        written = [(n, k, t) for n, k, t in breakpoints if n > read and n >= minimum]
        if not written:
            return PromptCost(total - read, 0, read, ())
        write = written[-1][0] - read
        one_hour = max((n for n, _, t in written if t == c.cache_ttl_1h_seconds), default=read)
        return PromptCost(
            total - read - write,
            write,
            read,
            tuple((k, t) for _, k, t in written),
            one_hour - read,
        )

    def remember_cache(self, writes: tuple[tuple[int, float], ...]) -> None:
        """A cache entry becomes readable once the response that wrote it has begun."""
        now = time.monotonic()
        for key, lifetime in writes:
            self.cache[key] = (now + lifetime, lifetime)

    # -- answering -------------------------------------------------------------------------

    def measure(self, body: dict[str, Any]) -> PromptCost:
        """Token counts and cache hits of a validated request; checks the context window."""
        rules = rules_for(body["model"])
        cost = self._cache_split(body, rules)
        prompt_tokens = cost.uncached + cost.cache_write + cost.cache_read
        max_tokens = int(body["max_tokens"])
        window = self.config.context_window
        if window is None:
            window = rules.context_window
        if prompt_tokens + max_tokens > window:
            raise invalid(
                f"prompt is too long: {prompt_tokens} tokens + max_tokens {max_tokens} > "
                f"{window} maximum"
            )
        return cost

    def answer(
        self,
        body: dict[str, Any],
        cost: PromptCost,
        *,
        service_tier: str = "standard",
        betas: frozenset[str] = frozenset(),
    ) -> Answer:
        """The fake model's reply to a validated, measured request.

        With thinking on, `content` starts with a thinking block whose tokens count toward
        `max_tokens` and `usage.output_tokens`; a ticket `p_refusal` picks is refused.
        """
        rules = rules_for(body["model"])
        factor = rules.tokenizer_factor
        max_tokens = int(body["max_tokens"])
        ticket = ticket_text(body)
        key = prompt_key(body)
        choice_type = (body.get("tool_choice") or {}).get("type")
        forced = choice_type in ("any", "tool")
        refusal = self._refusal(body["model"], ticket) if self.config.p_refusal else None
        credit_outcome = None
        if "fallback_credit_token" in body and service_tier != "batch":  # batches ignore it
            credit_outcome = self._redeem(body, betas)
        if credit_outcome is not None and credit_outcome.get("type") == "redeemed":
            cost = PromptCost(cost.uncached, 0, cost.cache_read + cost.cache_write,
                              cost.cache_writes)  # fmt: skip
        content: list[dict[str, Any]] = []
        thinking_tokens = 0
        thinking = thinking_mode(body, rules)
        if (
            thinking is not None
            and refusal is None
            and not (forced and rules.forced_tool_skips_thinking)
        ):
            thinking_tokens = min(max_tokens, self._thinking_tokens(body, rules, key, thinking))
            content.append(self._thinking_block(body, rules, key, ticket))
        remaining = max_tokens - thinking_tokens
        stop_reason = "end_turn"
        stop_details: dict[str, Any] | None = None
        output_tokens = thinking_tokens
        fmt = (body.get("output_config") or {}).get("format")
        label_tool = find_label_tool(body)
        if refusal is not None:
            category, partial = refusal
            stop_reason = "refusal"
            stop_details = {
                "type": "refusal",
                "category": category,
                "explanation": REFUSAL_EXPLANATIONS[category],
                "recommended_model": None,
            }
            if betas & CREDIT_BETAS and service_tier != "batch":
                token = self._mint_credit(body, rules)
                stop_details["fallback_credit_token"] = token
                stop_details["fallback_has_prefill_claim"] = False if token else None
            if partial:
                words = self._text_answer(body, ticket, None).split()[:5]
                text = " ".join(words)
                content.append({"type": "text", "text": text})
                output_tokens = min(max_tokens, count_text_tokens(text, factor))
        elif remaining <= 0:
            stop_reason = "max_tokens"  # thinking used the whole budget
        elif label_tool is not None and choice_type != "none" and (forced or fmt is None):
            tool_name, prop, labels = label_tool
            label = self._label(body, ticket, labels)
            tool_tokens = scale_tokens(12 + (len(label) + 3) // 4, factor)
            if tool_tokens > remaining:
                stop_reason = "max_tokens"
                output_tokens = max_tokens
            else:
                content.append(
                    {
                        "type": "tool_use",
                        "id": self.next_id("toolu"),
                        "name": tool_name,
                        "input": {prop: label},
                    }
                )
                output_tokens += tool_tokens
                stop_reason = "tool_use"
        else:
            text = self._text_answer(body, ticket, fmt)
            text, truncated = truncate_to_tokens(text, remaining, factor)
            output_tokens += max(1, count_text_tokens(text, factor))
            if truncated:
                stop_reason = "max_tokens"
                output_tokens = max_tokens
            content.append({"type": "text", "text": text})
        output_tokens = min(output_tokens, max_tokens)
        uncached, write, read = cost.uncached, cost.cache_write, cost.cache_read
        usage = {
            "input_tokens": uncached,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": write - cost.cache_write_1h,
                "ephemeral_1h_input_tokens": cost.cache_write_1h,
            },
            "output_tokens_details": {"thinking_tokens": thinking_tokens},
            "service_tier": service_tier,
        }
        if credit_outcome is not None:
            usage["fallback_credit"] = {"status": credit_outcome}
        message = {
            "id": self.next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        }
        if stop_details is not None:
            message["stop_details"] = stop_details
        return Answer(
            message,
            uncached,
            output_tokens,
            write,
            read,
            cost.cache_writes,
            key,
            refused=refusal is not None,
        )

    def _text_answer(self, body: dict[str, Any], ticket: str, fmt: Any) -> str:
        """The answer's text: JSON for a structured output, a label, or a summary."""
        if fmt is not None:
            meanings = label_definitions(system_text(body))
            answer = fill(fmt["schema"], ticket, self.config.obey_injection, meanings)
            sure, pick = self._certainty(body, ticket)
            if not sure:
                answer = misread(answer, fmt["schema"], pick)
            return orjson.dumps(answer).decode()
        options = listed_options(system_text(body)) or listed_options(ticket)
        if options:
            return self._label(body, ticket, options)
        return summarize(ticket) or "The message is empty."

    def _thinking_tokens(
        self, body: dict[str, Any], rules: ModelRules, key: bytes, thinking: str
    ) -> int:
        """Deterministic per request: a base by effort, times [0.5, 1.5) from the prompt's
        hash, times `thinking_scale`; for `enabled`, at most its budget."""
        effort = (body.get("output_config") or {}).get("effort") or rules.default_effort
        base = THINKING_BASE.get(effort or "high", THINKING_BASE["high"])
        spread = 0.5 + int.from_bytes(key[:4], "big") / 2**32
        tokens = int(base * spread * self.config.thinking_scale)
        if thinking == "enabled":
            tokens = min(tokens, int(body["thinking"]["budget_tokens"]))
        return tokens

    def _thinking_block(
        self, body: dict[str, Any], rules: ModelRules, key: bytes, ticket: str
    ) -> dict[str, Any]:
        display = (body.get("thinking") or {}).get("display") or rules.thinking_display
        text = ""
        if display == "summarized":
            words = " ".join(ticket.split()[:8])
            text = f"The request is about: {words}. I will answer from its text."
        signature = base64.b64encode(
            hashlib.blake2b(key, digest_size=48, person=b"aibatch-sig").digest()
        ).decode()
        return {"type": "thinking", "thinking": text, "signature": signature}

    def _certainty(self, body: dict[str, Any], ticket: str) -> tuple[bool, int]:
        """Whether the model reads this row right (its accuracy's share of rows, by a hash
        of seed, model and row: the same model misreads the same row again), and a number
        that picks what a misreading gets wrong."""
        model = body["model"]
        accuracy = self.config.accuracy
        share = accuracy.get(model, accuracy.get("*", built_in_accuracy(model)))
        digest = hashlib.blake2b(
            f"{self.config.seed}\0{model}\0{ticket}".encode(), digest_size=16, person=b"accuracy"
        ).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < share, digest[8]

    def _label(self, body: dict[str, Any], ticket: str, labels: list[str]) -> str:
        """The label the model answers: its best reading when it reads the row right, else
        the catch-all (other) a doubtful model reaches for, or the runner-up without one."""
        definitions = label_definitions(system_text(body))
        best = choose_label(ticket, labels, self.config.obey_injection, definitions)
        if self._certainty(body, ticket)[0]:
            return best
        fallback = catch_all(labels)
        if fallback is not None and fallback != best:
            return fallback
        ranked = ranked_labels(ticket, labels, definitions)
        return next((label for label in ranked if label != best), best)

    def _mint_credit(self, body: dict[str, Any], rules: ModelRules) -> str | None:
        """A refusal's fallback credit token, or None when the model gives no credit."""
        if not rules.fallback_targets:
            return None
        token = "fct_" + base64.urlsafe_b64encode(self.next_id("c").encode()).decode().rstrip("=")
        self.credits[token] = Credit(
            body["model"], _matched_fields(body), time.monotonic() + CREDIT_LIFETIME_S
        )
        return token

    def _redeem(self, body: dict[str, Any], betas: frozenset[str]) -> dict[str, Any]:
        """The outcome of a retry's `fallback_credit_token` (`usage.fallback_credit.status`),
        or a 400 in strict mode (the default) when it does not redeem."""
        given = body["fallback_credit_token"]
        token, mode = (
            (given.get("token"), given.get("mode", "strict"))
            if isinstance(given, dict)
            else (given, "strict")
        )
        if not isinstance(token, str) or not token.startswith("fct_"):
            raise invalid("fallback_credit_token: malformed token")
        if isinstance(given, dict) and not betas & CREDIT_BETAS:
            raise invalid("fallback_credit_token: the object form needs the fallback-credit beta")
        credit = self.credits.get(token)
        reason: str | None = None
        if not betas & CREDIT_BETAS:
            reason = "not_enabled"
        elif credit is None:
            reason = "wrong_organization"
        elif time.monotonic() > credit.expires:
            reason = "expired"
        elif body["model"] not in rules_for(credit.refused_model).fallback_targets:
            reason = "invalid_target_model"
        elif _matched_fields(body) != credit.request:
            reason = "variant_fields_present"
        if reason is None:
            return {"type": "redeemed"}
        if mode == "strict":
            if reason == "variant_fields_present":
                raise invalid(
                    "fallback_credit_token: the request body does not match the refused request"
                )
            raise invalid(f"fallback_credit_token: the token cannot be redeemed ({reason})")
        return {"type": "not_applied", "reason": reason}

    def _refusal(self, model: str, ticket: str) -> tuple[str, bool] | None:
        """(category, whether a partial text comes first) when this model refuses this row.

        A hash of (seed, model, ticket), not a random draw: real refusals follow the content,
        so the same model refuses the same row again, while another model usually answers it
        (https://platform.claude.com/docs/en/build-with-claude/refusals-and-fallback). The
        4.x models run no safety classifiers.
        """
        if _NO_CLASSIFIERS.match(model):
            return None
        digest = hashlib.blake2b(
            f"{self.config.seed}\0{model}\0{ticket}".encode(), digest_size=16
        ).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 >= self.config.p_refusal:
            return None
        category = REFUSAL_CATEGORIES[digest[8] % len(REFUSAL_CATEGORIES)]
        return category, digest[9] % 2 == 0

    # -- the realtime path -------------------------------------------------------------------

    def check_outage(self) -> None:
        """In an outage window every message is an overload, before its body is even read."""
        c = self.config
        if c.outages and c.outage_active(time.monotonic() - self.counters.started):
            self.counters.outage_answers += 1
            raise self.overloaded(c.outage_status)

    def decide(
        self, body: dict[str, Any], betas: frozenset[str] = frozenset()
    ) -> tuple[Outcome, Answer | None, float]:
        """Decide one validated message request: its outcome, answer and latency in seconds.

        Faults are drawn before rate limits, so an injected 529 costs no quota; a 429 is
        raised as an error reply carrying `retry-after`.
        """
        c = self.config
        self._refuse_for_the_account()
        self._refuse_in_a_storm()
        draw = self._draw_fault()
        if draw < c.p_drop:
            return "drop", None, self._latency(0)
        cost = self.measure(body)
        admission = self.limiter.admit(cost.uncached + cost.cache_write)
        if not admission.admitted:
            raise APIErrorReply(
                429,
                "rate_limit_error",
                f"This request would exceed the rate limit for your organization of "
                f"{admission.limited_by.replace('_', ' ')} per minute.",
                headers=self._retry_after(admission.retry_after_s),
            )
        answer = self.answer(body, cost, betas=betas)
        self.limiter.charge_output(answer.output_tokens)
        draw -= c.p_drop
        latency = self._latency(answer.output_tokens)
        if draw < c.p_slow:
            return "slow", answer, latency + c.slow_seconds
        return "ok", answer, latency

    def _refuse_for_the_account(self) -> None:
        """The spend cap and a revoked key, counted in successful messages."""
        c = self.config
        ok = self.counters.by_status.get("200", 0)
        if c.spend_cap_after is not None and ok >= c.spend_cap_after:
            raise APIErrorReply(
                429,
                "rate_limit_error",
                "You have reached your specified workspace API usage limits.",
                details={"error_code": "enforced_spend_limit_reached"},
            )
        if c.revoke_key_after is not None and ok >= c.revoke_key_after:
            raise APIErrorReply(401, "authentication_error", "invalid x-api-key")

    def _refuse_in_a_storm(self) -> None:
        left = self.config.storm_left(time.monotonic() - self.counters.started)
        if left is not None:
            raise APIErrorReply(
                429,
                "rate_limit_error",
                "Number of requests has exceeded your rate limit (storm).",
                headers=self._retry_after(min(left, 5.0)),
            )

    def _draw_fault(self) -> float:
        """Raise an injected 529, 500 or 503; else return what is left of the draw for the
        later faults (drop, slow). The order keeps a seed's sequence as it was before 503s."""
        c = self.config
        if self.counters.requests_total <= c.first_529s:  # a burst of overload at the start
            raise self.overloaded(529)
        draw = self.rng.random()
        if draw < c.p529:
            raise self.overloaded(529)
        draw -= c.p529
        if draw < c.p500:
            raise APIErrorReply(500, "api_error", "Internal server error")
        draw -= c.p500
        if draw < c.p503:
            raise self.overloaded(503)
        return draw - c.p503

    def _latency(self, output_tokens: int) -> float:
        c = self.config
        base = c.latency_ms
        if base and c.latency_sigma:
            base *= math.exp(self.rng.gauss(0.0, c.latency_sigma))
        return (base + c.ms_per_output_token * output_tokens) / 1000.0

    # -- Message Batches -------------------------------------------------------------------

    def create_batch(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
            raise invalid("requests: Field required")
        requests = body["requests"]
        if not requests:
            raise invalid("requests: at least one request is required")
        if len(requests) > MAX_BATCH_REQUESTS:
            raise invalid(f"requests: at most {MAX_BATCH_REQUESTS} requests are allowed")
        seen: set[str] = set()
        for i, request in enumerate(requests):
            if not isinstance(request, dict) or not isinstance(request.get("params"), dict):
                raise invalid(f"requests.{i}.params: Field required")
            custom_id = request.get("custom_id")
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                raise invalid(
                    f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
                )
            if custom_id in seen:
                raise invalid(f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
            seen.add(custom_id)
        now = datetime.now(UTC)
        batch = Batch(
            id=self.next_id("msgbatch"),
            created_at=now,
            requests=requests,
            ends_at=time.monotonic() + self.config.batch_processing_seconds,
        )
        self.batches[batch.id] = batch
        self.counters.batches_created += 1
        self.counters.batch_requests += len(requests)
        return self.batch_view(batch, base_url="")

    def get_batch(self, batch_id: str) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise APIErrorReply(404, "not_found_error", f"message batch {batch_id} not found")
        self._advance(batch)
        return batch

    def cancel_batch(self, batch_id: str) -> Batch:
        batch = self.get_batch(batch_id)
        if batch.ended_at is None and batch.cancel_initiated_at is None:
            batch.cancel_initiated_at = datetime.now(UTC)
        return batch

    def delete_batch(self, batch_id: str) -> dict[str, str]:
        batch = self.get_batch(batch_id)
        if batch.ended_at is None:
            raise invalid("a batch must finish processing before it can be deleted")
        del self.batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def list_batches(
        self, limit: int = 20, after_id: str | None = None, before_id: str | None = None
    ) -> dict[str, Any]:
        ordered = sorted(self.batches.values(), key=lambda b: b.id, reverse=True)
        if after_id:
            ordered = [b for b in ordered if b.id < after_id]
        if before_id:
            ordered = [b for b in ordered if b.id > before_id][-limit:]
        page = ordered[:limit]
        for batch in page:
            self._advance(batch)
        data = [self.batch_view(b, base_url="") for b in page]
        return {
            "data": data,
            "has_more": len(ordered) > len(page),
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }

    def _advance(self, batch: Batch) -> None:
        """Finish a batch whose processing time is up, or that was cancelled."""
        if batch.ended_at is not None:
            return
        now = time.monotonic()
        duration = max(self.config.batch_processing_seconds, 1e-9)
        if batch.cancel_initiated_at is not None:
            done_share = 1.0 - max(0.0, batch.ends_at - now) / duration
            processed = int(len(batch.requests) * min(1.0, done_share))
        elif now >= batch.ends_at:
            processed = len(batch.requests)
        else:
            return
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        lines: list[bytes] = []
        rng = random.Random(f"{self.config.seed}:{batch.id}")
        for i, request in enumerate(batch.requests):
            result = self._batch_result(request["params"], i < processed, rng)
            counts[result["type"]] += 1
            lines.append(orjson.dumps({"custom_id": request["custom_id"], "result": result}))
        batch.results = lines
        batch.counts = counts
        batch.ended_at = datetime.now(UTC)
        batch.requests = []  # the results now stand for them

    def _batch_result(
        self, params: dict[str, Any], processed: bool, rng: random.Random
    ) -> dict[str, Any]:
        if not processed:
            return {"type": "canceled"}
        draw = rng.random()
        if draw < self.config.batch_p_expired:
            return {"type": "expired"}
        if draw < self.config.batch_p_expired + self.config.batch_p_errored:
            error = APIErrorReply(500, "api_error", "Internal server error")
            return {"type": "errored", "error": error.body(self.next_id("req"))}
        try:
            valid = self.validate(params)
            answer = self.answer(valid, self.measure(valid), service_tier="batch")
        except APIErrorReply as error:
            return {"type": "errored", "error": error.body(self.next_id("req"))}
        self.remember_cache(answer.cache_writes)
        self.counters.paid(answer)
        return {"type": "succeeded", "message": answer.message}

    def batch_view(self, batch: Batch, base_url: str) -> dict[str, Any]:
        ended = batch.ended_at is not None
        if ended:
            status = "ended"
            counts = batch.counts
        else:
            status = "canceling" if batch.cancel_initiated_at else "in_progress"
            counts = {
                "processing": len(batch.requests),
                "succeeded": 0,
                "errored": 0,
                "canceled": 0,
                "expired": 0,
            }
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + BATCH_LIFETIME),
            "ended_at": _iso(batch.ended_at),
            "cancel_initiated_at": _iso(batch.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
        }


def thinking_mode(body: dict[str, Any], rules: ModelRules) -> str | None:
    """ "adaptive" or "enabled" when the (validated) request thinks, else None."""
    thinking = body.get("thinking")
    if thinking is None:
        return "adaptive" if rules.thinking_default == "adaptive" else None
    kind = thinking.get("type")
    return kind if kind in ("adaptive", "enabled") else None


def prompt_key(body: dict[str, Any]) -> bytes:
    """What identifies a prompt as the same paid work, whatever else the request carries."""
    canonical = orjson.dumps(
        [body.get("model"), body.get("system"), body.get("messages"), body.get("tools")],
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.blake2b(canonical, digest_size=16).digest()


def _matched_fields(body: dict[str, Any]) -> bytes:
    """The fingerprint of the fields a fallback-credit retry must send unchanged."""
    fields = [body.get(name) for name in CREDIT_MATCHED_FIELDS]
    return hashlib.blake2b(
        orjson.dumps(fields, option=orjson.OPT_SORT_KEYS), digest_size=16
    ).digest()


def _validate_cache_controls(body: dict[str, Any]) -> None:
    """`cache_control` as the API takes it: ephemeral, a lifetime of 5m or 1h, and "a 1-hour
    cache entry must appear before any 5-minute cache entries"
    (https://platform.claude.com/docs/en/build-with-claude/prompt-caching)."""
    seen_five_minutes = False
    for control in cache_controls(body):
        if control.get("type") != "ephemeral":
            raise invalid("cache_control.type: Input should be 'ephemeral'")
        ttl = control.get("ttl", "5m")
        if ttl not in ("5m", "1h"):
            raise invalid("cache_control.ttl: Input should be '5m' or '1h'")
        if ttl == "1h" and seen_five_minutes:
            raise invalid(
                "cache_control: a ttl='1h' cache_control block must not come after a "
                "ttl='5m' cache_control block"
            )
        seen_five_minutes = seen_five_minutes or ttl == "5m"
