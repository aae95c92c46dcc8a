"""The three kinds of answer a job asks for, and how an answer is read.

- `TextOutput`: free text (a summary).
- `LabelOutput`: one label from a set. Stored in the set's own spelling; the model's answer
  is matched ignoring case.
- `JsonOutput`: a JSON object matching a JSON Schema, stored as JSON text and as one typed
  column per top-level property (`aibatch/jobs/answer_columns.py`).

Labels and JSON are asked for with native structured outputs
(`output_config.format = {"type": "json_schema", "schema": ...}`), never with a forced tool
call: forced `tool_choice` is a 400 on several current models. A model without structured
outputs gets the same contract in the prompt instead, and the answer is held to it all the
same: every answer is validated with `jsonschema` before it is stored.

Only a complete answer is read. `read_answer` looks at the stop reason first: a refusal or an
answer cut short by `max_tokens` (or the context window) raises, so its partial text is never
stored. Thinking blocks are skipped: only `text` blocks make the answer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import jsonschema

from aibatch.errors import ColumnError, SchemaError
from aibatch.jobs.answer_columns import NO_COLUMNS, AnswerColumns

OutputKindName = Literal["text", "label", "json"]
OUTPUT_KINDS: tuple[OutputKindName, ...] = ("text", "label", "json")


class InvalidModelOutput(Exception):
    """The model answered, but not with something this job can store."""


class Truncated(InvalidModelOutput):
    """The answer stopped before it was complete (`max_tokens`, or the context window)."""

    def __init__(self, stop_reason: str, max_tokens: int | None = None) -> None:
        where = f" at max_tokens={max_tokens}" if max_tokens is not None else ""
        super().__init__(f"the answer was cut short ({stop_reason}{where})")
        self.stop_reason = stop_reason


class Refused(InvalidModelOutput):
    """The model declined to answer (`stop_reason: refusal`)."""

    stop_reason = "refusal"

    def __init__(
        self, category: str | None, explanation: str | None, fallback_credit: str | None = None
    ) -> None:
        detail = f" ({category})" if category else ""
        super().__init__(f"the model refused{detail}" + (f": {explanation}" if explanation else ""))
        self.category = category
        # Echoed on a retry on another model, so it does not pay the cache write again
        # (https://platform.claude.com/docs/en/build-with-claude/fallback-credit).
        self.fallback_credit = fallback_credit


# JSON Schema keywords native structured outputs accept. The structured outputs page
# (platform.claude.com/docs/en/build-with-claude/structured-outputs) lists what is supported
# (types, enum, const, anyOf, allOf, $ref/$defs, required, items, minItems of 0 or 1, simple
# patterns, a set of string formats) and what is not (numeric bounds, string lengths,
# maxItems, additionalProperties other than false, ...); the installed SDK's
# `transform_schema` keeps the same set. Keywords it names in neither list are refused too.
# A schema using anything else is refused before any call, naming the keyword, rather than
# sent and answered with a 400 per request.
SUPPORTED_SCHEMA_KEYWORDS = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "anyOf", "allOf", "$ref", "$defs", "definitions", "description", "title", "format",
    "minItems", "default", "pattern",
})  # fmt: skip
SUPPORTED_STRING_FORMATS = frozenset({
    "date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6",
    "uuid",
})  # fmt: skip


def check_schema(schema: Any, where: str = "schema") -> dict[str, Any]:
    """`schema` as structured outputs want it (every object closed with
    `additionalProperties: false`), or SchemaError naming the first keyword at fault."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be a JSON object")
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in SUPPORTED_SCHEMA_KEYWORDS:
            raise SchemaError(f"{where}: {key!r} is not supported by structured outputs")
        if key == "properties":
            if not isinstance(value, dict):
                raise SchemaError(f"{where}.properties: must be an object")
            out[key] = {name: check_schema(sub, f"{where}.properties.{name}")
                        for name, sub in value.items()}  # fmt: skip
        elif key in ("$defs", "definitions"):
            out[key] = {name: check_schema(sub, f"{where}.{key}.{name}")
                        for name, sub in value.items()}  # fmt: skip
        elif key == "items":
            out[key] = check_schema(value, f"{where}.items")
        elif key in ("anyOf", "allOf"):
            if not isinstance(value, list) or not value:
                raise SchemaError(f"{where}.{key}: must be a non-empty list")
            out[key] = [check_schema(s, f"{where}.{key}.{i}") for i, s in enumerate(value)]
        elif key == "additionalProperties" and value is not False:
            raise SchemaError(f"{where}: additionalProperties must be false")
        elif key == "minItems" and value not in (0, 1):
            raise SchemaError(f"{where}: minItems other than 0 or 1 is not supported")
        elif key == "format" and value not in SUPPORTED_STRING_FORMATS:
            raise SchemaError(f"{where}: string format {value!r} is not supported")
        else:
            out[key] = value
    if out.get("type") == "object" or "properties" in out:
        out["additionalProperties"] = False
    try:
        jsonschema.Draft202012Validator.check_schema(out)
    except jsonschema.SchemaError as error:
        raise SchemaError(f"{where}: {error.message}") from None
    return out


