"""The engine's tests: a harness per test, each over its own output folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aibatch.testing.in_process import InProcessSimulator
from tests.engine.test_processor import Harness


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(server: InProcessSimulator, folder: str = "out", **options: Any) -> Harness:
        made.append(Harness(server, tmp_path / folder, **options))
        return made[-1]

    yield make
    for h in made:
        h.close()
