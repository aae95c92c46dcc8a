"""Per-model rules of the simulated API (rules.py), through the real SDK: what each model
refuses with a 400, thinking in answers, structured outputs, refusals, cache minimums and
tokenizers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import jsonschema
import pytest

from aibatch.sdk_models import known_models
from aibatch.simulator import SimulatorServer
from aibatch.simulator.rules import RULES, STRICTEST
from tests.conftest import sdk_client

StartSimulator = Callable[..., SimulatorServer]

LABELS = ["billing", "technical", "feature request", "other"]
TICKET = (
    "I was charged twice for my subscription this month. The invoice shows two payments on "
    "my card. Please refund the duplicate charge."
)
FORCED_MESSAGE = 'tool_choice: type "tool" and "any" are not supported for this model.'
DISABLED_OPUS_55 = (
    '"thinking.type.disabled" is not supported for this model. Use "thinking.type.adaptive" '
    'and "output_config.effort" to control thinking behavior.'
)
LABEL_TOOL: dict[str, Any] = {
    "name": "record_label",
    "input_schema": {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": LABELS}},
        "required": ["label"],
    },
}
FORCED_CHOICES = [{"type": "tool", "name": "record_label"}, {"type": "any"}]


def params(model: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 32_000,
        "messages": [{"role": "user", "content": f"<ticket>{TICKET}</ticket>"}],
        **extra,
    }


def refused(client: anthropic.Anthropic, **request: Any) -> str:
    """The 400's message for a request the simulator must refuse."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(**request)
    assert caught.value.type == "invalid_request_error"
    return str(caught.value.api_message)


@pytest.fixture
def client(start_simulator: StartSimulator) -> anthropic.Anthropic:
    return sdk_client(start_simulator())


def test_every_model_the_sdk_knows_has_its_own_rules() -> None:
    missing = [m for m in known_models() if m not in RULES]
    assert missing == []
    assert all(RULES[m] is not STRICTEST for m in known_models())


# -- forced tool_choice -----------------------------------------------------------------------


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-opus-5-5", "claude-fable-5-1"])
@pytest.mark.parametrize("choice", FORCED_CHOICES)
def test_forced_tool_choice_is_refused_on_messages_and_count_tokens(
    client: anthropic.Anthropic, model: str, choice: dict[str, Any]
) -> None:
    request = params(model, tools=[LABEL_TOOL], tool_choice=choice)
    assert refused(client, **request) == FORCED_MESSAGE
    counted: dict[str, Any] = {
        "model": model,
        "messages": request["messages"],
        "tools": [LABEL_TOOL],
    }
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.count_tokens(**(counted | {"tool_choice": choice}))
    assert caught.value.api_message == FORCED_MESSAGE
    client.messages.count_tokens(**counted, tool_choice={"type": "auto"})  # auto is fine


