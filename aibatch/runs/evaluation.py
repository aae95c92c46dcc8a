"""Is the cheap model good enough? A job's answers scored against known ones, per candidate.

`aibatch eval` (and the `aibatch-eval` flow) take a seeded sample of the input rows that have a
known answer, run the job on it once per candidate (a model, or a cascade `cheap+strong`)
through the normal run, into the output directory, and score what each stored:

- a label job: accuracy (an unanswered row counts as wrong, and is reported), per-label
  precision and recall, the confusion matrix;
- a json job: per-field accuracy and all-fields accuracy, each value compared after the
  conversion its results column applies (so "12.50" and 12.5 are the same total).

It reports each candidate's cost and cost per correct answer, and recommends the cheapest
that reaches the target. The sample is written once to the output directory, so a re-run
asks nothing that was answered: it only scores again.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aibatch.engine.backend import ApiTarget
from aibatch.errors import BadInput
from aibatch.jobs.models import ModelBook
from aibatch.jobs.spec import JobSpec
from aibatch.output.store import ResultStore
from aibatch.runs.parameters import RunParameters
from aibatch.runs.plan import RunPlan, hand_on, take_handed_on
from aibatch.sources.loader import as_ids, load_rows, read_file
from aibatch.storage.location import Location

EVAL_SEED = 0
DEFAULT_EVAL_SAMPLE = 200
DEFAULT_TARGET = 0.95
UNANSWERED = "(unanswered)"  # the confusion matrix's column for rows with no answer


@dataclass(frozen=True)
class Candidate:
    """A model to score, alone or as a cascade (`first+then`: `then` re-asks the rows the
    first could not answer well)."""

    model: str
    escalate_to: str | None = None

    @classmethod
    def parse(cls, text: str) -> Candidate:
        first, _, then = text.strip().partition("+")
        if not first.strip() or (_ and not then.strip()) or "+" in then:
            raise ValueError(f"model {text!r} is not MODEL or MODEL+STRONGER_MODEL")
        return cls(first.strip(), then.strip() or None)

    @property
    def name(self) -> str:
        return self.model if self.escalate_to is None else f"{self.model}+{self.escalate_to}"


class EvalParameters(BaseModel):
    """What `aibatch eval` is given (the `aibatch-eval` flow's one parameter)."""

    model_config = ConfigDict(extra="forbid")

    input_path: str = Field(description="Rows: CSV, JSON, JSONL or Parquet.")
    truth_path: str = Field(
        description="Known answers: the id column and `expected` (label jobs), or a column "
        "per top-level property to check (json jobs)."
    )
    models: list[str] = Field(
        min_length=1, description="Candidates: models, or cascades as MODEL+STRONGER_MODEL."
    )
    job: str = Field(default="classify", description="A built-in job (classify).")
    job_file: str | None = Field(default=None, description="Your own job: a TOML job file.")
    sample: int = Field(
        default=DEFAULT_EVAL_SAMPLE, ge=1, description="Rows scored: a seeded random N."
    )
    target: float = Field(
        default=DEFAULT_TARGET, gt=0, le=1, description="Accuracy the recommendation must reach."
    )
    output_dir: str = Field(default="output", description="Where answers are stored.")
    id_column: str | None = Field(default=None, description="Column holding the row id.")
    models_path: str | None = Field(default=None, description="Your own capability table.")
    prices_path: str | None = Field(default=None, description="Your own price table.")

    @field_validator("models")
    @classmethod
    def _candidates_parse(cls, models: list[str]) -> list[str]:
        names = [Candidate.parse(m).name for m in models]
        if len(set(names)) != len(names):
            raise ValueError("each model or cascade is named once")
        return names

    @property
    def candidates(self) -> list[Candidate]:
        return [Candidate.parse(m) for m in self.models]

    def run_parameters(
        self, candidate: Candidate | None = None, input_path: str = ""
    ) -> RunParameters:
        """The run of one candidate on the sample (or, with none, of the job as it is)."""
        return RunParameters(
            input_path=input_path or self.input_path, job=self.job, job_file=self.job_file,
            model=candidate.model if candidate else None,
            escalate_to=candidate.escalate_to if candidate else None,
            output_dir=self.output_dir, id_column=self.id_column,
            models_path=self.models_path, prices_path=self.prices_path,
        )  # fmt: skip


@dataclass
class Truth:
    """The known answers of the sampled rows, by id; `fields` are the columns compared."""

    frame: pd.DataFrame  # indexed by id
    fields: list[str]


@dataclass
class Score:
    """One candidate's answers on the sample, against the known ones."""

    candidate: str
    n: int
    answered: int
    correct: int
    cost_usd: float | None
    escalated: int = 0
    labels: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    fields: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def cost_per_correct_usd(self) -> float | None:
        if self.cost_usd is None or not self.correct:
            return None
        return self.cost_usd / self.correct

    def as_dict(self, target: float) -> dict[str, Any]:
        return {
            "model": self.candidate, "n": self.n, "answered": self.answered,
            "unanswered": self.n - self.answered, "correct": self.correct,
            "accuracy": round(self.accuracy, 4), "cost_usd": _round(self.cost_usd),
            "cost_per_correct_usd": _round(self.cost_per_correct_usd),
            "meets_target": self.accuracy >= target, "escalated": self.escalated,
            "failures": self.failures, "labels": self.labels, "confusion": self.confusion,
            "fields": self.fields,
        }  # fmt: skip


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 8)


