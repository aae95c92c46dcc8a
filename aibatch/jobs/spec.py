"""Jobs: what to ask of each row, as a job file says it, and how to ask it of one model.

A job is one validated `JobDefinition` (a TOML job file, or the same fields as a Prefect
flow parameter, a form in the UI, or inline in prefect.yaml): a system prompt, a prompt
template over the input's columns (`aibatch/jobs/templates.py`), and an output kind
(`aibatch/jobs/outputs.py`: text, a label from a set, or JSON matching a schema). The built-in
`summarize` and `classify` are job files shipped in the package (`aibatch/builtin_jobs/`).

`JobSpec` is a job asked of one model: thinking, effort, structured outputs and
`max_tokens` follow that model's entry in the capability table (`aibatch/jobs/models.py`). Its
resume key is the job's name and a hash of its whole definition, so an edited job answers
every row again and an unchanged one makes no call; no version is bumped by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aibatch.errors import BadInput, JobFileError, SchemaError, TemplateError
from aibatch.jobs.models import EFFORTS, THINKING_ROOM, Effort, ModelBook, ModelRules
from aibatch.jobs.outputs import (
    JsonOutput,
    LabelOutput,
    OutputKind,
    OutputKindName,
    TextOutput,
    read_answer,
)
from aibatch.jobs.templates import FRAMING, PromptTemplate
from aibatch.tomlfile import read_toml

BUILT_IN_JOBS: tuple[str, ...] = ("summarize", "classify")
JOBS = BUILT_IN_JOBS  # the names `--job` takes
DEFAULT_LABELS: tuple[str, ...] = ("billing", "technical", "feature request", "other")
# Room for the answer itself, by kind, when a job gives no max_tokens; thinking that cannot
# be turned off gets room on top.
ANSWER_TOKENS: dict[OutputKindName, int] = {"text": 300, "label": 64, "json": 1024}
# Labels and extraction need no deep thought: the lowest effort, unless a job says more.
DEFAULT_EFFORT: Effort = "low"
# Part of every resume key: a change in how aibatch frames or asks (not in the job) makes
# a new key too. v2: <data> framing of row values, structured outputs, thinking per model.
REQUEST_FORMAT = "v2"

MAX_INSTRUCTIONS_CHARS = 200_000  # about 50k tokens: every request carries them


CacheTtl = Literal["5m", "1h"]  # the shared prefix's cache lifetime

# An answer cut short by max_tokens is asked again with this many times the room, each time
# (the engine's policy bounds how often: TRUNCATION_RETRIES).
TRUNCATION_GROWTH = 2


class OutputDefinition(BaseModel):
    """What the job's answer is: free text, one label of a set, or JSON matching a schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    kind: OutputKindName = Field(description="text, label or json")
    labels: list[str] | None = Field(default=None, description="label: the label set")
    definitions: dict[str, str] = Field(
        default_factory=dict, description="label: a one-line definition per label"
    )
    json_schema: dict[str, Any] | None = Field(
        default=None, alias="schema", description="json: the JSON Schema of the answer"
    )
    schema_file: str | None = Field(
        default=None, description="json: a JSON Schema file, relative to the job file"
    )

    @model_validator(mode="after")
    def _fits_the_kind(self) -> OutputDefinition:
        if self.kind == "label":
            labels = [label.strip() for label in self.labels or [] if label.strip()]
            folded = {label.casefold() for label in labels}
            if len(folded) < 2 or len(folded) != len(labels):
                raise ValueError("a label job needs at least two labels, distinct ignoring case")
            unknown = set(self.definitions) - set(labels)
            if unknown:
                raise ValueError(f"definitions for labels not in the set: {sorted(unknown)}")
            self.labels = labels
        elif self.labels or self.definitions:
            raise ValueError(f"labels and definitions belong to kind label, not {self.kind}")
        if self.kind == "json":
            if (self.json_schema is None) == (self.schema_file is None):
                raise ValueError("a json job needs one of schema or schema_file")
            if self.json_schema is not None:
                try:
                    JsonOutput(self.json_schema)
                except SchemaError as error:
                    raise ValueError(str(error)) from None
        elif self.json_schema is not None or self.schema_file is not None:
            raise ValueError(f"schema belongs to kind json, not {self.kind}")
        return self