def test_forced_tool_choice_in_a_batch_is_an_errored_result(
    start_simulator: StartSimulator,
) -> None:
    client = sdk_client(start_simulator(batch_processing_seconds=0))
    forced = params("claude-sonnet-5-5", tools=[LABEL_TOOL], tool_choice=FORCED_CHOICES[0])
    requests: list[Any] = [
        {"custom_id": "forced", "params": forced},
        {"custom_id": "haiku", "params": {**forced, "model": "claude-haiku-5-5"}},
    ]
    batch = client.messages.batches.create(requests=requests)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.errored, ended.request_counts.succeeded) == (1, 1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    errored = results["forced"]
    assert errored.type == "errored"
    assert errored.error.error.type == "invalid_request_error"
    assert errored.error.error.message == FORCED_MESSAGE
    assert results["haiku"].type == "succeeded"


@pytest.mark.parametrize("model", ["claude-haiku-5-5", "claude-haiku-4-5"])
@pytest.mark.parametrize("choice", FORCED_CHOICES)
def test_forced_tool_choice_is_accepted_on_haiku(
    client: anthropic.Anthropic, model: str, choice: dict[str, Any]
) -> None:
    message = client.messages.create(
        **params(model, max_tokens=64, tools=[LABEL_TOOL], tool_choice=choice)
    )
    # Haiku 5.5 answers a forced tool_choice with the tool call first and no thinking block.
    assert [b.type for b in message.content] == ["tool_use"]
    block = message.content[0]
    assert isinstance(block, anthropic.types.ToolUseBlock) and block.input == {"label": "billing"}
    assert message.stop_reason == "tool_use"


# -- thinking and effort -----------------------------------------------------------------------


def test_thinking_disabled_is_refused_where_thinking_is_always_on(
    client: anthropic.Anthropic,
) -> None:
    disabled = {"type": "disabled"}
    assert refused(client, **params("claude-opus-5-5", thinking=disabled)) == DISABLED_OPUS_55
    assert "between_tools" in refused(client, **params("claude-sonnet-5-5", thinking=disabled))
    enabled = {"type": "enabled", "budget_tokens": 2048}
    assert "thinking.type.enabled" in refused(client, **params("claude-opus-5-5", thinking=enabled))


def test_thinking_disabled_on_haiku_5_5_only_at_high_effort_or_below(
    client: anthropic.Anthropic,
) -> None:
    disabled = {"type": "disabled"}
    for effort in (None, "low", "high"):
        extra = {"output_config": {"effort": effort}} if effort else {}
        message = client.messages.create(**params("claude-haiku-5-5", thinking=disabled, **extra))
        assert [b.type for b in message.content] == ["text"]
        assert message.usage.output_tokens_details is not None
        assert message.usage.output_tokens_details.thinking_tokens == 0
    for effort in ("xhigh", "max"):
        message_text = refused(
            client,
            **params("claude-haiku-5-5", thinking=disabled, output_config={"effort": effort}),
        )
        assert '"thinking.type.disabled"' in message_text and effort in message_text


@pytest.mark.parametrize(
    ("effort", "accepted"),
    [("low", True), ("medium", True), ("high", True), ("xhigh", False), ("max", False)],
)
def test_between_tools_on_sonnet_5_5_only_up_to_high_effort(
    client: anthropic.Anthropic, effort: str, accepted: bool
) -> None:
    request = params(
        "claude-sonnet-5-5", thinking={"type": "between_tools"}, output_config={"effort": effort}
    )
    if accepted:
        message = client.messages.create(**request)
        assert [b.type for b in message.content] == ["text"]  # no up-front thinking
    else:
        assert "between_tools" in refused(client, **request)


def test_between_tools_takes_no_other_field_and_is_refused_elsewhere(
    client: anthropic.Anthropic,
) -> None:
    with_display = {"type": "between_tools", "display": "omitted"}
    assert "display" in refused(client, **params("claude-sonnet-5-5", thinking=with_display))
    assert "between_tools" in refused(
        client, **params("claude-opus-5-5", thinking={"type": "between_tools"})
    )


@pytest.mark.parametrize(
    ("model", "effort", "fragment"),
    [
        ("claude-haiku-4-5", "low", "effort is not supported"),
        ("claude-opus-4-5", "max", "'max' is not supported"),
        ("claude-opus-5-5", "extreme", "Input should be"),
    ],
)
def test_effort_the_model_does_not_take_is_refused(
    client: anthropic.Anthropic, model: str, effort: str, fragment: str
) -> None:
    message = refused(client, **params(model, max_tokens=1000, output_config={"effort": effort}))
    assert message.startswith("output_config.effort") and fragment in message


@pytest.mark.parametrize(
    ("thinking", "max_tokens", "fragment"),
    [
        ({"type": "enabled", "budget_tokens": 500}, 4000, "greater than or equal to 1024"),
        ({"type": "enabled", "budget_tokens": 4000}, 4000, "must be greater than"),
        ({"type": "enabled"}, 4000, "budget_tokens"),
        ({"type": "adaptive"}, 4000, "adaptive thinking is not supported"),
    ],
)
def test_extended_thinking_needs_a_valid_budget(
    client: anthropic.Anthropic, thinking: dict[str, Any], max_tokens: int, fragment: str
) -> None:
    request = params("claude-haiku-4-5", max_tokens=max_tokens, thinking=thinking)
    assert fragment in refused(client, **request)


def test_extended_thinking_is_summarized_and_kept_within_its_budget(
    client: anthropic.Anthropic,
) -> None:
    thinking = {"type": "enabled", "budget_tokens": 1024}
    message = client.messages.create(**params("claude-haiku-4-5", thinking=thinking))
    first, text = message.content
    assert isinstance(first, anthropic.types.ThinkingBlock) and first.thinking
    assert isinstance(text, anthropic.types.TextBlock)
    details = message.usage.output_tokens_details
    assert details is not None and 0 < details.thinking_tokens <= 1024
    forced = params("claude-haiku-4-5", thinking=thinking, tools=[LABEL_TOOL])
    assert "tool_choice" in refused(client, **forced, tool_choice={"type": "any"})


@pytest.mark.parametrize(
    ("model", "thinks"),
    [
        ("claude-opus-5-5", True),
        ("claude-sonnet-5-5", True),
        ("claude-haiku-5-5", True),
        ("claude-opus-4-7", False),
        ("claude-haiku-4-5", False),
    ],
)
def test_thinking_is_on_by_default_on_the_models_whose_docs_say_so(
    client: anthropic.Anthropic, model: str, thinks: bool
) -> None:
    message = client.messages.create(**params(model, max_tokens=20_000))
    types = [b.type for b in message.content]
    assert types == (["thinking", "text"] if thinks else ["text"])


def test_a_thinking_block_comes_first_and_its_tokens_are_output_tokens(
    client: anthropic.Anthropic,
) -> None:
    request = params("claude-opus-5-5")
    message = client.messages.create(**request)
    thinking, text = message.content
    assert isinstance(thinking, anthropic.types.ThinkingBlock)
    assert thinking.thinking == "" and thinking.signature  # display omitted: the 5.x default
    assert isinstance(text, anthropic.types.TextBlock) and text.text
    details = message.usage.output_tokens_details
    assert details is not None
    # medium, Opus 5.5's default effort: 1200 × [0.5, 1.5)
    assert 600 <= details.thinking_tokens < 1800
    assert message.usage.output_tokens > details.thinking_tokens
    again = client.messages.create(**request)
    assert again.usage.output_tokens_details == details  # deterministic per request
    high = client.messages.create(**params("claude-opus-5-5", output_config={"effort": "max"}))
    assert high.usage.output_tokens_details is not None
    assert high.usage.output_tokens_details.thinking_tokens > details.thinking_tokens


def test_thinking_that_fills_max_tokens_leaves_only_the_thinking_block(
    client: anthropic.Anthropic,
) -> None:
    message = client.messages.create(**params("claude-opus-5-5", max_tokens=200))
    assert [b.type for b in message.content] == ["thinking"]
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 200
    assert message.usage.output_tokens_details is not None
    assert message.usage.output_tokens_details.thinking_tokens == 200


def test_long_thinking_cuts_the_answer_to_what_is_left(start_simulator: StartSimulator) -> None:
    server = start_simulator()
    client = sdk_client(server)
    full = client.messages.create(**params("claude-opus-5-5"))
    details = full.usage.output_tokens_details
    assert details is not None
    answer_tokens = full.usage.output_tokens - details.thinking_tokens
    max_tokens = details.thinking_tokens + answer_tokens // 2
    cut = client.messages.create(**params("claude-opus-5-5", max_tokens=max_tokens))
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == max_tokens
    full_text, cut_text = full.content[1], cut.content[1]
    assert isinstance(full_text, anthropic.types.TextBlock)
    assert isinstance(cut_text, anthropic.types.TextBlock)
    assert full_text.text.startswith(cut_text.text) and len(cut_text.text) < len(full_text.text)

    server.configure(thinking_scale=100.0)  # forces thinking past any max_tokens
    long = client.messages.create(**params("claude-opus-5-5"))
    assert [b.type for b in long.content] == ["thinking"] and long.stop_reason == "max_tokens"


# -- sampling and prefill ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "sampling", "accepted"),
    [
        ("claude-haiku-5-5", {"temperature": 0.2}, False),
        ("claude-haiku-5-5", {"temperature": 1}, True),
        ("claude-haiku-5-5", {"top_p": 0.99}, True),
        ("claude-haiku-5-5", {"top_p": 1}, False),
        ("claude-haiku-5-5", {"top_k": 5}, False),
        ("claude-haiku-5-5", {"temperature": 1, "top_p": 0.99}, False),
        ("claude-haiku-4-5", {"temperature": 0.2}, True),
        ("claude-haiku-4-5", {"top_k": 5}, True),
        ("claude-haiku-4-5", {"temperature": 0.2, "top_p": 0.9}, False),
        ("claude-opus-5-5", {"temperature": 0.2}, False),
        ("claude-sonnet-5-5", {"top_p": 0.9}, False),
        ("claude-opus-4-7", {"temperature": 0.5}, False),
    ],
)
def test_sampling_parameters_follow_the_model(
    client: anthropic.Anthropic, model: str, sampling: dict[str, Any], accepted: bool
) -> None:
    # SDK 2.16 has no sampling arguments any more: they go in the body as older clients sent them
    request = params(model, max_tokens=20_000, extra_body=sampling)
    if accepted:
        client.messages.create(**request)
    else:
        message = refused(client, **request)
        assert any(name in message for name in sampling)


