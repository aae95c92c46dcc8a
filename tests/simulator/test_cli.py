"""`aibatch simulate-api`: the command outside checks start, with its options."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import anthropic
import pytest

from aibatch.simulator.config import SimulatorConfig
from aibatch.simulator.process import SimulatorProcess

COMMAND = [sys.executable, "-m", "aibatch", "simulate-api"]


@pytest.fixture
def cli_simulator() -> Iterator[tuple[str, subprocess.Popen[str]]]:
    process = subprocess.Popen(
        [
            *COMMAND,
            "--port",
            "0",
            "--rpm",
            "120",
            "--itpm",
            "50000",
            "--otpm",
            "9000",
            "--burst-seconds",
            "2",
            "--latency-ms",
            "5",
            "--p529",
            "0.25",
            "--p500",
            "0.1",
            "--storm",
            "0:60",
            "--no-ratelimit-headers",
            "--seed",
            "7",
            "--ratelimit-header-set",
            "tokens",
            "--other-client-rpm",
            "30",
            "--other-client-itpm",
            "1000",
            "--p503",
            "0.05",
            "--overload-retry-after-s",
            "2.5",
            "--outage",
            "100:5",
            "--outage",
            "200:1e9",
            "--outage-status",
            "503",
            "--send-should-retry",
        ],
        stdout=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", process.stdout.readline())
    assert match, "the simulator did not announce its address"
    yield match.group(1), process
    process.terminate()
    process.wait(timeout=10)
    process.stdout.close()


def test_options_reach_the_running_simulator(
    cli_simulator: tuple[str, subprocess.Popen[str]],
) -> None:
    base_url, _ = cli_simulator
    with urllib.request.urlopen(f"{base_url}/_sim/config") as response:
        config = json.loads(response.read())
    assert config["rpm"] == 120 and config["itpm"] == 50_000 and config["otpm"] == 9_000
    assert config["burst_seconds"] == 2 and config["latency_ms"] == 5
    assert config["p529"] == 0.25 and config["p500"] == 0.1 and config["seed"] == 7
    assert config["send_ratelimit_headers"] is False
    assert config["storms"] == [{"start_s": 0.0, "duration_s": 60.0}]
    assert config["ratelimit_header_set"] == "tokens"
    assert config["other_client_rpm"] == 30 and config["other_client_itpm"] == 1_000
    assert config["p503"] == 0.05 and config["overload_retry_after_s"] == 2.5
    assert config["outages"] == [
        {"start_s": 100.0, "duration_s": 5.0},
        {"start_s": 200.0, "duration_s": 1e9},  # an outage that never ends
    ]
    assert config["outage_status"] == 503 and config["send_should_retry"] is True
    assert "api_key" not in config

    client = anthropic.Anthropic(base_url=base_url, api_key="k", max_retries=0)
    with pytest.raises(anthropic.RateLimitError):  # inside the storm window
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


@pytest.mark.parametrize(
    "bad",
    [
        ["--p529", "2"],
        ["--storm", "later"],
        ["--rpm", "0"],
        ["--outage", "soon"],
        ["--outage-status", "500"],
        ["--ratelimit-header-set", "some"],
        ["--other-client-rpm", "0"],
    ],
)
def test_bad_options_exit_non_zero_with_a_message(bad: list[str]) -> None:
    result = subprocess.run(
        [*COMMAND, "--port", "0", *bad], capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "Invalid value" in result.stderr or "Error" in result.stderr


def test_simulator_process_runs_a_whole_config_and_stops() -> None:
    with SimulatorProcess(SimulatorConfig(rpm=60, burst_seconds=1)) as sim:
        client = anthropic.Anthropic(base_url=sim.base_url, api_key="k", max_retries=0)
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(
                model="claude-haiku-4-5",
                max_tokens=5,
                messages=[{"role": "user", "content": "hi"}],
            )
        assert sim.stats()["by_status"] == {"200": 1, "429": 1}
        pid = sim.pid
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


def test_every_setting_of_the_simulator_is_an_option_with_the_simulators_default() -> None:
    import typer.main

    from aibatch.app.cli import app

    command = typer.main.get_command(app).commands["simulate-api"]  # type: ignore[attr-defined]
    options = {param.name: param for param in command.params}
    # Set in tests only, or not a setting a user would turn from the command line.
    internal = {"max_body_bytes", "cache_ttl_seconds", "cache_ttl_1h_seconds"}
    # Spelled as the user thinks of them: a switch to turn a default off, a repeatable window.
    spelled = {"send_ratelimit_headers": "no_ratelimit_headers",
               "send_retry_after": "no_retry_after", "storms": "storm",
               "outages": "outage"}  # fmt: skip
    for name, field in SimulatorConfig.model_fields.items():
        if name in internal:
            continue
        option = options[spelled.get(name, name)]
        if name in spelled:
            continue
        if name == "accuracy":  # MODEL=SHARE pairs, none given by default
            assert option.default is None and field.default_factory is not None
            continue
        assert option.default == field.default, name


def test_the_simulator_of_a_process_killed_with_kill_9_exits_too() -> None:
    """`aibatch run` without a key starts a simulator; a kill -9 of the run must not leave
    it listening."""
    import os
    import signal

    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT_OF_A_SIMULATOR], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    simulator_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while _alive(simulator_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(simulator_pid)
    if alive:  # don't leave it behind whatever the verdict
        os.kill(simulator_pid, signal.SIGKILL)
    assert not alive


PARENT_OF_A_SIMULATOR = """
import time
from aibatch.simulator.process import SimulatorProcess
sim = SimulatorProcess().start()
print(sim.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie awaiting its reaper does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
