"""`prefect server start` on 127.0.0.1 in a child process, with its own PREFECT_HOME.

For benchmarks and end-to-end tests that need what a real deployment has: a server that
several processes (flow runs, workers) talk to. Imports nothing from Prefect; the child
does. Stopped, and waited for, on exit.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from aibatch.children import StartedInWith, stop_child


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrefectServerProcess(StartedInWith):
    """A Prefect server on a free loopback port; `env` is what a client process needs."""

    def __init__(self, home: Path, start_timeout_s: float = 240, log: Path | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.start_timeout_s = start_timeout_s
        self.log_path = log or home / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._launched = 0.0

    @property
    def env(self) -> dict[str, str]:
        """Environment for processes that should use this server."""
        return {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url,
            # The UI calls this address; without it, it would call port 4200.
            "PREFECT_SERVER_UI_API_URL": self.api_url,  # 3.9 name (PREFECT_UI_API_URL: alias)
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }

    def start(self) -> PrefectServerProcess:
        return self.launch().wait_ready()

    def launch(self) -> PrefectServerProcess:
        """Start the server without waiting for it (it takes 20-40 s here)."""
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in self.env.items() if k != "PREFECT_API_URL"}
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start",
                 "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        self._launched = time.monotonic()
        return self

    def wait_ready(self) -> PrefectServerProcess:
        if self._process is None:
            raise RuntimeError("launch() the server first")
        deadline = self._launched + self.start_timeout_s
        while True:  # look at least once: it may have been up for long
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited ({self._process.returncode}); see {self.log_path}"
                )
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"prefect server not healthy after {self.start_timeout_s} s")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        stop_child(process, grace_s=30)
