"""The Prefect concurrency limit that caps how many chunks run at once."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound


class LimitMissing(RuntimeError):
    pass


async def ensure_concurrency_limit(name: str, slots: int) -> int:
    """Create or resize the global limit `name`, then read it back.

    A tag limit that does not exist only earns a warning from Prefect and limits nothing,
    so aibatch never assumes: it creates it and checks that it is there and active.
    """
    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(name, slots)
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound as exc:
            raise LimitMissing(f"the concurrency limit {name!r} could not be created") from exc
    if not limit.active or limit.limit != slots:
        raise LimitMissing(
            f"the concurrency limit {name!r} is {'inactive' if not limit.active else ''}"
            f" at {limit.limit} slots, not {slots}"
        )
    return limit.limit