@pytest.mark.parametrize(
    ("model", "accepted"),
    [
        ("claude-opus-5-5", False),
        ("claude-sonnet-5-5", False),
        ("claude-haiku-5-5", False),
        ("claude-haiku-4-5", True),
    ],
)
def test_assistant_prefill_is_refused_on_the_5_5_models(
    client: anthropic.Anthropic, model: str, accepted: bool
) -> None:
    messages = [
        {"role": "user", "content": f"<ticket>{TICKET}</ticket>"},
        {"role": "assistant", "content": "The ticket is about"},
    ]
    request = params(model, messages=messages)
    if accepted:  # Haiku 4.5 accepts a prefill while thinking is off, not while it is on
        client.messages.create(**request)
        thinking = {"type": "enabled", "budget_tokens": 2048}
        assert "prefill" in refused(client, **request, thinking=thinking)
    else:
        assert "prefill" in refused(client, **request)


# -- structured outputs ------------------------------------------------------------------------

ORDER_TICKET = (
    "Customer name: Dana Smith\n"
    "Order number: 4711\n"
    "I was charged twice on 2026-03-14 for the same order and I requested a refund, "
    "but nothing happened yet. The invoice shows two payments."
)
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": LABELS},
        "customer_name": {"type": "string"},
        "order_number": {"type": "integer"},
        "refund_requested": {"type": "boolean"},
        "incident_date": {"type": "string", "format": "date"},
        "summary": {"type": "string"},
        "products": {"type": "array", "items": {"type": "string", "enum": ["app", "api"]}},
        "amount": {"anyOf": [{"type": "number"}, {"type": "null"}]},
    },
    "required": ["category", "customer_name", "order_number", "refund_requested"],
    "additionalProperties": False,
}