class JobDefinition(BaseModel):
    """A job: the question asked of every row, and the shape of its answer."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9-]+$", max_length=64, description="names the dataset")
    model: str | None = Field(
        default=None, description="default: the capability table's default for the kind"
    )
    system: str = Field(min_length=1, description="the system prompt (cached)")
    prompt: str = Field(min_length=1, description="Jinja2 template over the input's columns")
    output: OutputDefinition
    max_tokens: int | None = Field(
        default=None, ge=1, le=128_000, description="room for the answer (thinking on top)"
    )
    effort: Effort | None = Field(default=None, description="low (default) ... max")
    instructions: str | None = Field(
        default=None, max_length=MAX_INSTRUCTIONS_CHARS,
        description="your own instructions (house style, examples), cached with the system",
    )  # fmt: skip
    id_column: str | None = Field(default=None, min_length=1, description="default: id")
    escalate_to: str | None = Field(
        default=None,
        description="a stronger model that re-asks the rows the first could not answer well "
        "(refused, invalid, cut short, or answered with an escalate_labels label)",
    )
    escalate_labels: list[str] = Field(
        default_factory=list,
        description='label jobs: answers a cascade re-asks of its stronger model (e.g. ["other"]); '
        "used when there is one (escalate_to, or eval's MODEL+STRONGER)",
    )

    @model_validator(mode="after")
    def _escalation_valid(self) -> JobDefinition:
        return self._escalation_fits()

    def _escalation_fits(self) -> JobDefinition:
        if self.escalate_labels:
            if self.output.kind != "label":
                raise ValueError("escalate_labels belongs to label jobs")
            unknown = [x for x in self.escalate_labels if x not in (self.output.labels or [])]
            if unknown:
                raise ValueError(f"escalate_labels {unknown} are not among the job's labels")
        if self.escalate_to is not None and self.escalate_to == self.model:
            raise ValueError(f"escalate_to names the job's own model ({self.model})")
        return self

    @field_validator("prompt")
    @classmethod
    def _template_parses(cls, prompt: str) -> str:
        try:
            PromptTemplate(prompt)
        except TemplateError as error:
            raise ValueError(str(error)) from None
        return prompt

    def resolved(self, base: Path) -> JobDefinition:
        """The definition with `schema_file` read (relative to `base`), self-contained."""
        file = self.output.schema_file
        if file is None:
            return self
        path = base / file
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except OSError as error:
            raise JobFileError(f"{path}: cannot read the schema file: {error.strerror}") from None
        except ValueError as error:
            raise JobFileError(f"{path}: not a JSON schema file: {error}") from None
        try:
            output = OutputDefinition(kind="json", schema=schema)
        except ValueError as error:
            raise JobFileError(f"{path}: {error}") from None
        return self.model_copy(update={"output": output})

    def with_options(
        self,
        labels: Sequence[str] | None = None,
        instructions: str = "",
        effort: Effort | None = None,
        escalate_to: str | None = None,
        escalate_labels: Sequence[str] | None = None,
    ) -> JobDefinition:
        """The definition with what command-line options change: a label set (label jobs),
        further instructions (after the job's own), an effort, an escalation."""
        update: dict[str, Any] = {}
        if escalate_to is not None:
            update["escalate_to"] = escalate_to
        if escalate_labels is not None:
            update["escalate_labels"] = list(escalate_labels)
        if labels is not None and self.output.kind == "label":
            kept = {k: v for k, v in self.output.definitions.items() if k in labels}
            update["output"] = OutputDefinition(kind="label", labels=list(labels),
                                                definitions=kept)  # fmt: skip
        if instructions:
            update["instructions"] = "\n\n".join(filter(None, [self.instructions, instructions]))
        if effort is not None:
            update["effort"] = effort
        if not update:
            return self
        updated = self.model_copy(update=update)
        # Checked again: an option may not fit the job (escalate_labels of a text job).
        return updated._escalation_fits()

    def digest(self) -> str:
        """A hash of everything that shapes the question and its answer (not the name, the
        model or the id column: those are part of the key, or of the input, on their own).
        A cascade is a question of its own: its escalation is in the hash, and a job without
        one hashes as it did before escalation existed."""
        shaped = self.model_dump(
            mode="json", by_alias=True,
            exclude={"name", "model", "id_column", "escalate_to", "escalate_labels"},
        )  # fmt: skip
        if self.escalate_to is not None:
            shaped["escalation"] = [self.escalate_to, sorted(self.escalate_labels)]
        canonical = json.dumps([REQUEST_FORMAT, shaped], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def load_job_file(path: str | Path) -> JobDefinition:
    """A job file, validated, with its schema file read; JobFileError naming file and key."""
    file = Path(path)
    return read_toml(file, JobDefinition, "job file", JobFileError).resolved(file.parent)


def builtin_job(name: str) -> JobDefinition:
    """One of the job files shipped in the package (`aibatch jobs` lists them)."""
    if name not in BUILT_IN_JOBS:
        raise BadInput(f"--job must be one of {', '.join(BUILT_IN_JOBS)}, not {name!r}")
    source = resources.files("aibatch.builtin_jobs") / f"{name}.toml"
    with resources.as_file(source) as file:
        return load_job_file(file)


def read_instructions(path: str | None) -> str:
    """A team's own instructions (house style, examples), added to every request's cached
    system prompt; ValueError naming the file if it cannot be used.

    The API caches a prompt prefix only from the model's minimum (512 to 4,096 tokens); the
    built-in instructions are far shorter, so caching pays once a team's own make the
    shared part long enough."""
    if path is None:
        return ""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise BadInput(f"{path}: cannot read the instructions file: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise BadInput(f"{path}: the instructions file is not UTF-8 text ({error})") from None
    if not text:
        raise BadInput(f"{path}: the instructions file is empty")
    if len(text) > MAX_INSTRUCTIONS_CHARS:
        raise BadInput(f"{path}: instructions longer than {MAX_INSTRUCTIONS_CHARS} characters")
    return text


@dataclass(frozen=True)
class JobSpec:
    """A job asked of one model: the request for each row, and how to read the answer."""

    definition: JobDefinition
    model: str
    rules: ModelRules
    # The stronger model's spec that re-asks what this one could not answer well (None: no
    # cascade; an escalation never escalates further).
    escalation: JobSpec | None = None

    @classmethod
    def of(
        cls, definition: JobDefinition, model: str | None = None, models: ModelBook | None = None
    ) -> JobSpec:
        book = models or ModelBook.load()
        name = model or definition.model or book.default_model(definition.output.kind)
        escalation = None
        if definition.escalate_to is not None:
            if definition.escalate_to == name:
                raise ValueError(f"escalate_to names the model the job runs on ({name})")
            escalation = cls(definition, definition.escalate_to,
                             book.rules_for(definition.escalate_to))  # fmt: skip
        return cls(definition, name, book.rules_for(name), escalation)

    def escalates(self, result: str) -> bool:
        """Whether a stored answer is one the cascade re-asks (a catch-all label)."""
        return self.escalation is not None and result in self.definition.escalate_labels

    @classmethod
    def build(
        cls,
        job: str,
        model: str | None,
        labels: Sequence[str] | None,
        instructions: str = "",
        *,
        models: ModelBook | None = None,
        effort: Effort | None = None,
    ) -> JobSpec:
        """A built-in job with what command-line options change."""
        chosen = None if labels is None else [x.strip() for x in labels if x.strip()]
        if chosen is not None:
            chosen = list(dict.fromkeys(chosen))
            if len({label.casefold() for label in chosen}) < 2:
                raise BadInput("classification needs at least two distinct labels")
        definition = builtin_job(job).with_options(chosen, instructions, effort)
        return cls.of(definition, model, models)

    @property
    def job(self) -> str:
        return self.definition.name

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.definition.output.labels or ())

    @cached_property
    def template(self) -> PromptTemplate:
        return PromptTemplate(self.definition.prompt)

    @cached_property
    def output(self) -> OutputKind:
        out = self.definition.output
        room = self.definition.max_tokens or ANSWER_TOKENS[out.kind]
        if out.kind == "label":
            return LabelOutput(self.labels, answer_tokens=room)
        if out.kind == "json":
            assert out.json_schema is not None  # resolved when the job file was read
            return JsonOutput(out.json_schema, answer_tokens=room)
        return TextOutput(answer_tokens=room)

    @cached_property
    def prompt_version(self) -> str:
        """The resume key's question part: the job's name and its definition's hash."""
        return f"{self.job}-{self.definition.digest()}"

    def render(self, row: Mapping[str, Any]) -> str:
        """The user message for one row (its values framed as data)."""
        return self.template.render(row)

    @property
    def structured(self) -> bool:
        """Whether the answer is asked for with native structured outputs."""
        return self.output.schema() is not None and self.rules.structured_outputs

    # -- how this model is asked ---------------------------------------------------------

    @property
    def effort(self) -> Effort | None:
        """The `output_config.effort` sent, or None where the model takes none."""
        return self.rules.effort_for(self.definition.effort or DEFAULT_EFFORT)

    @property
    def thinking(self) -> dict[str, str] | None:
        """The `thinking` sent: thinking turned off where the model allows it at this
        effort; nothing where it is off by default or cannot be turned off."""
        rules = self.rules
        off, ceiling = rules.thinking_off, rules.thinking_off_max_effort
        if rules.thinking_default == "off" or off is None or ceiling is None:
            return None
        effort = self.effort or rules.default_effort or "high"
        if EFFORTS.index(effort) > EFFORTS.index(ceiling):
            return None
        return {"type": off}

    @property
    def thinks(self) -> bool:
        """Whether answers come after thinking (it is on and was not turned off)."""
        return self.rules.thinking_default == "adaptive" and self.thinking is None

    @property
    def thinking_room(self) -> int:
        if not self.thinks:
            return 0
        return THINKING_ROOM[self.effort or self.rules.default_effort or "high"]

    def max_tokens(self, grown: int = 0) -> int:
        """`max_tokens` for a first attempt (`grown` 0), or after `grown` cut-short answers:
        room for the answer and for thinking, times TRUNCATION_GROWTH each time."""
        planned = self.output.answer_tokens + self.thinking_room
        return min(self.rules.max_output_tokens, planned * int(TRUNCATION_GROWTH**grown))

    @cached_property
    def system_text(self) -> str:
        definition = self.definition
        text = definition.system.strip() + "\n" + FRAMING
        if definition.output.kind == "label":
            meaning = definition.output.definitions
            text += "\nLabels:\n" + "\n".join(
                f"- {label}: {meaning[label]}" if label in meaning else f"- {label}"
                for label in self.labels
            )
        if not self.structured and (contract := self.output.prompt_contract()):
            text += "\n" + contract  # no structured outputs on this model: say it in words
        if definition.instructions:
            text += "\n\nFurther instructions:\n" + definition.instructions
        return text

    def system_blocks(self, cache_ttl: CacheTtl = "5m") -> list[dict[str, Any]]:
        """The shared instructions, marked cacheable: every request repeats them. Batch
        mode keeps them an hour: "batches can take longer than 5 minutes to process"
        (https://platform.claude.com/docs/en/build-with-claude/batch-processing)."""
        control: dict[str, str] = {"type": "ephemeral"}
        if cache_ttl == "1h":
            control["ttl"] = "1h"
        return [{"type": "text", "text": self.system_text, "cache_control": control}]

    def request(self, prompt: str, grown: int = 0, cache_ttl: CacheTtl = "5m") -> dict[str, Any]:
        """The Messages API parameters for one row's prompt (`render`); never sampling
        parameters or an assistant prefill: the 5.5 models refuse both."""
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens(grown),
            "system": self.system_blocks(cache_ttl),
            "messages": [{"role": "user", "content": prompt}],
        }
        if (thinking := self.thinking) is not None:
            params["thinking"] = thinking
        output_config: dict[str, Any] = {}
        if (effort := self.effort) is not None:
            output_config["effort"] = effort
        if self.structured:
            output_config["format"] = {"type": "json_schema", "schema": self.output.schema()}
        if output_config:
            params["output_config"] = output_config
        return params

    def parse(self, message: Any, max_tokens: int | None = None) -> str:
        """The value to store from a Message, or InvalidModelOutput (Truncated, Refused)."""
        return self.output.parse(read_answer(message, max_tokens))