@dataclass
class EvalReport:
    job: str
    kind: str
    target: float
    sample_path: str
    scores: list[Score]

    @property
    def recommended(self) -> str | None:
        """The cheapest candidate that reaches the target (none if none does, or if no
        cost of those that do is known)."""
        good = [s for s in self.scores if s.accuracy >= self.target and s.cost_usd is not None]
        return min(good, key=lambda s: (s.cost_usd, -s.accuracy)).candidate if good else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job, "kind": self.kind, "target": self.target,
            "sample": self.sample_path,
            "models": [s.as_dict(self.target) for s in self.scores],
            "recommended": self.recommended,
        }  # fmt: skip


@dataclass
class EvalPlan:
    """An evaluation planned once: the job, the known answers, the sample written to the
    output directory, and one run's parameters per candidate."""

    params: EvalParameters
    spec: JobSpec
    truth: Truth
    sample_path: Location
    sample_ids: list[str]
    store: ResultStore
    models: ModelBook
    api: ApiTarget | None = field(default=None, repr=False)  # as RunPlan's

    @classmethod
    def of(cls, params: EvalParameters) -> EvalPlan:
        """The plan `aibatch eval` handed on for `params` in this process, else a new one."""
        plan = take_handed_on("eval:" + params.model_dump_json())
        return plan if isinstance(plan, EvalPlan) else cls.build(params)

    def hand_on(self) -> None:
        hand_on("eval:" + self.params.model_dump_json(), self)

    @classmethod
    def build(cls, params: EvalParameters) -> EvalPlan:
        """Read and check the job, the input and the known answers, and write the sample;
        BadInput naming what is at fault."""
        plan = RunPlan.build(params.run_parameters())
        spec = plan.spec
        kind = spec.definition.output.kind
        if kind == "text":
            raise BadInput(
                f"aibatch eval scores label and json jobs against known answers; {spec.job} is "
                "a text job, whose answers cannot be compared exactly. Give a label or json job"
            )
        try:
            for candidate in params.candidates:  # every model named is known, before any call
                for model in filter(None, (candidate.model, candidate.escalate_to)):
                    plan.spec_for(model)
        except ValueError as error:
            raise BadInput(str(error)) from error
        truth = load_truth(params.truth_path, spec, plan.params.id_column_used)
        input_ids = plan.rows.frame["id"]
        known = input_ids[input_ids.isin(truth.frame.index)]
        if known.empty:
            raise BadInput(
                f"{params.truth_path}: none of its ids is in {params.input_path} (column "
                f"{plan.params.id_column_used}); the known answers must be for these rows"
            )
        chosen = known.sample(n=min(params.sample, len(known)), random_state=EVAL_SEED)
        sample_ids = known[known.isin(set(chosen))].tolist()  # in input order
        sample_path = write_sample(plan, sample_ids, params.sample)
        truth.frame = truth.frame.loc[sample_ids]
        return cls(params, spec, truth, sample_path, sample_ids, plan.store, plan.models)

    def run_parameters(self, candidate: Candidate) -> RunParameters:
        return self.params.run_parameters(candidate, str(self.sample_path))

    def score(self) -> EvalReport:
        scores = [self._score(c) for c in self.params.candidates]
        kind = self.spec.definition.output.kind
        return EvalReport(self.spec.job, kind, self.params.target, str(self.sample_path), scores)

    def _score(self, candidate: Candidate) -> Score:
        spec = self.run_parameters(candidate).job_spec(self.models)
        wanted = ds.field("id").isin(self.sample_ids)
        answers = self.store.key_table(
            ["id", "result", "cost_usd", "escalated_from"], spec.model, spec.prompt_version,
            where=wanted,
        )  # fmt: skip
        failed = self.store.key_table(
            ["id", "error_type", "cost_usd"], spec.model, spec.prompt_version, failures=True,
            where=wanted,
        )  # fmt: skip
        frame = _frame(answers, ["id", "result", "cost_usd", "escalated_from"])
        frame = frame.drop_duplicates("id").set_index("id")
        failures = _frame(failed, ["id", "error_type", "cost_usd"])
        unanswered = failures[~failures["id"].isin(frame.index)].drop_duplicates("id")
        costs = [*frame["cost_usd"].tolist(), *failures["cost_usd"].tolist()]
        cost = None if any(pd.isna(c) for c in costs) else float(sum(costs))
        score = Score(
            candidate.name, len(self.sample_ids), len(frame), 0, cost,
            escalated=int(frame["escalated_from"].notna().sum()),
            failures={str(k): int(v) for k, v in unanswered["error_type"].value_counts().items()},
        )  # fmt: skip
        if self.spec.definition.output.kind == "label":
            _score_labels(score, frame["result"], self.truth.frame["expected"], self.spec.labels)
        else:
            _score_fields(score, frame["result"], self.truth, self.spec)
        return score


