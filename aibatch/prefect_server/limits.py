"""The Prefect limits aibatch uses: chunk slots, requests in flight, and the request and
token rates shared across processes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.concurrency.asyncio import rate_limit
from prefect.exceptions import ObjectNotFound

from aibatch.engine.shared import SharedAllowance, SharedLimits
from aibatch.errors import LimitMissing
from aibatch.runs.builder import Logger
from aibatch.runs.orchestration import (
    CHUNK_LIMIT_NAME,
    CHUNK_LIMIT_TAG,
    DEFAULT_CHUNK_SLOTS,
    IN_FLIGHT_LIMIT_NAME,
    SHARED_BATCH_S,
    SHARED_BURST_S,
    SHARED_INPUT_TOKENS,
    SHARED_OUTPUT_TOKENS,
    SHARED_RATE_LIMIT_NAME,
    SHARED_REQUESTS,
    SharedRate,
)
from aibatch.runs.parameters import RunParameters


async def read_active_limit(name: str) -> GlobalConcurrencyLimitResponse | None:
    """The global limit `name` if it exists and is active; None otherwise."""
    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return None
    return limit if limit.active else None


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


async def ensure_chunk_limit(slots: int | None) -> int:
    """The chunk-slot limit's size: set to `slots` if given; else the server's as it is
    (as `aibatch setup` left it), created with the default size if missing."""
    if slots is not None:
        return await ensure_concurrency_limit(CHUNK_LIMIT_NAME, slots)
    limit = await read_active_limit(CHUNK_LIMIT_NAME)
    if limit is None:
        return await ensure_concurrency_limit(CHUNK_LIMIT_NAME, DEFAULT_CHUNK_SLOTS)
    return limit.limit


async def release_orphaned_chunk_slots() -> int:
    """Free the chunk slots that no live task run holds; return how many were freed.

    A chunk task run holds its slot under a lease it renews. Killed with kill -9, it stops
    renewing, but only the server's repossessor service gives the slot back, and Prefect's
    local server (every `aibatch run` without PREFECT_API_URL, and the test harness) does
    not run that service; a restarted server also forgets its leases. Such slots stay
    taken in the database for good, and the next run would wait for them forever.

    A slot without a live lease can never be released, so the count of live holders is
    the true count. Prefect has no call for "slots without a lease", so this compares the
    two. A chunk that takes a slot between the two reads is not counted as a holder; its
    slot is freed early, so one chunk too many may run until a later run sets it right.
    """
    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(CHUNK_LIMIT_NAME)
            holders = await client.read_concurrency_limit_by_tag(CHUNK_LIMIT_TAG)
        except ObjectNotFound:
            return 0
        orphaned = limit.active_slots - len(holders.active_slots)
        if orphaned <= 0:
            return 0
        await client.update_global_concurrency_limit(
            CHUNK_LIMIT_NAME,
            GlobalConcurrencyLimitUpdate(active_slots=len(holders.active_slots)),
        )
    return orphaned


def rate_limit_shape(per_min: int, slots_per_unit: int) -> tuple[int, float]:
    """(slots, decay per second) of a Prefect rate limit granting `per_min` units, each
    `slots_per_unit` slots."""
    decay = per_min / 60 * slots_per_unit
    slots = math.ceil(max(per_min / 60 * SHARED_BURST_S, 2) * slots_per_unit)
    return slots, decay


def shared_per_min(limit: GlobalConcurrencyLimitResponse, slots_per_unit: int) -> float:
    """The units per minute a rate limit grants."""
    return (limit.slot_decay_per_second or 0.0) / slots_per_unit * 60


async def ensure_shared_rate_limit(
    per_min: int, rate: SharedRate = SHARED_REQUESTS
) -> GlobalConcurrencyLimitResponse:
    """Create or update the rate limit of `rate` that every run and worker on this server
    shares, then check that it took."""
    slots, decay = rate_limit_shape(per_min, rate.slots_per_unit)
    name = rate.name
    async with get_client() as client:
        try:
            await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots, slot_decay_per_second=decay)
            )
        else:
            await client.update_global_concurrency_limit(
                name,
                GlobalConcurrencyLimitUpdate(limit=slots, slot_decay_per_second=decay, active=True),
            )
        limit = await client.read_global_concurrency_limit_by_name(name)
    if limit.slot_decay_per_second != decay or limit.limit != slots:
        raise LimitMissing(f"the rate limit {name!r} did not take {per_min} {rate.unit}/min")
    return limit


async def read_shared_rate_limit(
    name: str = SHARED_RATE_LIMIT_NAME,
) -> GlobalConcurrencyLimitResponse | None:
    """A shared rate limit if it exists and is active (created by `aibatch setup` or a
    run's `--shared-rpm`, `--shared-itpm`, `--shared-otpm`); None means this run paces that
    rate on its own."""
    limit = await read_active_limit(name)
    return limit if limit is not None and limit.slot_decay_per_second else None


def shared_allowance(limit: GlobalConcurrencyLimitResponse, slots_per_unit: int) -> SharedAllowance:
    """Units (requests or tokens) from the Prefect rate limit `limit`, a batch per server
    round trip."""

    async def acquire(units: int) -> None:
        await rate_limit(limit.name, occupy=units * slots_per_unit, strict=True)

    return SharedAllowance.for_rate(acquire, shared_per_min(limit, slots_per_unit), SHARED_BATCH_S)


async def read_in_flight_limit(name: str = IN_FLIGHT_LIMIT_NAME) -> int | None:
    """Requests in flight allowed across every run and worker, if `aibatch setup
    --in-flight` set such a limit on this server (and it is active)."""
    limit = await read_active_limit(name)
    return limit.limit if limit is not None else None


def chunk_width(in_flight: int, chunk_slots: int) -> int:
    """Each running chunk's share of the in-flight limit: with every chunk slot taken,
    together they hold all of it and no more."""
    return max(1, in_flight // chunk_slots)


@dataclass(frozen=True)
class RunLimits:
    """The server's limits as one run takes them."""

    chunk_slots: int  # chunk task runs at once
    shared: SharedLimits | None  # the rates shared with every run, if any is
    width: int | None  # each chunk's share of the in-flight limit, if any


async def prepare_shared_limits(params: RunParameters, logger: Logger) -> SharedLimits | None:
    """Set the shared rates this run gives, read the others as they are on the server; None
    if none is shared."""
    given = {SHARED_REQUESTS: params.shared_rpm, SHARED_INPUT_TOKENS: params.shared_itpm,
             SHARED_OUTPUT_TOKENS: params.shared_otpm}  # fmt: skip
    allowances: dict[SharedRate, SharedAllowance] = {}
    for rate, per_min in given.items():
        if per_min is not None:
            limit: GlobalConcurrencyLimitResponse | None = await ensure_shared_rate_limit(
                per_min, rate
            )
        else:
            limit = await read_shared_rate_limit(rate.name)
        if limit is None:
            continue
        logger.info(
            "Sharing %.0f %s/min with every run on this Prefect server (rate limit %r)",
            shared_per_min(limit, rate.slots_per_unit), rate.unit, limit.name,
        )  # fmt: skip
        allowances[rate] = shared_allowance(limit, rate.slots_per_unit)
    if not allowances:
        return None
    return SharedLimits(
        allowances.get(SHARED_REQUESTS),
        allowances.get(SHARED_INPUT_TOKENS),
        allowances.get(SHARED_OUTPUT_TOKENS),
    )


async def prepare_limits(params: RunParameters, logger: Logger) -> RunLimits:
    """Set or read the chunk-slot, shared-rate and in-flight limits for this run."""
    chunk_slots = await ensure_chunk_limit(params.chunk_slots)
    if orphaned := await release_orphaned_chunk_slots():
        logger.warning(
            "Freed %d slot(s) of %r that no live chunk held (left by a run that was killed,"
            " or by a server restart)", orphaned, CHUNK_LIMIT_NAME,
        )  # fmt: skip
    shared = await prepare_shared_limits(params, logger)
    in_flight = await read_in_flight_limit()
    width = chunk_width(in_flight, chunk_slots) if in_flight is not None else None
    if width is not None:
        logger.info(
            "At most %d requests in flight across every run on this server (limit %r): "
            "%d per chunk", in_flight, IN_FLIGHT_LIMIT_NAME, width,
        )  # fmt: skip
    return RunLimits(chunk_slots, shared, width)
