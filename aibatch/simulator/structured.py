"""Structured outputs (`output_config.format`): the schema check and a deterministic answer.

The check follows https://platform.claude.com/docs/en/build-with-claude/structured-outputs
("JSON Schema limitations"): numeric bounds, string lengths, array bounds other than
`minItems` 0/1, objects whose `additionalProperties` is not `false`, unknown string formats,
complex enums, external or recursive `$ref`s and unsupported regex features are refused
with a 400. Keywords the page lists in neither set (`oneOf`, `not`, `if`, ...) are refused
too: the stricter choice.

The answer is drawn from the ticket: see `fill`.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from aibatch.simulator.model import catch_all, choose_label, summarize

_UNSUPPORTED = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "maxItems",
        "uniqueItems",
        # in neither list of the docs: refused, the stricter choice
        "oneOf",
        "not",
        "if",
        "then",
        "else",
        "minProperties",
        "maxProperties",
        "patternProperties",
        "propertyNames",
        "dependentSchemas",
        "dependentRequired",
        "contains",
        "minContains",
        "maxContains",
        "prefixItems",
        "unevaluatedProperties",
        "unevaluatedItems",
    }
)
FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
_BAD_PATTERN = re.compile(r"\\[1-9bB]|\(\?<?[=!]|\\k<")
_FIXED_FORMAT_VALUES = {
    "date": "2026-01-01",
    "date-time": "2026-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "support@example.com",
    "hostname": "example.com",
    "uri": "https://example.com/",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_FORMAT_FINDERS = {
    "date": re.compile(r"\b\d{4}-\d{2}-\d{2}\b"),
    "date-time": re.compile(r"\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?(?:Z|[+-]\d{2}:\d{2})\b"),
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    "uri": re.compile(r"https?://[^\s<>\"']+"),
    "uuid": re.compile(r"\b[0-9a-f]{8}-(?:[0-9a-f]{4}-){3}[0-9a-f]{12}\b", re.IGNORECASE),
}
_DATE = _FORMAT_FINDERS["date"]
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
# A list in the text: its bullet lines; an item line reads "2 x Coffee beans @ 24.00 each".
_BULLET = re.compile(r"^[ \t]*[-*\u2022][ \t]+(\S[^\n]*)$", re.MULTILINE)
_ITEM_LINE = re.compile(
    r"^(?:(\d+)\s*[x\u00d7]\s+)?(.+?)(?:\s*@\s*(-?[\d,]*\.?\d+))?(?:\s+each)?\s*$"
)


class SchemaError(ValueError):
    """An unsupported schema; the message names the place and the feature."""


def check_format(fmt: Any) -> dict[str, Any]:
    """Return the schema of a valid `output_config.format`, or raise SchemaError."""
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise SchemaError("output_config.format.type: Input should be 'json_schema'")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise SchemaError("output_config.format.schema: Field required")
    extra = set(fmt) - {"type", "schema"}
    if extra:
        raise SchemaError(
            f"output_config.format.{sorted(extra)[0]}: Extra inputs are not permitted"
        )
    defs = {**(schema.get("$defs") or {}), **(schema.get("definitions") or {})}
    _check(schema, "output_config.format.schema", defs, ())
    return schema


def _resolve(ref: Any, where: str, defs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if not isinstance(ref, str) or not ref.startswith("#/"):
        raise SchemaError(f"{where}.$ref: external $ref is not supported")
    name = ref.rsplit("/", 1)[-1]
    if not re.fullmatch(r"#/(\$defs|definitions)/[^/]+", ref) or not isinstance(
        defs.get(name), dict
    ):
        raise SchemaError(f"{where}.$ref: cannot resolve {ref!r}")
    return name, defs[name]


def _check(node: Any, where: str, defs: dict[str, Any], refs: tuple[str, ...]) -> None:
    if isinstance(node, bool):
        return
    if not isinstance(node, dict):
        raise SchemaError(f"{where}: a schema must be an object")
    for key in node:
        if key in _UNSUPPORTED:
            raise SchemaError(f"{where}: '{key}' is not supported in structured outputs")
    if "$ref" in node:
        name, target = _resolve(node["$ref"], where, defs)
        if name in refs:
            raise SchemaError(f"{where}.$ref: recursive schemas are not supported")
        _check(target, f"{where}.$ref", defs, (*refs, name))
    types = node.get("type")
    type_set = set(types) if isinstance(types, list) else {types}
    if "object" in type_set or "properties" in node:
        if node.get("additionalProperties") is not False:
            raise SchemaError(
                f"{where}: 'additionalProperties' must be explicitly set to false for objects"
            )
        for name, sub in (node.get("properties") or {}).items():
            _check(sub, f"{where}.properties.{name}", defs, refs)
    if "minItems" in node and node["minItems"] not in (0, 1):
        raise SchemaError(f"{where}: 'minItems' values other than 0 or 1 are not supported")
    if "items" in node:
        _check(node["items"], f"{where}.items", defs, refs)
    if "format" in node and node["format"] not in FORMATS:
        raise SchemaError(f"{where}: format {node['format']!r} is not supported")
    if "pattern" in node and (
        not isinstance(node["pattern"], str) or _BAD_PATTERN.search(node["pattern"])
    ):
        raise SchemaError(f"{where}: this 'pattern' is not supported")
    if "enum" in node:
        values = node["enum"]
        if not isinstance(values, list) or not values:
            raise SchemaError(f"{where}.enum: must be a non-empty list")
        if any(isinstance(v, (dict, list)) for v in values):
            raise SchemaError(f"{where}.enum: complex types in enums are not supported")
    for key in ("anyOf", "allOf"):
        if key in node:
            subs = node[key]
            if not isinstance(subs, list) or not subs:
                raise SchemaError(f"{where}.{key}: must be a non-empty list")
            for i, sub in enumerate(subs):
                if key == "allOf" and isinstance(sub, dict) and "$ref" in sub:
                    raise SchemaError(f"{where}.allOf.{i}: 'allOf' with '$ref' is not supported")
                _check(sub, f"{where}.{key}.{i}", defs, refs)
    for key in ("$defs", "definitions"):
        for name, sub in (node.get(key) or {}).items():
            _check(sub, f"{where}.{key}.{name}", defs, (*refs, name))


# -- the answer ------------------------------------------------------------------------------


class _Filler:
    """Fills a schema from a ticket's text; `found` records whether evidence was used."""

    def __init__(
        self,
        ticket: str,
        schema: dict[str, Any],
        obey_injection: bool,
        definitions: dict[str, str] | None = None,
    ) -> None:
        self.ticket = ticket
        self.definitions = definitions
        self.lower = ticket.lower()
        self.words = set(re.findall(r"[a-z0-9]+", self.lower))
        self.defs = {**(schema.get("$defs") or {}), **(schema.get("definitions") or {})}
        self.obey_injection = obey_injection
        self._summary: str | None = None

    def summary_words(self) -> str:
        if self._summary is None:
            words = (summarize(self.ticket) or self.ticket).split()
            self._summary = " ".join(words[:12]) or "No text."
        return self._summary

    def value(self, node: Any, name: str) -> tuple[Any, bool]:
        if not isinstance(node, dict):
            return None, False
        if "$ref" in node:
            return self.value(self.defs.get(str(node["$ref"]).rsplit("/", 1)[-1]), name)
        if "const" in node:
            return node["const"], True
        if "enum" in node:
            values = node["enum"]
            labels = [str(v) for v in values]
            label = choose_label(self.ticket, labels, self.obey_injection, self.definitions)
            found = any(w in self.words for w in re.findall(r"[a-z0-9]+", label.lower()))
            return (values[labels.index(label)] if label in labels else label), found
        if "anyOf" in node:
            return self.value(node["anyOf"][0], name)
        if "allOf" in node:
            merged: dict[str, Any] = {}
            for sub in node["allOf"]:
                if isinstance(sub, dict):
                    merged |= sub
            return self.value({**{k: v for k, v in node.items() if k != "allOf"}, **merged}, name)
        kind = node.get("type")
        if isinstance(kind, list):
            kind = next((k for k in kind if k != "null"), "null")
        if kind is None:
            kind = "object" if "properties" in node else "array" if "items" in node else "string"
        if kind == "object":
            result: dict[str, Any] = {}
            found = False
            for prop, sub in (node.get("properties") or {}).items():
                result[prop], prop_found = self.value(sub, str(prop))
                found = found or prop_found
            return result, found
        if kind == "array":
            items_node = self._resolved(node.get("items") or {})
            lines = _BULLET.findall(self.ticket)
            if items_node.get("type") == "object" and lines:  # one item per bullet line
                return [_item(line, items_node) for line in lines], True
            item, found = self.value(node.get("items") or {}, name)
            if not found and node.get("minItems", 0) == 0:
                return [], False
            return [item], found
        if kind == "integer" and "count" in _name_words(name):  # how many items the list has
            return len(_BULLET.findall(self.ticket)), True
        if kind in ("integer", "number"):
            return self.number(name, integer=kind == "integer")
        if kind == "boolean":
            words = _name_words(name)
            return bool(words) and all(w in self.words for w in words), True
        if kind == "null":
            return None, False
        return self.string(node, name)

    def _resolved(self, node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return self.defs.get(str(node["$ref"]).rsplit("/", 1)[-1]) or {}
        return node

    def number(self, name: str, *, integer: bool) -> tuple[int | float, bool]:
        phrase = " ".join(_name_words(name))
        match = None
        if phrase:
            after = re.search(re.escape(phrase) + r"\D{0,20}?(-?\d+(?:\.\d+)?)", self.lower)
            match = after.group(1) if after else None
        if match is None:
            first = _NUMBER.search(self.ticket)
            match = first.group(0) if first else None
        if match is None:
            return 0, False
        number = float(match)
        return (int(number) if integer else number), True

    def string(self, node: dict[str, Any], name: str) -> tuple[str, bool]:
        labelled = self._labelled_line(name)  # "Due date: 2026-11-13" for due_date
        fmt = node.get("format")
        if fmt is not None:
            finder = _FORMAT_FINDERS.get(str(fmt))
            for text in (labelled, self.ticket):
                found = finder.search(text) if finder and text else None
                if found:
                    return found.group(0), True
            if fmt == "date-time":
                date = _DATE.search(labelled or self.ticket)
                if date:
                    return f"{date.group(0)}T00:00:00Z", True
            return _FIXED_FORMAT_VALUES.get(str(fmt), ""), False
        if labelled:
            return labelled, True
        return self.summary_words(), False

    def _labelled_line(self, name: str) -> str | None:
        """The value of a `Property name: value` line, if the text has one."""
        words = _name_words(name)
        if not words:
            return None
        line = re.search(
            r"^[ \t]*" + r"[ \t_-]+".join(map(re.escape, words)) + r"[ \t]*:[ \t]*(\S[^\n]*)$",
            self.ticket,
            re.IGNORECASE | re.MULTILINE,
        )
        return line.group(1).strip() if line else None


def _item(line: str, node: dict[str, Any]) -> dict[str, Any]:
    """One list item read from its line: an integer property is the count before "x", a
    number the price after "@", a string the words between."""
    match = _ITEM_LINE.match(line.strip())
    count, words, price = match.groups() if match else (None, line.strip(), None)
    item: dict[str, Any] = {}
    for prop, sub in (node.get("properties") or {}).items():
        kind = sub.get("type") if isinstance(sub, dict) else None
        if kind == "integer":
            item[prop] = int(count) if count else 1
        elif kind == "number":
            item[prop] = float(price.replace(",", "")) if price else 0.0
        elif kind == "boolean":
            item[prop] = False
        else:
            item[prop] = words
    return item


def _name_words(name: str) -> list[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ")
    return spaced.lower().split()


def fill(
    schema: dict[str, Any],
    ticket: str,
    obey_injection: bool = False,
    definitions: dict[str, str] | None = None,
) -> Any:
    """A value that satisfies `schema`, drawn from the ticket: enums by `choose_label`,
    strings from a `Property name: value` line (else words of the ticket), dates and
    numbers found in the text, booleans by whether the property's words occur. `definitions`:
    what the prompt says each label means (evidence for enums)."""
    value, _ = _Filler(ticket, schema, obey_injection, definitions).value(schema, "")
    return value


def misread(answer: Any, schema: dict[str, Any], pick: int) -> Any:
    """The answer with one top-level value read wrong, as a doubtful model would, still
    valid against the schema: a number off by one, a boolean flipped, a date a day late,
    another enum value, a string cut short, a list missing its last item. `pick` chooses
    which value (by a hash of the request, so the same request is misread the same way)."""
    if not isinstance(answer, dict):
        return answer
    properties = schema.get("properties") or {}
    defs = {**(schema.get("$defs") or {}), **(schema.get("definitions") or {})}
    names = sorted(answer)
    for offset in range(len(names)):
        name = names[(pick + offset) % len(names)]
        node = properties.get(name) or {}
        if "$ref" in node:
            node = defs.get(str(node["$ref"]).rsplit("/", 1)[-1]) or {}
        wrong = _misread_value(answer[name], node)
        if wrong is not None and wrong != answer[name]:
            return {**answer, name: wrong}
    return answer


def _misread_value(value: Any, node: dict[str, Any]) -> Any:
    if isinstance(node.get("enum"), list):  # the catch-all a doubtful model reaches for
        others = [v for v in node["enum"] if v != value]
        return catch_all([str(v) for v in others]) or (others[0] if others else None)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return round(value + 1.0, 2)
    if isinstance(value, str):
        if _DATE.fullmatch(value):
            try:
                return (date.fromisoformat(value) + timedelta(days=1)).isoformat()
            except ValueError:
                return None
        words = value.split()
        return " ".join(words[: len(words) // 2]) if len(words) > 1 else None
    if isinstance(value, list) and len(value) > 1:
        return value[:-1]
    return None