class OutputKind(Protocol):
    """What a job asks the model to return, and how the answer becomes a stored value."""

    @property
    def name(self) -> OutputKindName: ...

    @property
    def answer_tokens(self) -> int:
        """Room the answer itself needs in max_tokens (thinking comes on top)."""
        ...

    def schema(self) -> dict[str, Any] | None:
        """The JSON Schema for `output_config.format`, or None for free text."""
        ...

    def prompt_contract(self) -> str:
        """How to answer, in words: for models without native structured outputs."""
        ...

    def parse(self, text: str) -> str:
        """The value to store, or InvalidModelOutput."""
        ...

    def expected_lengths(self, row_text: str) -> tuple[float, ...]:
        """The lengths in characters of the answers to expect, each as likely as the
        others (for the estimate)."""
        ...

    @property
    def columns(self) -> AnswerColumns:
        """The typed columns the answer fills beside `result` (none for text and labels)."""
        ...


@dataclass(frozen=True)
class TextOutput:
    name: ClassVar[OutputKindName] = "text"
    columns: ClassVar[AnswerColumns] = NO_COLUMNS
    answer_tokens: int = 300

    def schema(self) -> dict[str, Any] | None:
        return None

    def prompt_contract(self) -> str:
        return ""

    def parse(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise InvalidModelOutput("the answer has no text")
        return text

    def expected_lengths(self, row_text: str) -> tuple[float, ...]:
        return (float(min(len(row_text), self.answer_tokens * 4)),)


LABEL_PROPERTY = "label"


@dataclass(frozen=True)
class LabelOutput:
    labels: tuple[str, ...]
    answer_tokens: int = 64
    name: ClassVar[OutputKindName] = "label"
    columns: ClassVar[AnswerColumns] = NO_COLUMNS
    _by_folded: dict[str, str] = field(init=False, repr=False, compare=False)
    _validator: jsonschema.Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        folded = {label.casefold(): label for label in self.labels}
        if len(folded) < 2 or len(folded) != len(self.labels):
            raise ValueError("a label set needs at least two labels, distinct ignoring case")
        object.__setattr__(self, "_by_folded", folded)
        # Built once: `jsonschema.validate` checks the schema and builds a validator on
        # every call, which was the largest share of the engine's CPU per answer.
        object.__setattr__(self, "_validator", jsonschema.Draft202012Validator(self.schema()))

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {LABEL_PROPERTY: {"type": "string", "enum": list(self.labels)}},
            "required": [LABEL_PROPERTY],
            "additionalProperties": False,
        }

    def prompt_contract(self) -> str:
        options = ", ".join(self.labels)
        return (
            'Answer with a JSON object and nothing else: {"label": L}, where L is one of: '
            f"{options}"
        )

    def parse(self, text: str) -> str:
        raw = text.strip()
        try:
            value = json.loads(raw)
        except ValueError:
            value = {LABEL_PROPERTY: raw}  # a model without structured outputs may say it bare
        if isinstance(value, dict) and isinstance(value.get(LABEL_PROPERTY), str):
            answered = value[LABEL_PROPERTY]
            value = {**value, LABEL_PROPERTY: self._by_folded.get(answered.strip().casefold(),
                                                                  answered)}  # fmt: skip
        try:
            self._validator.validate(value)
        except jsonschema.ValidationError as error:
            answered = value.get(LABEL_PROPERTY) if isinstance(value, dict) else value
            if isinstance(value, dict) and isinstance(answered, str):
                raise InvalidModelOutput(
                    f"label {answered!r} is not one of {', '.join(self.labels)}"
                ) from None
            raise InvalidModelOutput(f"the answer is not a label: {error.message}") from None
        return str(value[LABEL_PROPERTY])

    def expected_lengths(self, row_text: str) -> tuple[float, ...]:
        return tuple(float(len(json.dumps({LABEL_PROPERTY: label}))) for label in self.labels)


