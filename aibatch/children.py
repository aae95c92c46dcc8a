"""Stopping the child processes aibatch starts (the simulator, a Prefect server)."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_child(process: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL; always reaped, never left a zombie."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
