"""The engine on the simulator, without Prefect: retries, stops, journal and commits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from aibatch.engine.backend import ApiTarget
from aibatch.engine.processor import RowProcessor
from aibatch.engine.stats import RunStats
from aibatch.errors import ChunkIncomplete, RunStopped
from aibatch.jobs.spec import JobSpec
from aibatch.output.committer import Committer, new_run_id
from aibatch.output.store import ResultStore, carried_schema, journal_segments
from aibatch.simulator import SimulatorServer

StartSimulator = Callable[..., SimulatorServer]
Store = partial(ResultStore, job="summarize")
SUMMARY = JobSpec.build("summarize", "claude-haiku-4-5", None)


def tickets(n: int, prefix: str = "T") -> list[tuple[str, str]]:
    return [
        (f"{prefix}{i}", f"Ticket {i}: the export fails with error {i}. Please fix export {i}.")
        for i in range(n)
    ]


class Harness:
    """A store, committer and processor over a simulator, as the flow wires them."""

    def __init__(self, server: SimulatorServer, root: Path, **processor_options: object) -> None:
        # One loop for the harness's life: the SDK's async client is bound to its loop.
        self.loop = asyncio.new_event_loop()
        self.server = server
        self.store = ResultStore(root, SUMMARY.job)
        self._lock = self.store.locked()
        self._lock.__enter__()
        self.run_id = new_run_id()  # unique per run, as the flow makes it
        carried = pd.DataFrame(index=pd.Index([], name="id"))
        self.committer = Committer.open(self.store, self.run_id, carried)
        self.backend = ApiTarget("test-key", server.base_url).connect()
        self.stats = RunStats()
        self.processor = RowProcessor.with_defaults(
            self.backend, SUMMARY, self.committer, self.run_id, stats=self.stats,
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


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(server: SimulatorServer, **options: object) -> Harness:
        made.append(Harness(server, tmp_path / "out", **options))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_each_ticket_gets_its_own_answer_once(
    start_simulator: StartSimulator, harness: Callable[..., Harness]
) -> None:
    h = harness(start_simulator())
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
    assert all(p.stat().st_size == 0 for p in journal_segments(h.store.journal_dir))


def test_permanent_errors_are_recorded_once_and_never_retried(
    start_simulator: StartSimulator, harness: Callable[..., Harness]
) -> None:
    h = harness(start_simulator(context_window=600))
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
    start_simulator: StartSimulator, harness: Callable[..., Harness]
) -> None:
    server = start_simulator(p529=0.3, p500=0.1, p_drop=0.05, seed=3)
    h = harness(server, max_attempts=30)
    h.processor.sleep = lambda _s: asyncio.sleep(0)  # backoff timing is the policy's test
    h.run(tickets(80))
    assert len(h.results()) == 80
    stats = server.stats()
    assert stats["by_status"]["529"] > 0 and stats["dropped"] > 0
    assert stats["prompts_paid_repeated"] == 0
    assert h.stats.retries == stats["requests_total"] - 80


def test_in_a_429_storm_everyone_waits_out_retry_after_and_one_probe_goes(
    start_simulator: StartSimulator, harness: Callable[..., Harness]
) -> None:
    from aibatch.simulator import StormWindow

    server = start_simulator(storms=[StormWindow(start_s=0, duration_s=3.0)])
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
    start_simulator: StartSimulator, harness: Callable[..., Harness]
) -> None:
    server = start_simulator(rpm=1_200, burst_seconds=1, latency_ms=20)
    h = harness(server, max_concurrency=None)  # auto
    h.run(tickets(120))
    assert len(h.results()) == 120
    assert h.processor.admission.pacer.requests is not None  # learned, never told
    assert server.stats()["by_status"].get("429", 0) <= 2


def test_a_chunk_retry_sends_only_what_is_left_within_each_rows_one_budget(
    start_simulator: StartSimulator, harness: Callable[..., Harness]
) -> None:
    """Two attempts per row in all, one of them kept for the chunk's one retry: the first
    run sends each row once, the retry (what Prefect runs) only the unfinished ones."""
    server = start_simulator(p529=0.5, seed=11)
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
    start_simulator: StartSimulator, harness: Callable[..., Harness]
) -> None:
    """The budget is the row's, whatever retries: a chunk run after it is spent sends
    nothing, and the message says a re-run is what sends it again."""
    server = start_simulator(p529=1.0)
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
    start_simulator: StartSimulator, harness: Callable[..., Harness]
) -> None:
    """2.5 s of nothing but 529s: the rows in flight meet it, then one probe at a time
    until one is answered; every row is answered once, within its attempts."""
    from aibatch.simulator import OutageWindow

    server = start_simulator(latency_ms=20, outages=[OutageWindow(start_s=0, duration_s=2.5)])
    h = harness(server, max_concurrency=16)
    h.run(tickets(60))
    results = h.results()
    assert sorted(results["id"]) == sorted(i for i, _ in tickets(60))
    assert h.processor.admission.outage.outages == 1
    # The 16 in flight, their first retries, a probe at 1 s and one at 3 s.
    assert server.stats()["outage_answers"] <= 36, server.stats()["outage_answers"]
    assert results["attempts"].max() <= 6


def test_an_outage_past_its_deadline_stops_the_run_naming_the_overload(
    start_simulator: StartSimulator, harness: Callable[..., Harness]
) -> None:
    from aibatch.simulator import OutageWindow

    server = start_simulator(outages=[OutageWindow(start_s=0, duration_s=3600)])
    h = harness(server, max_concurrency=4)
    h.processor.admission.outage.deadline_s = 2.0
    with pytest.raises(RunStopped, match=r"overload.*OverloadedError"):
        h.run(tickets(20))
    assert server.stats()["requests_total"] <= 20  # ≤ 1 per row, not 6


@pytest.mark.parametrize("stop", ["auth", "spend_cap"])
def test_auth_and_spend_cap_stop_the_run_at_once(
    start_simulator: StartSimulator, harness: Callable[..., Harness], stop: str
) -> None:
    if stop == "auth":
        server = start_simulator(api_key="the-right-key")
    else:
        server = start_simulator(spend_cap_after=10)
    h = harness(server, max_concurrency=2)
    with pytest.raises(RunStopped, match="refused the key" if stop == "auth" else "spend limit"):
        h.run(tickets(100))
    stats = server.stats()
    # Stopped within the requests already in flight, not after trying all 100.
    assert stats["requests_total"] <= (2 if stop == "auth" else 12)
    published = len(h.results()) if h.store.results_dir.exists() else 0
    assert published == (0 if stop == "auth" else 10)


def test_a_crash_before_commit_is_folded_in_by_the_next_run(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    server = start_simulator()
    store = Store(tmp_path / "out")
    carried = pd.DataFrame(
        {"tier": ["gold"] * 5}, index=pd.Index([f"T{i}" for i in range(5)], name="id")
    )
    with store.locked():
        committer = Committer.open(store, "crashed", carried)
        backend = ApiTarget("k", server.base_url).connect()
        processor = RowProcessor.with_defaults(backend, SUMMARY, committer, "crashed")

        async def answer_without_commit() -> None:
            await asyncio.gather(*(processor._process(i, t) for i, t in tickets(5)))
            await backend.aclose()

        asyncio.run(answer_without_commit())
        # the process "dies" here: journaled, never published; a torn last line too
        assert committer.journal.path is not None
        with committer.journal.path.open("ab") as journal:
            journal.write(b'{"kind": "ok", "id": "T9", "resu')
    assert not any(store.results_dir.rglob("*.parquet"))

    with store.locked():
        second = Committer.open(store, "next", carried)
        assert second.fold_in() == 5
        second.close()
        again = Committer.open(store, "third", carried)
        assert again.fold_in() == 0
        again.close()
    results = pd.read_parquet(store.results_dir)
    assert sorted(results["id"]) == [f"T{i}" for i in range(5)]
    assert set(results["tier"]) == {"gold"}
    assert set(results["run_id"]) == {"crashed"}
    assert not journal_segments(store.journal_dir)


def test_carried_columns_have_a_fixed_schema_even_when_all_null(tmp_path: Path) -> None:
    carried = pd.DataFrame({"note": [None, None], "n": [1, 2]},
                           index=pd.Index(["a", "b"], name="id"))  # fmt: skip
    schema = carried_schema(carried)
    assert schema.field("note").type == pa.string()
    assert schema.field("n").type == pa.int64()


def test_a_second_run_on_the_same_output_is_refused(tmp_path: Path) -> None:
    from aibatch.errors import OutputLocked

    store = Store(tmp_path / "out")
    second = Store(tmp_path / "out")
    with (
        store.locked(),
        pytest.raises(OutputLocked, match="in use by another aibatch run"),
        second.locked(),
    ):
        pass


def test_shards_share_an_output_but_a_whole_input_run_excludes_them(tmp_path: Path) -> None:
    from aibatch.errors import OutputLocked

    out = tmp_path / "out"
    one, two = (
        Store(out, shard="1-of-2"),
        Store(out, shard="2-of-2"),
    )
    with one.locked(), two.locked():  # two shards at once: fine
        with (
            pytest.raises(OutputLocked, match="another aibatch run"),
            Store(out).locked(),
        ):
            pass
        with (
            pytest.raises(OutputLocked, match="shard '1-of-2'"),
            Store(out, shard="1-of-2").locked(),
        ):
            pass
    with (
        Store(out).locked(),
        pytest.raises(OutputLocked, match="whole-input"),
        one.locked(),
    ):
        pass
    with pytest.raises(ValueError, match="shard name"):
        Store(out, shard="../elsewhere")


def test_a_whole_input_run_folds_in_what_a_crashed_shard_journaled(
    start_simulator: StartSimulator, tmp_path: Path
) -> None:
    server = start_simulator()
    carried = pd.DataFrame(index=pd.Index([f"T{i}" for i in range(3)], name="id"))
    shard = Store(tmp_path / "out", shard="1-of-2")
    with shard.locked():
        committer = Committer.open(shard, "shard-run", carried)
        backend = ApiTarget("k", server.base_url).connect()
        processor = RowProcessor.with_defaults(backend, SUMMARY, committer, "shard-run")

        async def answer_without_commit() -> None:
            await asyncio.gather(*(processor._process(i, t) for i, t in tickets(3)))
            await backend.aclose()

        asyncio.run(answer_without_commit())  # then the shard's process dies
    other = Store(tmp_path / "out", shard="2-of-2")
    with other.locked():  # another shard leaves it alone
        assert Committer.open(other, "x", carried).fold_in() == 0
    whole = Store(tmp_path / "out")
    with whole.locked():
        committer = Committer.open(whole, "next", carried)
        assert committer.fold_in() == 3
        committer.close()
    assert sorted(pd.read_parquet(whole.results_dir)["id"]) == ["T0", "T1", "T2"]
