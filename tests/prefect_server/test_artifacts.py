"""Artifact keys: Prefect takes lowercase letters, digits and dashes only."""

from __future__ import annotations

import re

import pytest

from aibatch.prefect_server.artifacts import artifact_key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("aibatch-summarize-tickets.csv", "aibatch-summarize-tickets-csv"),
        ("aibatch-Products-Données 2026.parquet", "aibatch-products-donn-es-2026-parquet"),
        ("--a__b--", "a-b"),
    ],
)  # fmt: skip
def test_an_input_name_becomes_a_key_prefect_accepts(text: str, key: str) -> None:
    assert artifact_key(text) == key


def test_a_long_name_is_cut_to_prefects_limit() -> None:
    key = artifact_key("aibatch-" + "x" * 300)
    assert len(key) == 100 and re.fullmatch(r"[a-z0-9-]+", key)
