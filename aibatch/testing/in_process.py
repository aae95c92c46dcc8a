"""The simulator in this process: the engine's and the run's tests, with no socket or thread.

`InProcessSimulator` answers through an httpx transport that calls the simulator's routes
directly, so everything above the transport is what a real run uses: `ApiTarget`, the
SDK's client, its parsing of messages and headers, its exception types. Only the network
is gone; the HTTP simulator (`SimulatorServer`) stays for the end-to-end, reliability and
deployment tests, which need a process boundary.

Written here because no library maps httpx requests onto the simulator's own request
type; the mapping is the few lines of `_SimulatorTransport`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx2

from aibatch.engine.backend import ApiTarget
from aibatch.simulator.api import SimulatedAPI
from aibatch.simulator.config import SimulatorConfig
from aibatch.simulator.http import Request, Response
from aibatch.simulator.server import SimulatorApp

IN_PROCESS_URL = "http://simulator.in-process"  # never resolved: the transport answers


class _SimulatorTransport(httpx2.AsyncBaseTransport):
    def __init__(self, app: SimulatorApp) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        asked = Request(
            method=request.method,
            path=request.url.path,
            query=dict(request.url.params),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            host=request.url.netloc.decode("ascii"),
        )
        reply = self.app(asked)
        if not isinstance(reply, Response):
            # The SDK's read timeout, which a socket would enforce: a slow answer times out.
            timeout = (request.extensions.get("timeout") or {}).get("read")
            try:
                reply = await asyncio.wait_for(reply, timeout)
            except TimeoutError:
                raise httpx2.ReadTimeout(
                    "the simulator answered too late", request=request
                ) from None
        if reply.drop:
            raise httpx2.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            )
        headers = {"content-type": reply.content_type, **reply.headers}
        return httpx2.Response(reply.status, headers=headers, content=reply.body, request=request)


class InProcessSimulator:
    """The simulator's API answered in this process; `target()` is what a run is handed."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.app = SimulatorApp(config or SimulatorConfig())
        self.base_url = IN_PROCESS_URL

    def target(self, api_key: str = "test-key") -> ApiTarget:
        return ApiTarget(api_key, self.base_url, transport=_SimulatorTransport(self.app))

    @property
    def api(self) -> SimulatedAPI:
        return self.app.api

    def stats(self) -> dict[str, Any]:
        return self.app.api.counters.snapshot()

    def configure(self, **changes: Any) -> None:
        self.app.api.reconfigure(changes)
