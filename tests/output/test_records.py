"""Journal lines read back: whole records of a known kind, even from an older aibatch."""

from __future__ import annotations

from pathlib import Path

import orjson

from aibatch.output.journal import read_segment
from aibatch.output.records import is_record


def test_a_line_missing_columns_is_still_read_and_a_torn_or_keyless_one_is_not(
    tmp_path: Path,
) -> None:
    older = {
        "kind": "ok",
        "id": "T1",
        "job": "summarize",
        "model": "m",
        "prompt_version": "v",
        "result": "An answer.",
    }  # no tokens, cost or run id
    failed = {"kind": "failed", "id": "T2", "run_id": "r", "error_type": "refusal"}
    keyless = {"kind": "ok", "job": "summarize", "result": "whose?"}
    segment = tmp_path / "run.jsonl"
    segment.write_bytes(
        b"".join(orjson.dumps(r) + b"\n" for r in (older, failed, keyless, {"kind": "x"}))
        + b'{"kind": "ok", "id": "T9", "resu'  # torn by a crash mid-write
    )  # fmt: skip
    assert [dict(r) for r in read_segment(segment)] == [older, failed]
    assert not is_record(["ok"]) and not is_record(keyless)
