"""The simulator as strict and varied as the real world: gateways that pass only some
headers, a colleague on the same key, overloads with retry-after, outages, x-should-retry,
and the stats a benchmark reads a client's rate from."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from aibatch.simulator import OutageWindow, SimulatorServer
from tests.conftest import sdk_client

StartSimulator = Callable[..., SimulatorServer]
RATELIMIT = "anthropic-ratelimit-"


def hello(**change: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": "claude-haiku-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "<ticket>My invoice is wrong.</ticket>"}],
    }
    return {**params, **change}


def test_a_gateway_passes_only_the_combined_tokens_headers(
    start_simulator: StartSimulator,
) -> None:
    server = start_simulator(
        rpm=60, itpm=100_000, otpm=20_000, burst_seconds=1, ratelimit_header_set="tokens"
    )
    client = sdk_client(server)
    raw = client.messages.with_raw_response.create(**hello())
    with pytest.raises(anthropic.RateLimitError) as caught:  # 1 request a second at most
        client.messages.create(**hello())
    for headers in (raw.headers, caught.value.response.headers):
        sent = sorted(h for h in headers if h.startswith(RATELIMIT))
        assert sent == [f"{RATELIMIT}tokens-{part}" for part in ("limit", "remaining", "reset")]
        assert headers[f"{RATELIMIT}tokens-limit"] == "20000"  # the most restrictive
    assert caught.value.response.headers["retry-after"] == "1"


def test_another_client_on_the_key_lowers_remaining_and_causes_429s(
    start_simulator: StartSimulator,
) -> None:
    server = start_simulator(rpm=600, burst_seconds=60)
    ours, theirs = sdk_client(server), sdk_client(server)
    ours.messages.create(**hello())
    shared = theirs.messages.with_raw_response.create(**hello())  # one bucket for the key
    assert shared.headers[f"{RATELIMIT}requests-remaining"] == "598"

    server.configure(other_client_rpm=60_000)  # 1,000 a second, limited to what is there
    first = ours.messages.with_raw_response.create(**hello())
    time.sleep(0.3)
    second = ours.messages.with_raw_response.create(**hello())
    remaining = [int(r.headers[f"{RATELIMIT}requests-remaining"]) for r in (first, second)]
    assert remaining[0] - remaining[1] >= 150, remaining  # 1 of them ours
    time.sleep(1.0)  # the colleague has emptied the bucket by now
    with pytest.raises(anthropic.RateLimitError) as caught:  # our 5th in 2 s, of 600/min
        ours.messages.create(**hello())
    assert caught.value.response.headers[f"{RATELIMIT}requests-remaining"] == "0"
    assert server.stats()["by_status"] == {"200": 4, "429": 1}


@pytest.mark.parametrize(
    ("status", "error_class", "error_type", "message"),
    [
        (529, anthropic.OverloadedError, "overloaded_error", "Overloaded"),
        (503, anthropic.ServiceUnavailableError, "api_error", "Service Unavailable"),
    ],
)
def test_overloads_carry_retry_after_when_the_server_says_when(
    start_simulator: StartSimulator,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
    message: str,
) -> None:
    fault = {"p529": 1.0} if status == 529 else {"p503": 1.0}
    server = start_simulator(**fault)
    client = sdk_client(server)
    with pytest.raises(error_class) as caught:
        client.messages.create(**hello())
    assert caught.value.status_code == status
    assert caught.value.type == error_type and caught.value.api_message == message
    assert "retry-after" not in caught.value.response.headers  # by default none

    server.configure(overload_retry_after_s=2.5)
    with pytest.raises(error_class) as caught:
        client.messages.create(**hello())
    assert caught.value.response.headers["retry-after"] == "3"  # whole seconds, rounded up
    assert caught.value.response.headers["retry-after-ms"] == "2500"


def test_the_sdk_waits_as_long_as_retry_after_ms_says(start_simulator: StartSimulator) -> None:
    server = start_simulator(first_529s=1, overload_retry_after_s=0.05)
    started = time.monotonic()
    sdk_client(server, max_retries=1).messages.create(**hello())  # the retry passes
    # 50 ms: neither the whole second of retry-after nor the SDK's own 0.375 s or more
    assert 0.05 <= time.monotonic() - started < 0.3


@pytest.mark.parametrize(
    ("status", "error_class"),
    [(529, anthropic.OverloadedError), (503, anthropic.ServiceUnavailableError)],
)
def test_an_outage_answers_every_message_with_an_overload_then_ends(
    start_simulator: StartSimulator, status: int, error_class: type[anthropic.APIStatusError]
) -> None:
    server = start_simulator(
        outages=[OutageWindow(start_s=0, duration_s=0.8)], outage_status=status
    )
    client = sdk_client(server)
    with pytest.raises(error_class):
        client.messages.create(**hello())
    with pytest.raises(error_class):  # even one the API would refuse as invalid
        client.messages.create(**hello(messages=[]))
    time.sleep(0.9)
    client.messages.create(**hello())
    stats = server.stats()
    assert stats["outage_answers"] == 2
    assert stats["by_status"] == {str(status): 2, "200": 1}


def test_an_outage_window_is_parsed_like_a_storm() -> None:
    assert OutageWindow.parse("30:1e9") == OutageWindow(start_s=30, duration_s=1e9)
    with pytest.raises(ValueError, match="outage window"):
        OutageWindow.parse("soon")


def _should_retry(client: anthropic.Anthropic, **change: Any) -> str | None:
    with pytest.raises(anthropic.APIStatusError) as caught:
        client.messages.create(**hello(**change))
    value: str | None = caught.value.response.headers.get("x-should-retry")
    return value


def test_x_should_retry_on_every_error_when_asked(start_simulator: StartSimulator) -> None:
    server = start_simulator(rpm=60, burst_seconds=1)
    client = sdk_client(server)
    assert _should_retry(client, messages=[]) is None  # by default only on 500 and 529
    server.configure(p529=1.0)
    assert _should_retry(client) == "true"

    server.configure(p529=0.0, send_should_retry=True)
    assert "x-should-retry" not in client.messages.with_raw_response.create(**hello()).headers
    assert _should_retry(client) == "true"  # 429: the bucket holds one request
    assert _should_retry(client, messages=[]) == "false"  # 400
    assert _should_retry(client, model="claude-nonexistent-9") == "false"  # 404
    for fault in ("p529", "p500", "p503"):
        server.configure(**{"p529": 0.0, "p500": 0.0, "p503": 0.0, fault: 1.0})
        assert _should_retry(client) == "true", fault


def test_stats_say_when_messages_began_and_when_the_last_was_answered(
    start_simulator: StartSimulator,
) -> None:
    server = start_simulator(latency_ms=100)
    client = sdk_client(server)
    client.messages.count_tokens(**{k: v for k, v in hello().items() if k != "max_tokens"})
    stats = server.stats()
    assert stats["first_message_at"] is None and stats["last_answer_at"] is None

    before = time.time()
    client.messages.create(**hello())
    after_ok = time.time()
    stats = server.stats()
    assert before <= stats["first_message_at"] < stats["last_answer_at"] <= after_ok
    assert stats["last_answer_at"] - stats["first_message_at"] >= 0.1  # the latency
    first = stats["first_message_at"]

    with pytest.raises(anthropic.BadRequestError):  # an error is an answer too
        client.messages.create(**hello(messages=[]))
    stats = server.stats()
    assert stats["first_message_at"] == first
    assert after_ok <= stats["last_answer_at"] <= time.time()
