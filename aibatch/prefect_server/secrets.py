"""Where a flow run finds the API key: its environment, else a Prefect Secret block.

Never a flow parameter (parameters are stored and shown by the server), never logged.
"""

from __future__ import annotations

import os
from typing import cast

from prefect.blocks.system import Secret

from aibatch.engine.backend import ApiTarget
from aibatch.errors import MissingAPIKey
from aibatch.runs.orchestration import API_KEY_BLOCK


async def api_key_from_environment_or_block() -> str | None:
    key = os.environ.get("ANTHROPIC_API_KEY")
    if key:
        return key
    try:
        block = cast("Secret[str]", await Secret.aload(API_KEY_BLOCK))
    except ValueError:  # Prefect's "Unable to find block document named ..."
        return None
    value = block.get()
    return value if isinstance(value, str) and value else None


async def api_target() -> ApiTarget:
    """Where this flow run's requests go: the key (environment, else the Secret block) and
    ANTHROPIC_BASE_URL (a gateway), read here, at the top, once."""
    return ApiTarget(await require_api_key(), os.environ.get("ANTHROPIC_BASE_URL") or None)


async def require_api_key() -> str:
    """The key, or a MissingAPIKey saying where to put one."""
    key = await api_key_from_environment_or_block()
    if key is None:
        raise MissingAPIKey(
            "no API key: set ANTHROPIC_API_KEY where this flow runs, or store one on the "
            f"server with `aibatch setup --store-api-key` (Secret block {API_KEY_BLOCK!r})"
        )
    return key
