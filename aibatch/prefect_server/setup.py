"""`aibatch setup`: what a Prefect server needs before aibatch's deployments can run there.

Idempotent: run it again with other numbers and it updates what is there.
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
from prefect.workers.process import ProcessWorker
from pydantic import SecretStr

from aibatch.prefect_server.limits import ensure_concurrency_limit, ensure_shared_rate_limit
from aibatch.runs.orchestration import (
    API_KEY_BLOCK,
    CHUNK_LIMIT_NAME,
    DEFAULT_CHUNK_SLOTS,
    IN_FLIGHT_LIMIT_NAME,
    SHARED_INPUT_TOKENS,
    SHARED_OUTPUT_TOKENS,
    SHARED_REQUESTS,
    WORK_POOL,
)


@dataclass
class SetupReport:
    work_pool: str
    pool_created: bool
    chunk_slots: int
    shared_rpm: int | None
    in_flight: int | None
    api_key_stored: bool
    shared_itpm: int | None = None
    shared_otpm: int | None = None

    def lines(self) -> list[str]:
        out = [
            f"work pool {self.work_pool!r} (process): "
            + ("created" if self.pool_created else "already there"),
            f"concurrency limit {CHUNK_LIMIT_NAME!r}: {self.chunk_slots} chunks at once",
        ]
        shared = ((SHARED_REQUESTS, self.shared_rpm), (SHARED_INPUT_TOKENS, self.shared_itpm),
                  (SHARED_OUTPUT_TOKENS, self.shared_otpm))  # fmt: skip
        for rate, per_min in shared:
            if per_min is not None:
                out.append(
                    f"rate limit {rate.name!r}: {per_min} {rate.unit}/min shared by every run "
                    "and worker"
                )
        if self.in_flight is not None:
            out.append(
                f"concurrency limit {IN_FLIGHT_LIMIT_NAME!r}: {self.in_flight} requests "
                "in flight at once across every run and worker"
            )
        if self.api_key_stored:
            out.append(f"API key stored in the Secret block {API_KEY_BLOCK!r}")
        return out


async def ensure_work_pool(name: str) -> bool:
    """Create a process work pool with the process worker's default job template; True if
    it was created, False if it was there already."""
    pool = WorkPoolCreate(
        name=name,
        type="process",
        base_job_template=ProcessWorker.get_default_base_job_template(),
        description="aibatch flow runs, as local processes of the workers polling this pool",
    )
    async with get_client() as client:
        try:
            await client.create_work_pool(pool)
        except ObjectAlreadyExists:
            return False
    return True


async def store_api_key(api_key: str) -> None:
    """Keep the key in a Prefect Secret block (shown masked in the UI); flows read it from
    there when their environment has none."""
    await Secret(value=SecretStr(api_key)).save(API_KEY_BLOCK, overwrite=True)


async def setup_server(
    work_pool: str = WORK_POOL,
    chunk_slots: int = DEFAULT_CHUNK_SLOTS,
    shared_rpm: int | None = None,
    in_flight: int | None = None,
    api_key: str | None = None,
    shared_itpm: int | None = None,
    shared_otpm: int | None = None,
) -> SetupReport:
    created = await ensure_work_pool(work_pool)
    await ensure_concurrency_limit(CHUNK_LIMIT_NAME, chunk_slots)
    for rate, per_min in ((SHARED_REQUESTS, shared_rpm), (SHARED_INPUT_TOKENS, shared_itpm),
                          (SHARED_OUTPUT_TOKENS, shared_otpm)):  # fmt: skip
        if per_min is not None:
            await ensure_shared_rate_limit(per_min, rate)
    if in_flight is not None:
        await ensure_concurrency_limit(IN_FLIGHT_LIMIT_NAME, in_flight)
    if api_key:
        await store_api_key(api_key)
    return SetupReport(
        work_pool, created, chunk_slots, shared_rpm, in_flight, bool(api_key), shared_itpm,
        shared_otpm,
    )  # fmt: skip
