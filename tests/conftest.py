"""Shared fixtures: simulators on free loopback ports, SDK clients pointed at them, one
Prefect server for the flow tests, and the `--long` switch of the reliability suite."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from aibatch.runs import orchestration
from aibatch.simulator import SimulatorConfig, SimulatorServer
from aibatch.testing.in_process import InProcessSimulator
from aibatch.testing.s3_server import S3ServerProcess


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="run the long variants of the reliability suite (50 kills, more examples)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: kill / fault / bad-input / secrets tests (#6); --long for more"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The deployment tests share one server, its deployments and workers: keep them on one
    xdist worker (`--dist loadgroup`), or each worker would set all of that up again."""
    for item in items:
        if item.nodeid.startswith("tests/deploy/"):
            item.add_marker(pytest.mark.xdist_group("prefect-server"))


@pytest.fixture(scope="session")
def long_variant(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))


def sim_config(**config: Any) -> SimulatorConfig:
    """A simulator's config for a test: every model reads every row right unless the test
    asks for the models' own accuracy (`accuracy={}`) or another; the plumbing a test checks
    should not hang on a misread."""
    config.setdefault("accuracy", {"*": 1.0})
    return SimulatorConfig(**config)


@pytest.fixture
def start_simulator() -> Iterator[Callable[..., SimulatorServer]]:
    """Start simulators with any config; every one is stopped when the test ends."""
    started: list[SimulatorServer] = []

    def start(**config: Any) -> SimulatorServer:
        server = SimulatorServer(sim_config(**config)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def simulator(start_simulator: Callable[..., SimulatorServer]) -> SimulatorServer:
    return start_simulator()


Simulate = Callable[..., InProcessSimulator]


@pytest.fixture
def simulate() -> Simulate:
    """The simulator in this process, with any config (engine and run tests: no server)."""

    def make(**config: Any) -> InProcessSimulator:
        return InProcessSimulator(sim_config(**config))

    return make


def sdk_client(server: SimulatorServer, **kwargs: Any) -> anthropic.Anthropic:
    """The real SDK against the simulator, with its own retries off as aibatch runs it."""
    options: dict[str, Any] = {"api_key": "test-key", "max_retries": 0, "timeout": 10.0}
    options.update(kwargs)
    return anthropic.Anthropic(base_url=server.base_url, **options)


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One Prefect server (Prefect's test harness) for the session's flow tests."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    # The harness's server would try to send telemetry (and log that it cannot).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    # The server takes 20-40 s to start on a 2-core machine; Prefect's default is 30.
    with prefect_test_harness(server_startup_timeout=240):
        url = PREFECT_API_URL.value()
        assert url, "the Prefect test harness did not set an API URL"
        yield url


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3ServerProcess]:
    """moto's S3 server on loopback, for the tests of input and output in a bucket."""
    with S3ServerProcess() as server:
        yield server


@pytest.fixture
def bucket(s3_server: S3ServerProcess, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the test S3 server, which this process's AWS settings point at."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server.new_bucket()


@pytest.fixture
def release_leaked_slots(prefect_api: str) -> Iterator[None]:
    """Runs killed with kill -9 keep their chunk slots under leases that nothing revokes on
    the harness's server (it runs no repossessor), so later tests on it would wait for them:
    drop the limit after the test (the next run creates it again)."""
    yield
    from prefect.client.orchestration import get_client

    async def drop() -> None:
        async with get_client() as client:
            await client.delete_global_concurrency_limit_by_name(orchestration.CHUNK_LIMIT_NAME)

    asyncio.run(drop())


FlowSimulator = Callable[..., SimulatorServer]


@pytest.fixture
def flow_simulator(
    prefect_api: str,
    start_simulator: Callable[..., SimulatorServer],
    use_simulator: Callable[..., None],
) -> FlowSimulator:
    """For a test that runs the flow: the session's Prefect server, and a simulator with any
    config that this process's API key and base URL point at (as a worker's would)."""

    def start(**config: Any) -> SimulatorServer:
        server = start_simulator(**config)
        use_simulator(server)
        return server

    return start


@pytest.fixture
def use_simulator(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point this process's API key and base URL at a simulator."""

    def use(server: SimulatorServer, key: str = "test-key") -> None:
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)

    return use
