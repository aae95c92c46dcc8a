"""Starting and stopping what aibatch runs beside itself (the simulator, a Prefect server)."""

from __future__ import annotations

import subprocess
from types import TracebackType
from typing import Any, Self


def stop_child(process: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM, wait up to `grace_s`, then SIGKILL; always reaped, never left a zombie."""
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class StartedInWith:
    """`with thing:` starts it and stops it, whatever happens inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
