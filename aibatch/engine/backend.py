"""The one small interface in front of the Messages API.

`MessagesBackend` is all the engine knows. `AnthropicBackend` implements it with the real
SDK, and that same class talks to the simulator: the simulator is an HTTP endpoint, so
nothing in aibatch works only against it. Where it connects is an `ApiTarget`, passed in
from the top: the real API, a gateway, the simulator over HTTP, or (tests) the simulator in
process through an httpx transport, with the SDK, its parsing and its errors unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import anthropic
import httpx2

from aibatch.engine.policy import REQUEST_TIMEOUT_S
from aibatch.errors import MissingAPIKey


@dataclass(frozen=True)
class Reply:
    """A successful Message and the response headers (rate-limit state lives there)."""

    message: anthropic.types.Message
    headers: Mapping[str, str]


class MessagesBackend(Protocol):
    async def create(self, params: dict[str, Any]) -> Reply: ...

    async def aclose(self) -> None: ...


class TokenCountingBackend(Protocol):
    """What the estimate needs: count a request's input tokens, generating nothing."""

    async def count_tokens(self, params: dict[str, Any]) -> int: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class BatchStatus:
    """A Message Batch as a poll sees it."""

    id: str
    processing_status: str  # in_progress | canceling | ended
    counts: dict[str, int] = field(default_factory=dict)  # processing, succeeded, errored...
    created_at: datetime | None = None

    @property
    def ended(self) -> bool:
        return self.processing_status == "ended"

    @property
    def request_total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class BatchOutcome:
    """One request's result in an ended batch."""

    custom_id: str
    kind: str  # succeeded | errored | canceled | expired
    message: anthropic.types.Message | None = None
    error_type: str | None = None  # for errored: the API's error type
    error_message: str | None = None


class BatchesBackend(Protocol):
    """The Message Batches half of the interface (same client, same key)."""

    async def create_batch(self, requests: list[dict[str, Any]]) -> BatchStatus: ...

    async def retrieve_batch(self, batch_id: str) -> BatchStatus: ...

    async def cancel_batch(self, batch_id: str) -> BatchStatus: ...

    def batch_results(self, batch_id: str) -> AsyncIterator[BatchOutcome]: ...

    def recent_batches(self, limit: int) -> AsyncIterator[BatchStatus]: ...


@dataclass(frozen=True)
class ApiTarget:
    """Where a run's requests go, decided once at the top (the app, the flow) and passed
    down: the key, the base URL (None: the real API), and for tests an in-process transport
    in place of the network. The engine never looks at the environment for these."""

    api_key: str = field(repr=False)  # never shown: not in a repr, a log or a state
    base_url: str | None = None
    transport: httpx2.AsyncBaseTransport | None = field(default=None, repr=False)

    def connect(
        self, max_connections: int = 256, timeout_s: float = REQUEST_TIMEOUT_S
    ) -> AnthropicBackend:
        return AnthropicBackend(self, max_connections=max_connections, timeout_s=timeout_s)


class AnthropicBackend:
    """The SDK's async client with its own retries off: aibatch owns the only retry loop."""

    def __init__(
        self,
        target: ApiTarget,
        max_connections: int = 256,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        if not target.api_key:
            raise MissingAPIKey("no API key: set ANTHROPIC_API_KEY")
        http_client: httpx2.AsyncClient
        if target.transport is not None:
            http_client = anthropic.DefaultAsyncHttpxClient(
                transport=target.transport, timeout=timeout_s
            )
        else:
            # The SDK's aiohttp transport: httpx2's own pool scans every connection per
            # request, which made the client CPU-bound above ~100 in flight (benchmarks/,
            # P2). Sized for the concurrency we run at (a bare client caps at 100).
            limits = httpx2.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            )
            http_client = anthropic.DefaultAioHttpClient(limits=limits, timeout=timeout_s)
        self.client = anthropic.AsyncAnthropic(
            api_key=target.api_key,
            # None: the SDK's own choice. The app and the flow always resolve
            # ANTHROPIC_BASE_URL into the target, so only a caller passing None leaves it here.
            base_url=target.base_url,
            max_retries=0,
            timeout=timeout_s,
            http_client=http_client,
        )

    async def create(self, params: dict[str, Any]) -> Reply:
        raw = await self.client.messages.with_raw_response.create(**params)
        return Reply(message=await raw.parse(), headers=raw.headers)

    async def model_info(self, model: str) -> dict[str, Any]:
        """The Models API's entry for a model (capabilities, max_tokens, max_input_tokens)."""
        info: dict[str, Any] = (await self.client.models.retrieve(model)).model_dump()
        return info

    async def count_tokens(self, params: dict[str, Any]) -> int:
        body = {k: v for k, v in params.items() if k != "max_tokens"}  # not a count's field
        return int((await self.client.messages.count_tokens(**body)).input_tokens)

    async def aclose(self) -> None:
        await self.client.close()

    # -- Message Batches ---------------------------------------------------------------------

    async def create_batch(self, requests: list[dict[str, Any]]) -> BatchStatus:
        return _status(await self.client.messages.batches.create(requests=requests))  # type: ignore[arg-type]

    async def retrieve_batch(self, batch_id: str) -> BatchStatus:
        return _status(await self.client.messages.batches.retrieve(batch_id))

    async def cancel_batch(self, batch_id: str) -> BatchStatus:
        return _status(await self.client.messages.batches.cancel(batch_id))

    async def batch_results(self, batch_id: str) -> AsyncIterator[BatchOutcome]:
        async for item in await self.client.messages.batches.results(batch_id):
            result = item.result
            if result.type == "succeeded":
                yield BatchOutcome(item.custom_id, "succeeded", message=result.message)
            elif result.type == "errored":
                error = result.error.error
                yield BatchOutcome(
                    item.custom_id, "errored", error_type=error.type, error_message=error.message
                )
            else:
                yield BatchOutcome(item.custom_id, result.type)

    async def recent_batches(self, limit: int) -> AsyncIterator[BatchStatus]:
        """The key's batches, newest first (for finding one whose id was never recorded)."""
        seen = 0
        async for batch in self.client.messages.batches.list(limit=min(limit, 100)):
            yield _status(batch)
            seen += 1
            if seen >= limit:
                return


def _status(batch: anthropic.types.messages.MessageBatch) -> BatchStatus:
    counts = batch.request_counts
    return BatchStatus(
        id=batch.id,
        processing_status=batch.processing_status,
        counts={
            "processing": counts.processing,
            "succeeded": counts.succeeded,
            "errored": counts.errored,
            "canceled": counts.canceled,
            "expired": counts.expired,
        },
        created_at=batch.created_at,
    )