def structured(schema: dict[str, Any]) -> dict[str, Any]:
    return {"format": {"type": "json_schema", "schema": schema}}


def test_structured_output_satisfies_the_schema_and_carries_the_ticket(
    client: anthropic.Anthropic,
) -> None:
    request = params(
        "claude-sonnet-5-5",
        messages=[{"role": "user", "content": f"<ticket>{ORDER_TICKET}</ticket>"}],
        output_config=structured(ORDER_SCHEMA),
    )
    first, second = client.messages.create(**request), client.messages.create(**request)
    text = first.content[-1]
    assert isinstance(text, anthropic.types.TextBlock)
    value = json.loads(text.text)
    jsonschema.validate(value, ORDER_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert value["category"] == "billing"
    assert value["customer_name"] == "Dana Smith"
    assert value["order_number"] == 4711
    assert value["refund_requested"] is True
    assert value["incident_date"] == "2026-03-14"
    assert set(value["summary"].lower().split()) & {"charged", "twice", "invoice", "refund"}
    assert value["products"] == []  # minItems 0 and no product mentioned
    assert first.content == second.content and first.stop_reason == "end_turn"


def test_a_label_set_schema_gets_the_label_the_ticket_points_to(
    client: anthropic.Anthropic,
) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": LABELS}},
        "required": ["label"],
        "additionalProperties": False,
    }
    message = client.messages.create(**params("claude-haiku-5-5", output_config=structured(schema)))
    text = message.content[-1]
    assert isinstance(text, anthropic.types.TextBlock)
    assert json.loads(text.text) == {"label": "billing"}


