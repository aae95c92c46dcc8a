"""The output's promises around a run: a crashed run's journal folded in once, one run per
output (shards side by side), carried columns with a fixed schema."""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from aibatch.engine.processor import RowProcessor
from aibatch.errors import OutputLocked
from aibatch.output.committer import Committer
from aibatch.output.journal import journal_segments
from aibatch.output.store import ResultStore, carried_schema
from aibatch.testing.in_process import InProcessSimulator
from tests.conftest import Simulate
from tests.engine.test_processor import SUMMARY, tickets

Store = partial(ResultStore, job="summarize")


def answer_without_commit(
    server: InProcessSimulator, committer: Committer, run_id: str, rows: int
) -> None:
    """Answer `rows` rows into the committer's journal and publish nothing: as a run that
    is killed before its next commit leaves them."""
    backend = server.target("k").connect()
    processor = RowProcessor.with_defaults(backend, SUMMARY, committer, run_id)

    async def answer() -> None:
        await asyncio.gather(*(processor._process(i, t) for i, t in tickets(rows)))
        await backend.aclose()

    asyncio.run(answer())


def test_a_crash_before_commit_is_folded_in_by_the_next_run(
    simulate: Simulate, tmp_path: Path
) -> None:
    server = simulate()
    store = Store(tmp_path / "out")
    carried = pd.DataFrame(
        {"tier": ["gold"] * 5}, index=pd.Index([f"T{i}" for i in range(5)], name="id")
    )
    with store.locked():
        committer = Committer.open(store, "crashed", carried)
        answer_without_commit(server, committer, "crashed", 5)
        # the process "dies" here: journaled, never published; a torn last line too
        (segment,) = journal_segments(store.journal_dir)
        with segment.local.open("ab") as journal:
            journal.write(b'{"kind": "ok", "id": "T9", "resu')
    assert not any(store.results_dir.local.rglob("*.parquet"))

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
    store = Store(tmp_path / "out")
    second = Store(tmp_path / "out")
    with (
        store.locked(),
        pytest.raises(OutputLocked, match="in use by another aibatch run"),
        second.locked(),
    ):
        pass


def test_shards_share_an_output_but_a_whole_input_run_excludes_them(tmp_path: Path) -> None:
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
    simulate: Simulate, tmp_path: Path
) -> None:
    server = simulate()
    carried = pd.DataFrame(index=pd.Index([f"T{i}" for i in range(3)], name="id"))
    shard = Store(tmp_path / "out", shard="1-of-2")
    with shard.locked():
        committer = Committer.open(shard, "shard-run", carried)
        answer_without_commit(server, committer, "shard-run", 3)  # then the shard dies
    other = Store(tmp_path / "out", shard="2-of-2")
    with other.locked():  # another shard leaves it alone
        assert Committer.open(other, "x", carried).fold_in() == 0
    whole = Store(tmp_path / "out")
    with whole.locked():
        committer = Committer.open(whole, "next", carried)
        assert committer.fold_in() == 3
        committer.close()
    assert sorted(pd.read_parquet(whole.results_dir)["id"]) == ["T0", "T1", "T2"]
