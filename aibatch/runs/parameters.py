"""The parameters of a batch run: one validated model, shown as a form in the Prefect UI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from aibatch.engine import policy
from aibatch.jobs.models import Effort, ModelBook
from aibatch.jobs.spec import (
    BUILT_IN_JOBS,
    JobDefinition,
    JobSpec,
    builtin_job,
    load_job_file,
    read_instructions,
)
from aibatch.runs import orchestration


class RunParameters(BaseModel):
    """What to process, how, and where the results go."""

    input_path: str = Field(
        default="data/tickets.csv",
        description="Rows: CSV, JSON (array of objects), JSONL or Parquet; a path or "
        "s3://bucket/key.",
    )
    job: str = Field(
        default="summarize",
        description="A built-in job: " + ", ".join(BUILT_IN_JOBS) + " (`aibatch jobs` lists "
        "them); a job file or definition replaces it.",
    )
    job_definition: JobDefinition | None = Field(
        default=None,
        description="Your own job (the fields of a job file; README, 'Your own job').",
    )
    job_file: str | None = Field(
        default=None,
        description="Your own job: a TOML job file (README, 'Your own job'); replaces the "
        "built-in job. A deployment's file is read where its flow runs.",
    )
    labels: list[str] | None = Field(
        default=None,
        description="A label set replacing a label job's own (classify: billing, technical, "
        "feature request, other); on the command line, comma-separated.",
    )
    limit: int | None = Field(
        default=None, ge=1, description="Trial run: only the first N rows still pending."
    )
    sample: int | None = Field(
        default=None, ge=1, description="Trial run: a seeded random N of the rows pending."
    )
    model: str | None = Field(
        default=None,
        description="Model; default: the capability table's default for the job's kind of "
        "answer (README, 'Models').",
    )
    escalate_to: str | None = Field(
        default=None,
        description="A stronger model that re-asks rows the first could not answer well "
        "(refused, invalid, cut short, or an --escalate-labels answer); replaces the job's.",
    )
    escalate_labels: list[str] | None = Field(
        default=None,
        description="Label jobs: answers re-asked of --escalate-to (e.g. other); replaces "
        "the job's.",
    )
    effort: Effort | None = Field(
        default=None,
        description="Effort of text jobs (low, medium, high, xhigh, max); default low. "
        "Labels always use the lowest effort the model takes.",
    )
    models_path: str | None = Field(
        default=None,
        description="TOML file of model capabilities laid over the built-in table (README, "
        "'Models'); default $AIBATCH_MODELS, if set.",
    )
    output_dir: str = Field(
        default="data/output",
        description="Output directory (results/, failures/), or s3://bucket/prefix.",
    )
    id_column: str | None = Field(
        default=None,
        min_length=1,
        description="Column holding the row id; default: the job file's, else id.",
    )
    text_column: str = Field(
        default="text", min_length=1, description="Column the built-in jobs read as the row text."
    )
    chunk_size: int | None = Field(
        default=None,
        ge=orchestration.MIN_CHUNK_SIZE,
        le=orchestration.MAX_CHUNK_SIZE,
        description="Rows per Prefect task run; default: the pending rows spread over the "
        "chunk slots (50-500).",
    )
    max_concurrency: int | Literal["auto"] = Field(
        default="auto",
        description="Requests in flight at once across all chunks: a number, or auto (start "
        "low, grow while answers are fast and clean, back off on 529s).",
    )
    rpm: int | None = Field(
        default=None, ge=1, description="Requests per minute; default: learned from the API."
    )
    itpm: int | None = Field(
        default=None, ge=1, description="Input tokens per minute; default: learned."
    )
    otpm: int | None = Field(
        default=None, ge=1, description="Output tokens per minute; default: learned."
    )
    chunk_slots: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Set the chunks running at once across every run on the Prefect server "
        f"(the concurrency limit {orchestration.CHUNK_LIMIT_NAME!r}); default: as it is, or "
        f"{orchestration.DEFAULT_CHUNK_SLOTS} if unset.",
    )
    shared_rpm: int | None = Field(
        default=None,
        ge=1,
        description="Set the Prefect rate limit shared by every run and worker on this server "
        f"({orchestration.SHARED_RATE_LIMIT_NAME!r}) to this many requests/min before running; "
        "default: use that limit as it is, if it exists.",
    )
    shared_itpm: int | None = Field(
        default=None,
        ge=1,
        description="Set the Prefect rate limit of input tokens shared by every run and worker "
        f"on this server ({orchestration.SHARED_INPUT_TOKENS_LIMIT_NAME!r}) to this many "
        "tokens/min before running; default: use that limit as it is, if it exists.",
    )
    shared_otpm: int | None = Field(
        default=None,
        ge=1,
        description="Set the Prefect rate limit of output tokens shared by every run and worker "
        f"on this server ({orchestration.SHARED_OUTPUT_TOKENS_LIMIT_NAME!r}) to this many "
        "tokens/min before running; default: use that limit as it is, if it exists.",
    )
    shards: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Fan out as this many runs of the shard deployment that the server's "
        "workers pick up (needs PREFECT_API_URL, the deployment, and an output directory "
        "every worker can reach; README, 'Scale out').",
    )
    shard_deployment: str = Field(
        default="aibatch-rows/shard",
        description="The deployment that runs one shard (flow name/deployment name).",
    )
    shard: str | None = Field(
        default=None,
        description="Set by a fanned-out run on each of its parts: this run is that shard.",
    )
    max_attempts: int = Field(
        default=policy.MAX_ATTEMPTS,
        ge=1,
        le=50,
        description="Requests at most for one row, across every retry (the engine's and "
        "the chunk's Prefect retries share them).",
    )
    outage_deadline_s: float = Field(
        default=policy.OUTAGE_DEADLINE_S,
        gt=0,
        description="Seconds the API may answer nothing but overload, server or connection "
        "errors (one probe at a time meanwhile) before the run stops (exit 3).",
    )
    request_timeout_s: float = Field(
        default=policy.REQUEST_TIMEOUT_S,
        gt=0,
        le=600,
        description="Seconds to wait for one answer before retrying it.",
    )
    mode: Literal["realtime", "batch"] = Field(
        default="realtime",
        description="realtime (one call per row at the rate limit) or batch (Message "
        "Batches: half price, answered within 24 h, usually much sooner).",
    )
    budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="Hard cap in US dollars on what this job's results in the output "
        "directory cost (earlier runs count): no request is sent that could pass it; raise "
        "it to continue.",
    )
    instructions_path: str | None = Field(
        default=None,
        description="Text file of your team's own instructions (house style, examples), "
        "added to the cached system prompt of every request.",
    )
    prices_path: str | None = Field(
        default=None,
        description="TOML file of per-model prices laid over the built-in table; default "
        "$AIBATCH_PRICES, if set.",
    )
    batch_max_requests: int = Field(
        default=policy.BATCH_MAX_REQUESTS,
        ge=1,
        le=policy.BATCH_MAX_REQUESTS,
        description="Requests per Message Batch (batch mode; the API allows 100,000 and 256 MB).",
    )
    batch_poll_max_s: float = Field(
        default=policy.BATCH_POLL_MAX_S,
        gt=0,
        le=3600,
        description="Longest wait in seconds between two polls of a batch (the first come sooner).",
    )
    batch_resubmits: int = Field(
        default=policy.BATCH_RESUBMITS,
        ge=0,
        le=20,
        description="Times an errored or expired batch request is submitted again.",
    )
    show_progress: bool = Field(default=False, description="Show a progress bar.")
    verbose: bool = Field(
        default=False, description="In a terminal, also show each chunk as it finishes."
    )
    ask_once: bool = Field(
        default=True,
        description="Rows whose request is identical (the same prompt for the same job and "
        "model) are asked once, the answer stored for each id (its cost on one of them); "
        "--no-ask-once asks every row.",
    )
    # The job definition as read, with the fields it was read from (see `definition`).
    _definition: tuple[tuple[object, ...], JobDefinition] | None = PrivateAttr(default=None)

    @field_validator("job")
    @classmethod
    def _built_in(cls, job: str) -> str:
        if job not in BUILT_IN_JOBS:
            raise ValueError(f"must be one of {', '.join(BUILT_IN_JOBS)}, not {job!r}")
        return job

    @field_validator("labels")
    @classmethod
    def _labels_distinct(cls, labels: list[str] | None) -> list[str] | None:
        if labels is None:
            return None
        cleaned = list(dict.fromkeys(label.strip() for label in labels if label.strip()))
        if len(cleaned) < 2:
            raise ValueError("give at least two distinct labels")
        return cleaned

    @field_validator("max_concurrency")
    @classmethod
    def _concurrency_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 1024:
            raise ValueError("must be auto or a number from 1 to 1024")
        return value

    @model_validator(mode="after")
    def _batch_mode_unsharded(self) -> RunParameters:
        if self.mode == "batch" and self.shards > 1:
            raise ValueError("mode batch sends one set of batches: it takes no shards")
        return self

    @model_validator(mode="after")
    def _one_job(self) -> RunParameters:
        if self.job_definition is not None and self.job_file is not None:
            raise ValueError("job_definition and job_file are two ways of giving a job: give one")
        return self

    @model_validator(mode="after")
    def _one_trial(self) -> RunParameters:
        if self.limit is not None and self.sample is not None:
            raise ValueError("limit and sample are two ways of choosing rows: give one")
        return self

    @property
    def definition(self) -> JobDefinition:
        """The job: the one given, else the built-in one named by `job`. A definition
        written inline (prefect.yaml, the UI's form) reads its `schema_file` relative to the
        directory the flow runs in, as the input and output paths are. Read once: kept with
        the fields it was read from, and read again only if one of them changed."""
        source = (self.job, self.job_file, self.job_definition, str(Path.cwd()))
        if self._definition is None or self._definition[0] != source:
            if self.job_file is not None:
                definition = load_job_file(self.job_file)
            elif self.job_definition is None:
                definition = builtin_job(self.job)
            else:
                definition = self.job_definition.resolved(Path.cwd())
            self._definition = (source, definition)
        return self._definition[1]

    @property
    def job_name(self) -> str:
        return self.definition.name

    def job_spec(self, models: ModelBook | None = None) -> JobSpec:
        """The job as asked of its model (ValueError naming the file or option at fault)."""
        definition = self.definition.with_options(
            self.labels, read_instructions(self.instructions_path), self.effort,
            self.escalate_to, self.escalate_labels,
        )  # fmt: skip
        return JobSpec.of(definition, self.model, models or ModelBook.load(self.models_path))

    @property
    def id_column_used(self) -> str:
        """The id column: the option if given, else the job's, else `id`."""
        return self.id_column or self.definition.id_column or "id"

    @property
    def fixed_concurrency(self) -> int | None:
        return None if self.max_concurrency == "auto" else int(self.max_concurrency)

    @property
    def input_name(self) -> str:
        return Path(self.input_path).name
