"""aibatch: push thousands of Messages API requests through a rate limit, losing nothing.

From Python: `aibatch.run(rows, job=..., output=...)` asks the job's question of every row
and returns the answers as a DataFrame; `aibatch.read_results(output, job)` reads them back
(aibatch/app/python_api.py). Both load on first use, so `import aibatch` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aibatch.app.python_api import read_results, run

__version__ = "0.1.0"
__all__ = ["read_results", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from aibatch.app import python_api

        return getattr(python_api, name)
    raise AttributeError(f"module 'aibatch' has no attribute {name!r}")
