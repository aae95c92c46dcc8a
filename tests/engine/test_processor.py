"""The engine on the simulator in process, without Prefect or a server: retries, stops,
journal and commits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd
import pytest

from aibatch.engine.processor import RowProcessor
from aibatch.engine.stats import RunStats
from aibatch.errors import ChunkIncomplete, RunStopped
from aibatch.jobs.spec import JobSpec
from aibatch.output.committer import Committer, new_run_id
from aibatch.output.journal import journal_segments
from aibatch.output.store import ResultStore
from aibatch.testing.in_process import InProcessSimulator
from tests.conftest import Simulate

Store = partial(ResultStore, job="summarize")
SUMMARY = JobSpec.build("summarize", "claude-haiku-4-5", None)


def tickets(n: int, prefix: str = "T") -> list[tuple[str, str]]:
    return [
        (f"{prefix}{i}", f"Ticket {i}: the export fails with error {i}. Please fix export {i}.")
        for i in range(n)
    ]


class Harness:
    """A store, committer and processor over a simulator, as the flow wires them."""

    def __init__(
        self,
        server: InProcessSimulator,
        root: Path,
        spec: JobSpec = SUMMARY,
        **processor_options: object,
    ) -> None:
        # One loop for the harness's life: the SDK's async client is bound to its loop.
        self.loop = asyncio.new_event_loop()
        self.server = server
        self.store = ResultStore(root, spec.job)
        self._lock = self.store.locked()
        self._lock.__enter__()
        self.run_id = new_run_id()  # unique per run, as the flow makes it
        carried = pd.DataFrame(index=pd.Index([], name="id"))
        self.committer = Committer.open(self.store, self.run_id, carried)
        self.backend = server.target().connect()
        self.stats = RunStats()
        self.processor = RowProcessor.with_defaults(
            self.backend, spec, self.committer, self.run_id, stats=self.stats,
            **processor_options,  # type: ignore[arg-type]
        )  # fmt: skip

    def run(
        self, chunk: list[tuple[str, str]], chunk_run: int | None = None, retries: int = 0
    ) -> None:
        async def run() -> None:
            try:
                await self.processor.process_chunk(chunk, None, chunk_run, retries)
            finally:
                await self.committer.commit()

        self.loop.run_until_complete(run())

    def results(self) -> pd.DataFrame:
        return pd.read_parquet(self.store.results_dir)

    def close(self) -> None:
        self.committer.close()
        self.loop.run_until_complete(self.backend.aclose())
        self.loop.close()
        self._lock.__exit__(None, None, None)


def test_each_ticket_gets_its_own_answer_once(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    h = harness(simulate())
    chunk = tickets(60)
    h.run(chunk)
    results = h.results()
    assert sorted(results["id"]) == sorted(i for i, _ in chunk)
    texts = dict(chunk)
    for ticket_id, summary in zip(results["id"], results["result"], strict=True):
        assert summary and all(s.strip(".") in texts[ticket_id] for s in summary.split(". "))
    assert (results["attempts"] == 1).all()
    assert results["completed_at"].dt.tz is not None
    assert h.server.stats()["prompts_paid_repeated"] == 0
    assert all(p.local.stat().st_size == 0 for p in journal_segments(h.store.journal_dir))


def test_permanent_errors_are_recorded_once_and_never_retried(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    h = harness(simulate(context_window=600))
    chunk = [*tickets(5), ("LONG", "word " * 2000)]
    h.run(chunk)
    failures = pd.read_parquet(h.store.failures_dir)
    assert failures["id"].tolist() == ["LONG"]
    assert failures["error_type"].tolist() == ["BadRequestError"]
    assert failures["status_code"].tolist() == [400]
    assert "prompt is too long" in failures["message"].iloc[0]
    assert h.server.stats()["by_status"] == {"200": 5, "400": 1}
    assert "LONG" not in set(h.results()["id"])


def test_transient_errors_are_retried_until_they_pass(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    server = simulate(p529=0.3, p500=0.1, p_drop=0.05, seed=3)
    h = harness(server, max_attempts=30)
    h.processor.sleep = lambda _s: asyncio.sleep(0)  # backoff timing is the policy's test
    h.run(tickets(80))
    assert len(h.results()) == 80
    stats = server.stats()
    assert stats["by_status"]["529"] > 0 and stats["dropped"] > 0
    assert stats["prompts_paid_repeated"] == 0
    assert h.stats.retries == stats["requests_total"] - 80


def test_in_a_429_storm_everyone_waits_out_retry_after_and_one_probe_goes(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    from aibatch.simulator import StormWindow

    server = simulate(storms=[StormWindow(start_s=0, duration_s=3.0)])
    h = harness(server, max_concurrency=4, max_attempts=20)
    h.run(tickets(30))
    results = h.results()
    assert len(results) == 30
    assert h.processor.admission.gate.storms >= 1
    # The storm costs a handful of requests, not one per ticket per second: the first
    # wave, a few paced tries before it is evident, then one probe per retry-after.
    assert server.stats()["by_status"]["429"] <= 15
    assert results["attempts"].max() <= 3  # no ticket tried more than twice in it


def test_limits_learned_from_headers_keep_429s_away(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    server = simulate(rpm=1_200, burst_seconds=1, latency_ms=20)
    h = harness(server, max_concurrency=None)  # auto
    h.run(tickets(120))
    assert len(h.results()) == 120
    assert h.processor.admission.pacer.requests is not None  # learned, never told
    assert server.stats()["by_status"].get("429", 0) <= 2


def test_a_chunk_retry_sends_only_what_is_left_within_each_rows_one_budget(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    """Two attempts per row in all, one of them kept for the chunk's one retry: the first
    run sends each row once, the retry (what Prefect runs) only the unfinished ones."""
    server = simulate(p529=0.5, seed=11)
    h = harness(server, max_attempts=2)
    chunk = tickets(40)
    with pytest.raises(ChunkIncomplete) as caught:
        h.run(chunk, chunk_run=0, retries=1)
    done_first = len(h.results())
    assert 0 < done_first < 40 and caught.value.unfinished == 40 - done_first
    assert caught.value.retryable == caught.value.unfinished
    assert "a retry of the chunk sends" in str(caught.value)
    assert server.stats()["requests_total"] == 40  # one each: the other is the retry's

    server.configure(p529=0.0)
    h.run(chunk, chunk_run=1, retries=1)  # what Prefect does when it retries the chunk task
    assert sorted(h.results()["id"]) == sorted(i for i, _ in chunk)
    assert server.stats()["by_status"]["200"] == 40  # nothing paid twice
    assert server.stats()["requests_total"] == 40 + (40 - done_first)
    assert server.stats()["prompts_paid_repeated"] == 0


def test_a_row_out_of_attempts_is_not_sent_again_by_a_retry_of_its_chunk(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    """The budget is the row's, whatever retries: a chunk run after it is spent sends
    nothing, and the message says a re-run is what sends it again."""
    server = simulate(p529=1.0)
    h = harness(server, max_attempts=2, max_concurrency=5)
    h.processor.sleep = lambda _s: asyncio.sleep(0)
    with pytest.raises(ChunkIncomplete) as caught:
        h.run(tickets(5))
    assert caught.value.retryable == 0
    assert "run the same command again" in str(caught.value)
    assert "will be retried" not in str(caught.value)
    with pytest.raises(ChunkIncomplete):
        h.run(tickets(5), chunk_run=3, retries=3)
    assert server.stats()["requests_total"] == 10  # 2 per row, not 2 per run of the chunk


def test_an_outage_holds_every_send_then_the_run_goes_on(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    """2.5 s of nothing but 529s: the rows in flight meet it, then one probe at a time
    until one is answered; every row is answered once, within its attempts."""
    from aibatch.simulator import OutageWindow

    server = simulate(latency_ms=20, outages=[OutageWindow(start_s=0, duration_s=2.5)])
    h = harness(server, max_concurrency=16)
    h.run(tickets(60))
    results = h.results()
    assert sorted(results["id"]) == sorted(i for i, _ in tickets(60))
    assert h.processor.admission.outage.outages == 1
    # The 16 in flight, their first retries, a probe at 1 s and one at 3 s.
    assert server.stats()["outage_answers"] <= 36, server.stats()["outage_answers"]
    assert results["attempts"].max() <= 6


def test_an_outage_past_its_deadline_stops_the_run_naming_the_overload(
    simulate: Simulate, harness: Callable[..., Harness]
) -> None:
    from aibatch.simulator import OutageWindow

    server = simulate(outages=[OutageWindow(start_s=0, duration_s=3600)])
    h = harness(server, max_concurrency=4)
    h.processor.admission.outage.deadline_s = 2.0
    with pytest.raises(RunStopped, match=r"overload.*OverloadedError"):
        h.run(tickets(20))
    assert server.stats()["requests_total"] <= 20  # ≤ 1 per row, not 6


@pytest.mark.parametrize("stop", ["auth", "spend_cap"])
def test_auth_and_spend_cap_stop_the_run_at_once(
    simulate: Simulate, harness: Callable[..., Harness], stop: str
) -> None:
    server = simulate(api_key="the-right-key") if stop == "auth" else simulate(spend_cap_after=10)
    h = harness(server, max_concurrency=2)
    with pytest.raises(RunStopped, match="refused the key" if stop == "auth" else "spend limit"):
        h.run(tickets(100))
    stats = server.stats()
    # Stopped within the requests already in flight, not after trying all 100.
    assert stats["requests_total"] <= (2 if stop == "auth" else 12)
    published = len(h.results()) if h.store.results_dir.exists() else 0
    assert published == (0 if stop == "auth" else 10)
