"""A hypothesis state machine over the engine (no Prefect): process, crash anywhere in a
commit or before it, resume, retry the failures; after every step the output is whole.

The invariants are the crash loop's: every file readable, no id twice, ids only from the
input, nothing once published ever gone, and what a crashed run journaled is published by
the next one. CI runs a few dozen sequences; `--long` runs hundreds.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path

import pyarrow.dataset as ds
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from aibatch.output import crashpoints
from aibatch.output.journal import journal_segments, read_segment
from aibatch.testing.in_process import InProcessSimulator
from tests.conftest import sim_config
from tests.engine.test_processor import Harness
from tests.helpers import job_dataset, record_figures

pytestmark = pytest.mark.reliability

TICKETS = {f"T{i}": f"Ticket {i}: the export fails with error {i}. Fix it." for i in range(30)}
TICKETS |= {f"LONG-{i}": "The export fails. " * 300 for i in range(3)}  # 400 until fixed
IDS = sorted(TICKETS)
batches = st.lists(st.sampled_from(IDS), min_size=1, max_size=12, unique=True)
FIGURES = {"sequences": 0, "steps": 0, "crashes": 0, "resumes": 0}


def ids_in(dataset_dir: Path, *columns: str) -> list[tuple[str, ...]]:
    if not any(dataset_dir.rglob("*.parquet")):
        return []
    table = ds.dataset(dataset_dir, partitioning="hive").to_table(columns=list(columns))
    return list(zip(*(table[c].to_pylist() for c in columns), strict=True))


class CrashResume(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="aibatch-states-"))
        self.server = InProcessSimulator(sim_config(p500=0.1, context_window=1_000))
        self.harness: Harness | None = None
        self.published: set[str] = set()  # ids seen in results: they must stay there
        self.journaled_before_crash: set[str] = set()  # ok ids a crashed run left journaled
        FIGURES["sequences"] += 1

    # -- helpers ------------------------------------------------------------------------

    def open_harness(self) -> Harness:
        if self.harness is None:
            self.harness = Harness(self.server, self.root / "out")
            self.harness.committer.fold_in()  # as the flow does when it starts
            FIGURES["resumes"] += 1
        return self.harness

    def die(self) -> None:
        """The process is gone: its lock and files are released, nothing else happens."""
        assert self.harness is not None
        journal = self.harness.store.journal_dir
        self.harness.close()
        self.harness = None
        self.journaled_before_crash = {
            r["id"] for p in journal_segments(journal) for r in read_segment(p)
            if r["kind"] == "ok"
        }  # fmt: skip
        FIGURES["crashes"] += 1

    def results(self) -> list[str]:
        return [row[0] for row in ids_in(job_dataset(self.root / "out"), "id")]

    # -- rules --------------------------------------------------------------------------

    @rule(batch=batches)
    def process(self, batch: list[str]) -> None:
        self.open_harness().run([(i, TICKETS[i]) for i in batch])
        FIGURES["steps"] += 1

    @rule(
        batch=batches,
        point=st.sampled_from(sorted(crashpoints.COMMIT_POINTS)),
        nth=st.integers(1, 2),
    )
    def crash_inside_a_commit(self, batch: list[str], point: str, nth: int) -> None:
        harness = self.open_harness()
        harness.loop.run_until_complete(
            harness.processor.process_chunk([(i, TICKETS[i]) for i in batch])
        )
        # (the point may not be reached: nothing to publish, or fewer files than nth)
        with crashpoints.armed(point, nth), contextlib.suppress(crashpoints.SimulatedCrash):
            harness.loop.run_until_complete(harness.committer.commit())
        self.die()
        FIGURES["steps"] += 1

    @rule(batch=batches)
    def crash_before_committing(self, batch: list[str]) -> None:
        harness = self.open_harness()
        harness.loop.run_until_complete(
            harness.processor.process_chunk([(i, TICKETS[i]) for i in batch])
        )
        self.die()
        FIGURES["steps"] += 1

    @precondition(lambda self: self.harness is None)
    @rule()
    def resume(self) -> None:
        self.open_harness()
        assert self.journaled_before_crash <= set(self.results()), "a journaled answer lost"
        self.journaled_before_crash = set()
        FIGURES["steps"] += 1

    @rule()
    def fix_and_retry_the_failures(self) -> None:
        """The long tickets fit once the context window is raised; a new run retries them."""
        failed = {row[0] for row in ids_in(job_dataset(self.root / "out", "failures"), "id")}
        if self.harness is not None:
            self.harness.close()  # a new run: the old one's `finished` set is gone
            self.harness = None
        self.server.configure(context_window=200_000)
        self.open_harness().run([(i, TICKETS[i]) for i in sorted(failed)])
        assert failed <= set(self.results())
        FIGURES["steps"] += 1

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def output_is_whole(self) -> None:
        ids = self.results()
        assert len(ids) == len(set(ids)), "an id twice"
        assert set(ids) <= set(TICKETS)
        assert self.published <= set(ids), "a published row disappeared"
        self.published = set(ids)
        failures = ids_in(job_dataset(self.root / "out", "failures"), "id", "run_id")
        assert len(failures) == len(set(failures)), "a run's failure recorded twice"
        assert {f[0] for f in failures} <= {i for i in TICKETS if i.startswith("LONG-")}
        for name in ("results", "failures"):
            strays = [p for p in job_dataset(self.root / "out", name).rglob("*")
                      if p.is_file() and p.suffix != ".parquet"]  # fmt: skip
            assert strays == []

    def teardown(self) -> None:
        if self.harness is not None:
            self.harness.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.mark.timeout(3600)
def test_process_crash_resume_retry_keeps_every_invariant(long_variant: bool) -> None:
    run_state_machine_as_test(
        CrashResume,
        settings=settings(
            max_examples=300 if long_variant else 25,
            stateful_step_count=20 if long_variant else 10,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,  # the same sequences every CI run; --long explores further
            derandomize=not long_variant,
        ),
    )
    record_figures("state-machine" + ("-long" if long_variant else ""), dict(FIGURES))