@dataclass(frozen=True)
class JsonOutput:
    json_schema: dict[str, Any]
    answer_tokens: int = 1024
    name: ClassVar[OutputKindName] = "json"
    columns: AnswerColumns = field(init=False, repr=False, compare=False)
    _validator: jsonschema.Draft202012Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        checked = check_schema(self.json_schema)
        if checked.get("type") != "object":
            raise SchemaError("schema: the top level must be an object (type: object)")
        try:
            columns = AnswerColumns.of(checked)
        except ColumnError as error:
            raise SchemaError(str(error)) from None
        object.__setattr__(self, "json_schema", checked)
        object.__setattr__(self, "columns", columns)
        validator = jsonschema.Draft202012Validator(checked, format_checker=_FORMATS)
        object.__setattr__(self, "_validator", validator)  # once, as for labels

    def schema(self) -> dict[str, Any]:
        return self.json_schema

    def prompt_contract(self) -> str:
        return (
            "Answer with one JSON object and nothing else, matching this JSON Schema:\n"
            + json.dumps(self.json_schema, indent=1)
        )

    def parse(self, text: str) -> str:
        try:
            value = json.loads(text.strip())
        except ValueError as error:
            raise InvalidModelOutput(f"the answer is not JSON: {error}") from None
        try:
            self._validator.validate(value)
        except jsonschema.ValidationError as error:
            path = "/".join(str(p) for p in error.absolute_path) or "(top)"
            raise InvalidModelOutput(
                f"the answer does not match the schema at {path}: {error.message}"
            ) from None
        try:
            self.columns.check(value)  # now, not when publishing: a bad value is asked again
        except ValueError as error:
            raise InvalidModelOutput(f"the answer cannot be stored: {error}") from None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def expected_lengths(self, row_text: str) -> tuple[float, ...]:
        return (float(len(json.dumps(_example(self.json_schema)))),)


_FORMATS = jsonschema.Draft202012Validator.FORMAT_CHECKER


def _example(schema: dict[str, Any]) -> Any:
    """A small value of the schema's shape, for estimating an answer's length."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: _example(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_example(schema.get("items") or {})]
    if kind in ("integer", "number"):
        return 12345
    if kind == "boolean":
        return True
    return "a few words of text"


def read_answer(message: Any, max_tokens: int | None = None) -> str:
    """The text of a complete answer; Refused or Truncated when the stop reason says it is
    not one. `message` is an SDK Message (or anything with its attributes)."""
    stop_reason = getattr(message, "stop_reason", None)
    if stop_reason == "refusal":
        details = getattr(message, "stop_details", None)
        raise Refused(
            getattr(details, "category", None),
            getattr(details, "explanation", None),
            getattr(details, "fallback_credit_token", None),
        )
    if stop_reason in ("max_tokens", "model_context_window_exceeded"):
        raise Truncated(stop_reason, max_tokens)
    if stop_reason not in ("end_turn", "stop_sequence", None):
        raise InvalidModelOutput(f"unexpected stop_reason {stop_reason!r}")
    return "".join(
        block.text for block in message.content if getattr(block, "type", None) == "text"
    )