def _frame(table: pa.Table | None, columns: list[str]) -> pd.DataFrame:
    """A dataset's rows as a frame; an empty one with `columns` when there is no file yet."""
    return table.to_pandas() if table is not None else pd.DataFrame(columns=columns)


def load_truth(path: str, spec: JobSpec, id_column: str) -> Truth:
    """The known answers: `expected` per id for a label job (each one of its labels), the
    columns named like top-level properties of the schema for a json job."""
    kind = spec.definition.output.kind
    if kind == "label":
        rows = load_rows(path, id_column, {"expected"})
        frame = rows.frame.set_index("id")
        labels = set(spec.labels)
        for row, value in enumerate(frame["expected"].tolist(), start=1):
            if value not in labels:
                raise BadInput(
                    f"{path}, row {row}, column expected: {value!r} is not one of the job's "
                    f"labels ({', '.join(spec.labels)})"
                )
        return Truth(frame[["expected"]], ["expected"])
    rows = load_rows(path, id_column, ())
    properties = spec.output.columns.schema.names
    fields = [p for p in properties if p in rows.frame.columns]
    if not fields:
        raise BadInput(
            f"{path}: no column to compare: name columns after the schema's top-level "
            f"properties ({', '.join(properties)})"
        )
    return Truth(rows.frame.set_index("id")[fields], fields)


def write_sample(plan: RunPlan, sample_ids: Sequence[str], size: int) -> Location:
    """The sampled rows, exactly as the input has them, in the output directory: written
    once (atomically), so every candidate and every re-run asks the same rows."""
    source = plan.params.input_path
    path = plan.store.eval_dir / f"{PurePosixPath(source).stem}-sample-{size}.parquet"
    raw = read_file(source)
    keep = pd.Series(as_ids(raw[plan.rows.id_column].tolist())).isin(set(sample_ids)).to_numpy()
    table = pa.Table.from_pandas(raw[keep].reset_index(drop=True), preserve_index=False)
    if path.is_file():
        with path.open_input() as handle:
            if pq.read_table(handle).equals(table):
                return path  # written by an earlier evaluation: the same rows
    path.write_parquet(table)
    return path


def _score_labels(
    score: Score, answers: pd.Series, expected: pd.Series, labels: Sequence[str]
) -> None:
    got = answers.reindex(expected.index)
    score.correct = int((got == expected).sum())
    confusion = pd.crosstab(expected, got.fillna(UNANSWERED))
    score.confusion = {
        str(truth): {str(a): int(n) for a, n in row.items() if n}
        for truth, row in confusion.iterrows()
    }
    for label in labels:
        answered_as = int((got == label).sum())
        support = int((expected == label).sum())
        right = int(((got == label) & (expected == label)).sum())
        score.labels[label] = {
            "precision": round(right / answered_as, 4) if answered_as else None,
            "recall": round(right / support, 4) if support else None,
            "support": support,
        }


