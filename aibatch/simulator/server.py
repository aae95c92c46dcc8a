"""The simulator's HTTP face: routes around `SimulatedAPI`, on 127.0.0.1 only.

Two ways to run it: `serve_forever` (the `aibatch simulate-api` command) and
`SimulatorServer`, a context manager that runs it on a free port in a background thread
for tests and for the main command when no API key is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

import orjson

from aibatch.children import StartedInWith
from aibatch.simulator.api import APIErrorReply, SimulatedAPI, invalid
from aibatch.simulator.config import SimulatorConfig
from aibatch.simulator.http import Reply, Request, Response, start_server

LOOPBACK = "127.0.0.1"
_BATCHES = "/v1/messages/batches"


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, orjson.dumps(data), headers=headers or {})


def _not_found(request: Request) -> Response:
    return _json(
        {
            "type": "error",
            "error": {
                "type": "not_found_error",
                "message": f"{request.method} {request.path} not found",
            },
        },
        404,
    )


class SimulatorApp:
    """Routes and per-request bookkeeping (request ids, headers, in-flight counts)."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.api = SimulatedAPI(config)

    def __call__(self, request: Request) -> Reply:
        path = request.path.rstrip("/")
        if path.startswith("/_sim/"):
            return self.control(request, path[len("/_sim/") :])
        if not path.startswith("/v1/"):
            return _not_found(request)
        api = self.api
        request_id = api.next_id("req")
        try:
            api.check_auth(request.headers.get("x-api-key"), request.headers.get("authorization"))
            reply = self.route(request, path)
        except APIErrorReply as error:
            return self._error(error, request_id)
        if isinstance(reply, Response):
            reply.headers["request-id"] = request_id
            return reply
        return self._finish(reply, request_id)

    async def _finish(self, pending: Any, request_id: str) -> Response:
        try:
            response: Response = await pending
        except APIErrorReply as error:
            return self._error(error, request_id)
        response.headers["request-id"] = request_id
        return response

    def _error(self, error: APIErrorReply, request_id: str) -> Response:
        headers = {**self.api.ratelimit_headers(), **error.headers, "request-id": request_id}
        should_retry = self.api.should_retry(error.status)
        if should_retry is not None:
            headers["x-should-retry"] = should_retry
        return _json(error.body(request_id), error.status, headers)

    def route(self, request: Request, path: str) -> Reply:
        method = request.method
        if path == "/v1/messages" and method == "POST":
            return self.messages(request)
        if path == "/v1/messages/count_tokens" and method == "POST":
            body = self._body(request)
            return _json(self.api.count_tokens(body), headers=self.api.ratelimit_headers())
        if path.startswith("/v1/models/") and method == "GET":
            return _json(self.api.model_info(path.removeprefix("/v1/models/")))
        if path == _BATCHES:
            if method == "POST":
                return _json(self.api.create_batch(self._body(request)))
            if method == "GET":
                return self.list_batches(request)
        elif path.startswith(_BATCHES + "/"):
            batch_id, _, action = path[len(_BATCHES) + 1 :].partition("/")
            base_url = f"http://{request.host}"
            if action == "" and method == "GET":
                batch = self.api.get_batch(batch_id)
                self.api.counters.batch_polls += 1
                return _json(self.api.batch_view(batch, base_url))
            if action == "" and method == "DELETE":
                return _json(self.api.delete_batch(batch_id))
            if action == "cancel" and method == "POST":
                batch = self.api.cancel_batch(batch_id)
                return _json(self.api.batch_view(batch, base_url))
            if action == "results" and method == "GET":
                return self.batch_results(batch_id)
        return _not_found(request)

    def _body(self, request: Request) -> Any:
        try:
            return orjson.loads(request.body)
        except orjson.JSONDecodeError as exc:
            raise invalid(f"request body is not valid JSON: {exc}") from exc

    def messages(self, request: Request) -> Reply:
        api = self.api
        counters = api.counters
        counters.message_arrived()
        try:
            api.check_outage()
            body = api.validate(self._body(request))
            betas = request.headers.get("anthropic-beta", "")
            outcome, answer, latency = api.decide(
                body, frozenset(b.strip() for b in betas.split(",") if b.strip())
            )
        except APIErrorReply as error:
            counters.count_status(error.status)
            raise
        if latency <= 0 and outcome == "ok" and answer is not None:
            counters.max_in_flight = max(counters.max_in_flight, counters.in_flight + 1)
            return self._deliver(answer)
        counters.in_flight += 1
        counters.max_in_flight = max(counters.max_in_flight, counters.in_flight)
        return self._deliver_later(outcome, answer, latency)

    def _deliver(self, answer: Any) -> Response:
        api = self.api
        api.remember_cache(answer.cache_writes)
        api.counters.paid(answer)
        api.counters.count_status(200)
        return _json(answer.message, headers=api.ratelimit_headers())

    async def _deliver_later(self, outcome: str, answer: Any, latency: float) -> Response:
        counters = self.api.counters
        try:
            await asyncio.sleep(latency)
            if outcome == "drop" or answer is None:
                counters.dropped += 1
                return Response(500, b"", drop=True)
            if outcome == "slow":
                counters.slow += 1
            return self._deliver(answer)
        finally:
            counters.in_flight -= 1

    def list_batches(self, request: Request) -> Response:
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError as exc:
            raise invalid("limit: Input should be a valid integer") from exc
        if not 1 <= limit <= 1000:
            raise invalid("limit: Input should be between 1 and 1000")
        page = self.api.list_batches(
            limit, request.query.get("after_id"), request.query.get("before_id")
        )
        for view in page["data"]:
            if view["results_url"]:
                view["results_url"] = f"http://{request.host}{view['results_url']}"
        return _json(page)

    def batch_results(self, batch_id: str) -> Response:
        batch = self.api.get_batch(batch_id)
        if batch.results is None:
            raise invalid(f"message batch {batch.id} has not finished processing")
        return Response(200, b"\n".join(batch.results) + b"\n", "application/x-jsonl")

    def control(self, request: Request, action: str) -> Response:
        """Endpoints outside /v1 for tests and benchmarks: stats, health, config, reset."""
        api = self.api
        if action == "stats" and request.method == "GET":
            return _json(api.counters.snapshot())
        if action == "health":
            return _json({"ok": True})
        if action == "config" and request.method == "POST":
            try:
                api.reconfigure(orjson.loads(request.body or b"{}"))
            except ValueError as exc:  # pydantic's ValidationError and orjson's are ValueErrors
                return _json({"error": str(exc)}, status=400)
        if action == "config":
            return _json(api.config.model_dump(exclude={"api_key"}))
        if action == "reset" and request.method == "POST":
            api.reset_counters()
            return _json({"ok": True})
        return _not_found(request)


