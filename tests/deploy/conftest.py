"""A real `prefect server` on 127.0.0.1 with a temporary PREFECT_HOME, set up the way the
README says (aibatch setup, prefect deploy), plus workers, for the deployment tests."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aibatch.children import stop_child
from aibatch.simulator.process import SimulatorProcess
from aibatch.testing.prefect_server import PrefectServerProcess
from tests.conftest import sim_config
from tests.helpers import write_tickets

ROOT = Path(__file__).resolve().parents[2]
# A recognisable fake key: the simulator requires it, and it must never show up anywhere.
FAKE_KEY = "sk-ant-aibatch-test-KEY-7f3a9c"


def run_command(
    module: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if result.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServerProcess]:
    home = tmp_path_factory.mktemp("prefect-home")
    with PrefectServerProcess(home) as server:
        yield server


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorProcess]:
    """The API the workers' flow runs talk to; requires FAKE_KEY, as the real API would."""
    with SimulatorProcess(sim_config(api_key=FAKE_KEY, latency_ms=50)) as sim:
        yield sim


@pytest.fixture(scope="session")
def worker_env(prefect_server: PrefectServerProcess, simulator: SimulatorProcess) -> dict[str, str]:
    """What a worker machine has: the server's address and the API's, but no API key (the
    flow reads it from the Secret block `aibatch setup` stored)."""
    env = {**prefect_server.env, "ANTHROPIC_BASE_URL": simulator.base_url}
    env.pop("ANTHROPIC_API_KEY", None)
    # The flow runs import this checkout, wherever the test runs from.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="session")
def deployed(prefect_server: PrefectServerProcess, worker_env: dict[str, str]) -> str:
    """`aibatch setup --store-api-key` (twice) then `prefect --no-prompt deploy --all`;
    returns the setup commands' output."""
    outputs = []
    for _ in range(2):  # the second time finds everything there: setup is idempotent
        setup = run_command(
            "aibatch", "setup", "--chunk-slots", "2", "--in-flight", "6", "--store-api-key",
            env={**worker_env, "ANTHROPIC_API_KEY": FAKE_KEY},
        )  # fmt: skip
        outputs.append(setup.stdout + setup.stderr)
    run_command("prefect", "--no-prompt", "deploy", "--all", env=worker_env)
    return "\n---\n".join(outputs)


@pytest.fixture(scope="session")
def start_worker(
    worker_env: dict[str, str], deployed: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Path]]:
    """Start `prefect worker start --pool aibatch-process` processes; each is stopped (and
    waited for) at the end of the session. Returns the worker's log file."""
    workers: list[subprocess.Popen[bytes]] = []
    logs = tmp_path_factory.mktemp("worker-logs")

    def start(name: str) -> Path:
        log = logs / f"{name}.log"
        with log.open("wb") as sink:
            workers.append(subprocess.Popen(
                [sys.executable, "-m", "prefect", "worker", "start", "--pool",
                 "aibatch-process", "--name", name],
                env=worker_env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            ))  # fmt: skip
        return log

    yield start
    for worker in workers:
        stop_child(worker, grace_s=30)


def wait_for_final_state(client: Any, flow_run_id: Any, timeout_s: float = 420) -> Any:
    """Poll the server until the flow run is in a final state (or fail after timeout_s)."""

    async def poll() -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = await client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            await asyncio.sleep(1.0)
        raise AssertionError(f"flow run {flow_run_id} not finished after {timeout_s} s")

    return poll()


def child_runs(api_url: str, parent_id: Any) -> list[Any]:
    """The flow runs a run started (a sharded run's shards)."""
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    async def read() -> list[Any]:
        async with PrefectClient(api_url) as client:
            return await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])
                )
            )

    return asyncio.run(read())


async def start_deployment_run(api_url: str, name: str, params: dict[str, Any]) -> Any:
    from prefect.client.orchestration import PrefectClient
    from prefect.deployments import arun_deployment

    async with PrefectClient(api_url) as client:
        run = await arun_deployment(
            name, client=client, parameters={"params": params}, timeout=0, as_subflow=False
        )
        return await wait_for_final_state(client, run.id)


@pytest.fixture(scope="session")
def overloaded_run(
    prefect_server: PrefectServerProcess,
    simulator: SimulatorProcess,
    start_worker: Callable[[str], Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """A deployment run picked up by a worker, through a burst of 529s at its start.

    Four attempts per row in all, shared with the chunk's three Prefect retries: its first
    run may make one, so the rows that meet a 529 leave their chunk unfinished, the chunk
    task fails and Prefect retries it (which then succeeds)."""
    work = tmp_path_factory.mktemp("overloaded")
    ids = set(write_tickets(work / "tickets.csv", 100))
    log = start_worker("worker-a")
    simulator.configure(first_529s=10)  # counted from the reset: the next 10 messages
    simulator.reset()
    params = {"input_path": str(work / "tickets.csv"), "output_dir": str(work / "out"),
              "job": "classify", "chunk_size": 50, "max_attempts": 4}  # fmt: skip
    run = asyncio.run(
        start_deployment_run(prefect_server.api_url, "aibatch-rows/hourly-classification",
                             params)
    )  # fmt: skip
    simulator.configure(first_529s=0)
    return {"run": run, "ids": ids, "output": work / "out", "worker_log": log}
