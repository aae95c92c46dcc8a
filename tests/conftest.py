"""Shared fixtures: a simulator on a free loopback port, and SDK clients pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from aibatch.simulator import SimulatorConfig, SimulatorServer


@pytest.fixture
def start_simulator() -> Iterator[Callable[..., SimulatorServer]]:
    """Start simulators with any config; every one is stopped when the test ends."""
    started: list[SimulatorServer] = []

    def start(**config: Any) -> SimulatorServer:
        server = SimulatorServer(SimulatorConfig(**config)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def simulator(start_simulator: Callable[..., SimulatorServer]) -> SimulatorServer:
    return start_simulator()


def sdk_client(server: SimulatorServer, **kwargs: Any) -> anthropic.Anthropic:
    """The real SDK against the simulator, with its own retries off as aibatch runs it."""
    options: dict[str, Any] = {"api_key": "test-key", "max_retries": 0, "timeout": 10.0}
    options.update(kwargs)
    return anthropic.Anthropic(base_url=server.base_url, **options)