def bind_loopback(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def _start(app: SimulatorApp, sock: socket.socket) -> asyncio.AbstractServer:
    return await start_server(app, sock, app.api.config.max_body_bytes)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (it halves the simulator's CPU per request), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_event_loop(main: Any) -> None:
    loop = new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()


def serve_forever(
    config: SimulatorConfig,
    port: int,
    announce: Callable[[str], None] = print,
    until_stdin_closes: bool = False,
) -> None:
    """Run the simulator in this process until interrupted, or, with `until_stdin_closes`,
    until standard input reaches its end: the parent that holds the pipe's other end has
    exited, even by kill -9, which lets no parent stop its children."""

    async def main() -> None:
        sock = bind_loopback(port)
        server = await _start(SimulatorApp(config), sock)
        announce(f"http://{LOOPBACK}:{sock.getsockname()[1]}")
        async with server:
            if until_stdin_closes:
                await asyncio.to_thread(sys.stdin.buffer.read)  # returns at end of input
            else:
                await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        run_event_loop(main())


class SimulatorServer(StartedInWith):
    """The simulator on a free loopback port, in a background thread; stop() cleans up.

    >>> with SimulatorServer(SimulatorConfig(rpm=600)) as sim:
    ...     client = anthropic.Anthropic(base_url=sim.base_url, api_key="x", max_retries=0)
    """

    def __init__(self, config: SimulatorConfig | None = None, port: int = 0) -> None:
        self.app = SimulatorApp(config or SimulatorConfig())
        self._sock = bind_loopback(port)
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def api(self) -> SimulatedAPI:
        return self.app.api

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(target=self._run, name="aibatch-simulator", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise RuntimeError("the simulator failed to start") from self._error
        return self

    def _run(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        try:
            self._server = loop.run_until_complete(_start(self.app, self._sock))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        loop.run_forever()
        self._server.close()
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the server's loop, where the simulator's state lives."""
        if self._loop is None:
            return fn()

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call(self.api.counters.snapshot)
        return result

    def configure(self, **changes: Any) -> None:
        self.call(lambda: self.api.reconfigure(changes))

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop = None