def _score_fields(score: Score, answers: pd.Series, truth: Truth, spec: JobSpec) -> None:
    """Each field compared after its column's conversion; a row is correct when every
    compared field is."""
    columns = spec.output.columns
    ids = truth.frame.index.tolist()
    answered = answers.reindex(ids)
    got = columns.arrays([None if pd.isna(a) else str(a) for a in answered.tolist()])
    records = truth.frame.to_dict(orient="records")
    known = columns.arrays([json.dumps(_plain({str(k): v for k, v in r.items()}), default=str)
                            for r in records])  # fmt: skip
    has_answer = pa.array([not pd.isna(a) for a in answered.tolist()])
    all_right = pa.array([True] * len(ids)) if ids else pa.array([], pa.bool_())
    for name in truth.fields:
        same = pc.fill_null(pc.equal(got[name], known[name]), False) if _comparable(
            got[name].type
        ) else pa.array([g == k for g, k in zip(got[name].to_pylist(), known[name].to_pylist(),
                                                strict=True)])  # fmt: skip
        same = pc.and_(same, has_answer)
        score.fields[name] = round(pc.sum(same).as_py() / len(ids), 4) if ids else 0.0
        all_right = pc.and_(all_right, same)
    score.correct = int(pc.sum(all_right).as_py() or 0)


def _comparable(kind: pa.DataType) -> bool:
    return not (pa.types.is_nested(kind) or pa.types.is_dictionary(kind))


def _plain(record: dict[str, Any]) -> dict[str, Any]:
    """A truth row as JSON values: a CSV cell holding JSON (12.5, true, [..]) is that value."""
    plain: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = json.loads(value)
        plain[name] = None if value is pd.NA else value
    return plain


def _usd(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.4f}"


def render(report: EvalReport) -> None:
    """The scores as tables on stdout: one row per candidate, then per label (or field)."""
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, markup=False)
    if not console.is_terminal:  # piped or redirected: wide enough that no name is cut
        console = Console(highlight=False, markup=False, width=max(console.width, 120))
    n = report.scores[0].n if report.scores else 0
    table = Table(title=f"{report.job}: answers of {n:,} rows checked against known ones")
    for name, justify in (
        ("model", "left"), ("answered", "right"), ("accuracy", "right"), ("cost", "right"),
        ("per correct", "right"), ("escalated", "right"), (f"≥ {report.target:.0%}", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for s in report.scores:
        table.add_row(
            s.candidate, f"{s.answered:,}/{s.n:,}", f"{s.accuracy:.1%}", _usd(s.cost_usd),
            _usd(s.cost_per_correct_usd), f"{s.escalated:,}" if s.escalated else "",
            "yes" if s.accuracy >= report.target else "no",
        )  # fmt: skip
    console.print(table)
    detail = Table(title="per label: precision / recall" if report.kind == "label"
                   else "per field: accuracy")  # fmt: skip
    detail.add_column("model", no_wrap=True)
    names = list(report.scores[0].labels or report.scores[0].fields) if report.scores else []
    for name in names:
        detail.add_column(name, justify="right", no_wrap=True)
    for s in report.scores:
        if report.kind == "label":
            cells = [f"{_share(s.labels[x]['precision'])} / {_share(s.labels[x]['recall'])}"
                     for x in names]  # fmt: skip
        else:
            cells = [f"{s.fields[x]:.1%}" for x in names]
        detail.add_row(s.candidate, *cells)
    console.print(detail)
    for s in report.scores:
        if s.failures:
            console.print(f"{s.candidate}: unanswered rows by error: {s.failures}")
    best = report.recommended
    console.print(
        f"Recommended: {best}, the cheapest that reaches {report.target:.0%}." if best else
        f"Recommended: none: no candidate reaches {report.target:.0%} with a known cost."
    )  # fmt: skip
    console.print(f"Rows scored: {report.sample_path} (answers in the output directory).")


def _share(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.0%}"
