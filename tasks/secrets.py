"""Where a flow run finds the API key: its environment, else a Prefect Secret block.

Never a flow parameter (parameters are stored and shown by the server), never logged.
"""

from __future__ import annotations

import os
from typing import cast

from prefect.blocks.system import Secret

from aibatch.engine import policy


async def api_key_from_environment_or_block() -> str | None:
    key = os.environ.get("ANTHROPIC_API_KEY")
    if key:
        return key
    try:
        block = cast("Secret[str]", await Secret.aload(policy.API_KEY_BLOCK))
    except ValueError:  # Prefect's "Unable to find block document named ..."
        return None
    value = block.get()
    return value if isinstance(value, str) and value else None