def test_a_structured_output_cut_by_max_tokens_is_invalid_json(
    client: anthropic.Anthropic,
) -> None:
    thinking = {"type": "disabled"}
    request = params(
        "claude-haiku-5-5",
        max_tokens=10,
        thinking=thinking,
        messages=[{"role": "user", "content": f"<ticket>{ORDER_TICKET}</ticket>"}],
        output_config=structured(ORDER_SCHEMA),
    )
    message = client.messages.create(**request)
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 10
    text = message.content[-1]
    assert isinstance(text, anthropic.types.TextBlock)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.text)


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in ORDER_SCHEMA.items() if k != key}


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({**ORDER_SCHEMA, "properties": {"n": {"type": "integer", "minimum": 0}}}, "minimum"),
        ({**ORDER_SCHEMA, "properties": {"n": {"type": "number", "multipleOf": 2}}}, "multipleOf"),
        ({**ORDER_SCHEMA, "properties": {"s": {"type": "string", "maxLength": 9}}}, "maxLength"),
        ({**ORDER_SCHEMA, "properties": {"a": {"type": "array", "minItems": 2}}}, "minItems"),
        ({**ORDER_SCHEMA, "properties": {"a": {"type": "array", "uniqueItems": True}}}, "unique"),
        ({**ORDER_SCHEMA, "properties": {"s": {"type": "string", "format": "color"}}}, "format"),
        (_without("additionalProperties"), "additionalProperties"),
        ({**ORDER_SCHEMA, "additionalProperties": True}, "additionalProperties"),
        ({**ORDER_SCHEMA, "properties": {"e": {"enum": [{"a": 1}]}}}, "complex"),
        ({**ORDER_SCHEMA, "properties": {"r": {"$ref": "https://x/y.json"}}}, "external"),
    ],
)
def test_unsupported_schema_features_are_refused(
    client: anthropic.Anthropic, schema: dict[str, Any], fragment: str
) -> None:
    request = params("claude-opus-5-5", output_config=structured(schema))
    message = refused(client, **request)
    assert message.startswith("output_config.format") and fragment in message


def test_an_output_format_must_be_a_json_schema(client: anthropic.Anthropic) -> None:
    bad = {"format": {"type": "json", "schema": ORDER_SCHEMA}}
    assert "json_schema" in refused(client, **params("claude-opus-5-5", output_config=bad))
    recursive = {
        "type": "object",
        "properties": {"child": {"$ref": "#/$defs/node"}},
        "additionalProperties": False,
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"child": {"$ref": "#/$defs/node"}},
                "additionalProperties": False,
            }
        },
    }
    request = params("claude-opus-5-5", output_config=structured(recursive))
    assert "recursive" in refused(client, **request)


# -- refusals ----------------------------------------------------------------------------------


def test_p_refusal_declines_with_stop_details_and_counts_it(
    start_simulator: StartSimulator,
) -> None:
    server = start_simulator(p_refusal=1.0, batch_processing_seconds=0)
    client = sdk_client(server)
    categories = set()
    partial = 0
    for i in range(12):
        request = params("claude-sonnet-5-5")
        request["messages"] = [{"role": "user", "content": f"<ticket>{TICKET} ({i})</ticket>"}]
        message = client.messages.create(**request)
        assert message.stop_reason == "refusal"
        details = message.stop_details
        assert details is not None and details.type == "refusal"
        assert details.category is not None and details.explanation
        assert details.explanation.startswith("This request was declined")
        categories.add(details.category)
        assert [b.type for b in message.content] in ([], ["text"])
        partial += bool(message.content)
        assert message.usage.output_tokens <= 10
    assert len(categories) > 1 and 0 < partial < 12
    assert server.stats()["refusals"] == 12

    one: list[Any] = [{"custom_id": "a", "params": params("claude-sonnet-5-5")}]
    batch = client.messages.batches.create(requests=one)
    (result,) = list(client.messages.batches.results(batch.id))
    assert result.result.type == "succeeded"
    assert result.result.message.stop_reason == "refusal"


