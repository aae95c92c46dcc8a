"""The capability table checked against the Models API at the start of a run with a real key.

The table (aibatch/jobs/models.py) shapes every request; the API's own description of each
model (`GET /v1/models/{id}`: `capabilities`, `max_tokens`, `max_input_tokens`) says whether
it still holds. A disagreement is a warning naming the model and the field, not a stop: the
table may be right where the endpoint is behind (a gateway may not serve it at all). The
Models API gives no retirement date; the SDK's list of deprecated models does, and the run
warns from it separately.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aibatch.engine.backend import ApiTarget
from aibatch.jobs.models import EFFORTS, ModelBook, ModelRules

THINKING_TYPES = ("adaptive", "enabled", "disabled")


def _supported(node: Any) -> bool | None:
    if isinstance(node, dict) and isinstance(node.get("supported"), bool):
        return bool(node["supported"])
    return None


def disagreements(model: str, rules: ModelRules, info: dict[str, Any]) -> list[str]:
    """Where the table and the API's entry differ, one line per field; a field the API
    does not give is not compared."""
    found: list[str] = []

    def differ(field: str, api: object, table: object) -> None:
        if api is not None and api != table:
            found.append(f"{model}: {field} is {api} at the Models API, {table} in the table")

    differ("max_tokens", info.get("max_tokens"), rules.max_output_tokens)
    differ("max_input_tokens", info.get("max_input_tokens"), rules.context_window)
    capabilities = info.get("capabilities") or {}
    structured = _supported(capabilities.get("structured_outputs"))
    differ("capabilities.structured_outputs", structured, rules.structured_outputs)
    effort = capabilities.get("effort") or {}
    for level in EFFORTS:
        differ(f"capabilities.effort.{level}", _supported(effort.get(level)),
               level in rules.efforts)  # fmt: skip
    types = (capabilities.get("thinking") or {}).get("types") or {}
    for kind in THINKING_TYPES:
        differ(f"capabilities.thinking.types.{kind}", _supported(types.get(kind)),
               kind in rules.thinking_types)  # fmt: skip
    return found


async def check_models(
    target: ApiTarget, models: Iterable[str], book: ModelBook, batch: bool = False
) -> list[str]:
    """Warnings for the models a run uses: each disagreement, or why none could be read."""
    backend = target.connect(max_connections=4)
    warnings: list[str] = []
    try:
        for model in dict.fromkeys(models):
            try:
                info = await backend.model_info(model)
            except Exception as error:  # a gateway without the endpoint: say so, go on
                warnings.append(f"{model}: the Models API could not be read ({error}); the "
                                "capability table is not checked")  # fmt: skip
                continue
            warnings += disagreements(model, book.rules_for(model), info)
            if batch and _supported((info.get("capabilities") or {}).get("batch")) is False:
                warnings.append(f"{model}: capabilities.batch is not supported: use realtime")
    finally:
        await backend.aclose()
    return warnings
