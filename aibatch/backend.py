"""The one small interface in front of the Messages API.

`MessagesBackend` is all the engine knows. `AnthropicBackend` implements it with the real
SDK, and that same class talks to the simulator: the simulator is an HTTP endpoint, so
nothing in aibatch works only against it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import anthropic
import httpx2

from aibatch.policy import REQUEST_TIMEOUT_S


@dataclass(frozen=True)
class Reply:
    """A successful Message and the response headers (rate-limit state lives there)."""

    message: anthropic.types.Message
    headers: Mapping[str, str]


class MessagesBackend(Protocol):
    async def create(self, params: dict[str, Any]) -> Reply: ...

    async def aclose(self) -> None: ...


class MissingAPIKey(RuntimeError):
    pass


class AnthropicBackend:
    """The SDK's async client with its own retries off: aibatch owns the only retry loop."""

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        max_connections: int = 256,
        timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        key = api_key or os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise MissingAPIKey("no API key: set ANTHROPIC_API_KEY")
        # A bare httpx2 client would cap us at 100 connections / 20 keep-alive; size the
        # pool for the concurrency we run at.
        limits = httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self.client = anthropic.AsyncAnthropic(
            api_key=key,
            base_url=base_url,  # None: the SDK reads ANTHROPIC_BASE_URL, else the real API
            max_retries=0,
            timeout=timeout_s,
            http_client=anthropic.DefaultAsyncHttpxClient(limits=limits, timeout=timeout_s),
        )

    async def create(self, params: dict[str, Any]) -> Reply:
        raw = await self.client.messages.with_raw_response.create(**params)
        return Reply(message=await raw.parse(), headers=raw.headers)

    async def aclose(self) -> None:
        await self.client.close()