def test_refusals_follow_the_ticket_so_a_retry_is_refused_again(
    start_simulator: StartSimulator,
) -> None:
    client = sdk_client(start_simulator(p_refusal=0.5, seed=3))
    outcomes = []
    for i in range(16):
        request = params("claude-haiku-5-5", max_tokens=20_000)
        request["messages"] = [{"role": "user", "content": f"<ticket>{TICKET} #{i}</ticket>"}]
        first = client.messages.create(**request).stop_reason
        assert client.messages.create(**request).stop_reason == first
        outcomes.append(first == "refusal")
    assert 0 < sum(outcomes) < 16


def test_new_config_fields_can_be_changed_over_http(start_simulator: StartSimulator) -> None:
    server = start_simulator()
    reply = httpx2.post(
        f"{server.base_url}/_sim/config", json={"p_refusal": 1.0, "thinking_scale": 2.5}
    )
    assert reply.status_code == 200
    assert reply.json()["p_refusal"] == 1.0 and reply.json()["thinking_scale"] == 2.5
    assert reply.json()["cache_min_tokens"] is None and reply.json()["context_window"] is None
    message = sdk_client(server).messages.create(**params("claude-haiku-5-5"))
    assert message.stop_reason == "refusal"
    bad = httpx2.post(f"{server.base_url}/_sim/config", json={"thinking_scale": -1})
    assert bad.status_code == 400


# -- per-model limits and tokenizers -----------------------------------------------------------


def test_the_cache_minimum_is_the_models_own(client: anthropic.Anthropic) -> None:
    instructions = "Label definitions: billing covers invoices and refunds. " * 70  # ~1,000
    system = [{"type": "text", "text": instructions, "cache_control": {"type": "ephemeral"}}]
    prompt: dict[str, Any] = {"system": system, "messages": [{"role": "user", "content": "hi"}]}
    counted = client.messages.count_tokens(model="claude-haiku-4-5", **prompt)
    assert 900 <= counted.input_tokens <= 1100

    def written(model: str) -> int:
        usage = client.messages.create(**params(model, system=system)).usage
        return usage.cache_creation_input_tokens or 0

    assert written("claude-sonnet-5-5") >= 512  # 512-token minimum on the 5.5 models
    assert written("claude-haiku-4-5") == 0  # 4,096 on Haiku 4.5


def test_an_explicit_cache_minimum_overrides_every_model(start_simulator: StartSimulator) -> None:
    client = sdk_client(start_simulator(cache_min_tokens=50))
    system = [{"type": "text", "text": "Rules. " * 60, "cache_control": {"type": "ephemeral"}}]
    usage = client.messages.create(**params("claude-haiku-4-5", system=system)).usage
    assert usage.cache_creation_input_tokens


def test_the_newer_tokenizer_counts_about_30_percent_more(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": f"<ticket>{TICKET * 20}</ticket>"}]
    request: dict[str, Any] = {"messages": messages}
    old = client.messages.count_tokens(model="claude-haiku-4-5", **request)
    new = client.messages.count_tokens(model="claude-haiku-5-5", **request)
    assert 1.3 * old.input_tokens <= new.input_tokens <= 1.3 * old.input_tokens + 2
    used = client.messages.create(model="claude-haiku-5-5", max_tokens=20_000, **request)
    assert used.usage.input_tokens == new.input_tokens


@pytest.mark.parametrize(
    ("model", "max_tokens", "accepted"),
    [
        ("claude-haiku-4-5", 64_000, True),
        ("claude-haiku-4-5", 64_001, False),
        ("claude-haiku-5-5", 128_000, True),
        ("claude-haiku-5-5", 128_001, False),
    ],
)
def test_max_tokens_is_capped_at_the_models_max_output(
    client: anthropic.Anthropic, model: str, max_tokens: int, accepted: bool
) -> None:
    request = params(model, max_tokens=max_tokens)
    if accepted:
        client.messages.create(**request)
    else:
        assert "maximum allowed number of output tokens" in refused(client, **request)


def test_the_context_window_is_the_models_own(client: anthropic.Anthropic) -> None:
    # 150K prompt tokens + 60K max_tokens: over Haiku 4.5's 200K, within Haiku 5.5's 1M.
    messages = [{"role": "user", "content": "word " * 120_000}]
    request: dict[str, Any] = {"max_tokens": 60_000, "messages": messages}
    assert "prompt is too long" in refused(client, model="claude-haiku-4-5", **request)
    client.messages.create(model="claude-haiku-5-5", **request)
