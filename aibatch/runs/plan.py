"""The run plan: everything a run is decided from, worked out once per process.

The job spec, the prices, the rows read and validated (with each row's prompt), the output
store and what is still pending there. Every entry reads it: `aibatch run` (its checks
before Prefect starts, the dry run, "nothing to do"), `aibatch estimate`, the flow and its
shards. `aibatch run` builds it for its checks and hands it on (`hand_on`); the flow it
then starts in the same process takes that plan (`RunPlan.of`) instead of reading the
input again, and a flow run with none handed on (a deployment, a test) builds its own.
Any problem with what the user gave is a `BadInput` (exit 2), found here before any API
call.

What only the lock may decide (folding in a crashed run's journal, then what is pending
after it) is `pending_after`, called by `open_run` once it holds the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import cached_property

import pandas as pd

from aibatch.cost.budget import WorstCase
from aibatch.cost.pricing import PriceBook
from aibatch.engine.backend import ApiTarget
from aibatch.engine.batches import BatchLedger
from aibatch.errors import BadInput
from aibatch.jobs.models import ModelBook
from aibatch.jobs.prompts import load_job_rows
from aibatch.jobs.spec import JobSpec
from aibatch.output.journal import journal_segments
from aibatch.output.store import ResultStore
from aibatch.runs.parameters import RunParameters
from aibatch.sources.loader import Rows, trial_rows


@dataclass(eq=False)  # one per run: compared by identity
class RunPlan:
    params: RunParameters
    spec: JobSpec
    prices: PriceBook
    rows: Rows
    prompts: list[str]  # each row's prompt, in the rows' order
    store: ResultStore
    models: ModelBook
    # Where requests go, when the app decided it (the simulator, a key it holds); a flow run
    # with none resolves its own (the worker's environment, a Secret block).
    api: ApiTarget | None = field(default=None, repr=False)

    @classmethod
    def of(cls, params: RunParameters) -> RunPlan:
        """The plan handed on for `params` in this process (taken: a later run of the same
        parameters plans afresh), else a new one."""
        plan = take_handed_on(params.model_dump_json())
        return plan if isinstance(plan, RunPlan) else cls.build(params)

    def hand_on(self) -> None:
        """Keep this plan for the flow run this process starts next with its parameters."""
        hand_on(self.params.model_dump_json(), self)

    @classmethod
    def build(cls, params: RunParameters) -> RunPlan:
        """Read and check everything the run needs; BadInput naming what is at fault."""
        try:
            models = ModelBook.load(params.models_path)
            spec = params.job_spec(models)
            prices = PriceBook.load(params.prices_path)
            if params.budget_usd is not None:
                WorstCase(prices, spec.model).check_price()
                if spec.escalation is not None:
                    WorstCase(prices, spec.escalation.model).check_price()
            rows, prompts = load_job_rows(
                params.input_path, spec.template, params.id_column_used, params.text_column
            )
            store = ResultStore(params.output_dir, spec.job, shard=params.shard)
            store.check_reachable()  # a bucket that cannot be used: said before any call
        except BadInput:
            raise
        except ValueError as error:  # a value the user gave, refused where it was read
            raise BadInput(str(error)) from error
        return cls(params, spec, prices, rows, prompts, store, models)

    @cached_property
    def done(self) -> frozenset[str]:
        """Ids settled in the output when first asked (a flow run asks `pending_after`
        under the lock instead, so only the app's checks and the dry run read this)."""
        return frozenset(self.store.settled_ids(self.spec.model, self.spec.prompt_version))

    @cached_property
    def pending(self) -> Pending:
        return self.pending_after(self.done)

    def pending_after(self, done: AbstractSet[str]) -> Pending:
        """The one place that says what a run sends once `done` is settled: rows not
        settled, then the trial's choice (limit, sample), in input order."""
        frame = self.rows.frame
        is_done = frame["id"].isin(done)
        rows = trial_rows(frame[~is_done], self.params.limit, self.params.sample)
        already_done = int(is_done.sum())
        return Pending(rows, already_done, len(frame) - already_done - len(rows))

    def pairs(self, pending: Pending) -> list[tuple[str, str]]:
        """(id, prompt) of each pending row, in input order (the frame's index is the
        row's position, which is its prompt's)."""
        ids, positions = pending.rows["id"].tolist(), pending.rows.index.tolist()
        return [(i, self.prompts[p]) for i, p in zip(ids, positions, strict=True)]

    def spec_for(self, model: str) -> JobSpec:
        """The same job asked of another model (the estimate compares several)."""
        return JobSpec.of(self.spec.definition, model, self.models)

    def unpublished_journals(self) -> bool:
        """An earlier run journaled answers it did not publish (it crashed): a run folds
        them in, so there is work even when no row is pending."""
        return any(journal_segments(d) for d in self.store.journal_dirs_to_recover())

    def open_batches(self) -> bool:
        """Message Batches an earlier run left open: a batch-mode run collects them."""
        return bool(BatchLedger(self.store.state_dir / "batches").open_for(self.spec))

    @property
    def nothing_to_do(self) -> bool:
        """No row to send, no journal to fold in, no batch to collect: a run would do
        nothing but say so."""
        return (
            self.pending.rows.empty and not self.unpublished_journals() and not self.open_batches()
        )


@dataclass(frozen=True)
class Pending:
    """What a run sends, given the ids already settled."""

    rows: pd.DataFrame  # the input's rows to send, indexed by their position in the input
    already_done: int  # input rows settled already
    held_back: int  # rows not settled that a trial (limit, sample) leaves for later


# Plans made by the app for the flow run it starts next in this process, by parameters:
# the flow takes its plan instead of reading and checking the input again.
_HANDED_ON: dict[str, object] = {}
_PLANS_LOCK = threading.Lock()


def hand_on(key: str, plan: object) -> None:
    with _PLANS_LOCK:
        _HANDED_ON[key] = plan


def take_handed_on(key: str) -> object | None:
    with _PLANS_LOCK:
        return _HANDED_ON.pop(key, None)
