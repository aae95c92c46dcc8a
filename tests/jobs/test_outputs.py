"""The three output kinds and how an answer is read: only complete, valid answers are kept."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from aibatch.errors import SchemaError
from aibatch.jobs.outputs import (
    InvalidModelOutput,
    JsonOutput,
    LabelOutput,
    Refused,
    TextOutput,
    Truncated,
    check_schema,
    read_answer,
)


def message(stop_reason: str, *blocks: Any, stop_details: Any = None) -> SimpleNamespace:
    return SimpleNamespace(stop_reason=stop_reason, content=list(blocks), stop_details=stop_details)


def text(value: str) -> SimpleNamespace:
    return SimpleNamespace(type="text", text=value)


THINKING = SimpleNamespace(type="thinking", thinking="", signature="sig")


def test_only_text_blocks_of_a_complete_answer_are_read() -> None:
    assert read_answer(message("end_turn", THINKING, text("The export "), text("fails."))) == (
        "The export fails."
    )


@pytest.mark.parametrize("stop_reason", ["max_tokens", "model_context_window_exceeded"])
def test_an_answer_cut_short_is_never_read(stop_reason: str) -> None:
    with pytest.raises(Truncated) as raised:
        read_answer(message(stop_reason, THINKING, text("The export fa")), max_tokens=300)
    assert raised.value.stop_reason == stop_reason


def test_a_refusal_keeps_its_category_and_drops_its_partial_text() -> None:
    details = SimpleNamespace(type="refusal", category="cyber", explanation="Declined.")
    with pytest.raises(Refused, match=r"refused \(cyber\): Declined") as raised:
        read_answer(message("refusal", text("Sure, here is"), stop_details=details))
    assert raised.value.category == "cyber" and raised.value.stop_reason == "refusal"


def test_an_unexpected_stop_reason_is_not_an_answer() -> None:
    with pytest.raises(InvalidModelOutput, match="tool_use"):
        read_answer(message("tool_use", text("x")))


def test_labels_match_ignoring_case_and_are_stored_in_the_sets_spelling() -> None:
    kind = LabelOutput(("Billing", "feature request", "other"))
    assert kind.parse('{"label": "billing"}') == "Billing"
    assert kind.parse('{"label": "FEATURE REQUEST"}') == "feature request"
    assert kind.parse("Other") == "other"  # a model without structured outputs, answering bare
    with pytest.raises(InvalidModelOutput, match="'refund' is not one of"):
        kind.parse('{"label": "refund"}')
    with pytest.raises(InvalidModelOutput, match="not a label"):
        kind.parse('{"category": "other"}')
    schema = kind.schema()
    assert schema["additionalProperties"] is False
    assert schema["properties"]["label"]["enum"] == ["Billing", "feature request", "other"]


def test_a_label_set_must_be_distinct_ignoring_case() -> None:
    with pytest.raises(ValueError, match="distinct ignoring case"):
        LabelOutput(("Billing", "billing"))


INVOICE = {
    "type": "object",
    "properties": {
        "number": {"type": "string"},
        "total": {"type": "number"},
        "issued": {"type": "string", "format": "date"},
        "lines": {"type": "array", "items": {"type": "object", "properties": {
            "sku": {"type": "string"}}, "required": ["sku"]}},
        "currency": {"enum": ["EUR", "USD"]},
    },
    "required": ["number", "total"],
}  # fmt: skip


def test_json_answers_are_validated_against_the_schema_and_stored_as_json() -> None:
    kind = JsonOutput(INVOICE)
    closed = kind.schema()
    assert closed["additionalProperties"] is False
    assert closed["properties"]["lines"]["items"]["additionalProperties"] is False
    good = '{"number": "INV-7", "total": 12.5, "issued": "2026-11-02", "currency": "EUR"}'
    assert json.loads(kind.parse(good)) == json.loads(good)
    with pytest.raises(InvalidModelOutput, match="at total"):
        kind.parse('{"number": "INV-7", "total": "twelve"}')
    with pytest.raises(InvalidModelOutput, match="at issued"):
        kind.parse('{"number": "INV-7", "total": 1, "issued": "yesterday"}')
    with pytest.raises(InvalidModelOutput, match="Additional properties"):
        kind.parse('{"number": "INV-7", "total": 1, "extra": 1}')
    with pytest.raises(InvalidModelOutput, match="not JSON"):
        kind.parse('{"number": "INV-7", "tot')


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}}, "minimum"),
        ({"type": "object", "properties": {"s": {"type": "string", "maxLength": 9}}}, "maxLength"),
        ({"type": "object", "properties": {"a": {"type": "array", "maxItems": 3}}}, "maxItems"),
        ({"type": "object", "additionalProperties": True}, "additionalProperties"),
        ({"type": "object", "properties": {"s": {"type": "string", "format": "iban"}}}, "iban"),
    ],
)
def test_schemas_structured_outputs_cannot_take_are_refused_naming_the_keyword(
    schema: dict[str, Any], keyword: str
) -> None:
    with pytest.raises(SchemaError, match=keyword):
        check_schema(schema)


def test_text_must_not_be_empty() -> None:
    assert TextOutput().parse("  A summary.  ") == "A summary."
    with pytest.raises(InvalidModelOutput, match="no text"):
        TextOutput().parse("   ")
