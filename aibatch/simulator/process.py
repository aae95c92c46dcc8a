"""The simulator in a child process: its own interpreter, so it never competes for our GIL.

Used by the main command when no API key is set, and by benchmarks, where a simulator in
the same process would steal CPU from the client being measured.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from aibatch.children import StartedInWith, stop_child
from aibatch.simulator.config import SimulatorConfig

_URL = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


class SimulatorProcess(StartedInWith):
    """`aibatch simulate-api` on a free port, stopped (and waited for) on exit."""

    def __init__(self, config: SimulatorConfig | None = None, start_timeout_s: float = 30) -> None:
        self.config = config or SimulatorConfig()
        self.start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[str] | None = None
        self.base_url = ""

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the simulator process is not running")
        return self._process.pid

    def start(self) -> SimulatorProcess:
        command = [
            sys.executable,
            "-m",
            "aibatch.simulator",
            "--port",
            "0",
            "--config-json",
            self.config.model_dump_json(),
            "--until-stdin-closes",
        ]
        # The child exits when its stdin closes: when this process ends, however it ends,
        # so a kill -9 of `aibatch run` leaves no simulator behind. Nothing is ever written.
        self._process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=None, text=True, stdin=subprocess.PIPE
        )
        assert self._process.stdout is not None
        # The child prints its address once it listens; until then nothing else is written.
        line = self._process.stdout.readline()
        match = _URL.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the simulator did not start (it said {line!r})")
        self.base_url = match.group(1)
        return self

    def _call(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(
            self.base_url + path,
            data=data,
            method=method,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/_sim/stats")
        return result

    def configure(self, **changes: Any) -> None:
        self._call("POST", "/_sim/config", changes)

    def reset(self) -> None:
        self._call("POST", "/_sim/reset", {})

    def peak_rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_child(process, grace_s=10)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()
