"""The simulator as the real anthropic SDK sees it: answers, errors, headers, batches."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx2
import pytest

from aibatch.simulator import SimulatorServer, StormWindow
from tests.conftest import sdk_client

LABELS = ["billing", "technical", "feature request", "other"]
BILLING_TICKET = (
    "I was charged twice for my subscription this month. The invoice shows two payments "
    "on my card. Please refund the duplicate charge."
)
LOGIN_TICKET = (
    "Since this morning I cannot log in. The login page shows an error and then crashes. "
    "I reset my password twice. My whole team is blocked by this bug. "
    "We use the desktop app on Windows."
)

StartSimulator = Callable[..., SimulatorServer]


@pytest.fixture
def client(simulator: SimulatorServer) -> anthropic.Anthropic:
    """The SDK against the simulator, its own retries off (as aibatch runs it)."""
    return sdk_client(simulator)


def classify_params(ticket: str, model: str = "claude-haiku-4-5") -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 64,
        "system": "Classify the support ticket.",
        "messages": [{"role": "user", "content": f"<ticket>{ticket}</ticket>"}],
        "tools": [
            {
                "name": "record_label",
                "input_schema": {
                    "type": "object",
                    "properties": {"label": {"type": "string", "enum": LABELS}},
                    "required": ["label"],
                },
            }
        ],
        "tool_choice": {"type": "tool", "name": "record_label"},
    }


def summary_params(ticket: str) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 200,
        "system": "Summarise the support ticket in at most two sentences.",
        "messages": [{"role": "user", "content": f"<ticket>{ticket}</ticket>"}],
    }


def test_classification_is_a_tool_use_with_a_label_from_the_request(
    client: anthropic.Anthropic,
) -> None:
    billing = client.messages.create(**classify_params(BILLING_TICKET))
    technical = client.messages.create(**classify_params(LOGIN_TICKET))

    assert billing.stop_reason == "tool_use"
    block = billing.content[0]
    assert isinstance(block, anthropic.types.ToolUseBlock)
    assert block.name == "record_label"
    assert block.input == {"label": "billing"}
    technical_block = technical.content[0]
    assert isinstance(technical_block, anthropic.types.ToolUseBlock)
    assert technical_block.input == {"label": "technical"}
    assert billing.usage.input_tokens > 0 and billing.usage.output_tokens > 0
    assert billing.usage.cache_read_input_tokens == 0
    assert billing.usage.cache_creation_input_tokens == 0


def test_labels_listed_in_the_prompt_are_used_without_tools(simulator: SimulatorServer) -> None:
    client = sdk_client(simulator)
    message = client.messages.create(
        model="claude-haiku-4-5",
        max_tokens=10,
        system="Answer with exactly one of: refund, outage, praise",
        messages=[{"role": "user", "content": "<ticket>Please refund my refund request.</ticket>"}],
    )
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    assert block.text == "refund"


def test_summary_is_extractive_and_the_same_for_the_same_request(
    client: anthropic.Anthropic,
) -> None:
    first = client.messages.create(**summary_params(LOGIN_TICKET))
    second = client.messages.create(**summary_params(LOGIN_TICKET))

    text = first.content[0]
    assert isinstance(text, anthropic.types.TextBlock)
    assert first.content == second.content
    assert first.id != second.id
    sentences = [s for s in text.text.split(". ") if s]
    assert 1 <= len(sentences) <= 2
    assert all(s.rstrip(".") in LOGIN_TICKET for s in sentences)
    assert first.stop_reason == "end_turn"
    assert first.model == "claude-sonnet-4-6"


def test_max_tokens_truncates_the_answer(simulator: SimulatorServer) -> None:
    message = sdk_client(simulator).messages.create(
        **{**summary_params(LOGIN_TICKET), "max_tokens": 3}
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens <= 3


@pytest.mark.parametrize("window", ["bucket", "sliding"])
def test_rate_limit_429_has_retry_after_and_maps_to_rate_limit_error(
    start_simulator: StartSimulator, window: str
) -> None:
    server = start_simulator(rpm=60, burst_seconds=1, window=window)  # one request at once
    client = sdk_client(server)
    client.messages.create(**classify_params(BILLING_TICKET))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**classify_params(BILLING_TICKET))
    error = caught.value
    assert not isinstance(error, anthropic.EnforcedSpendLimitReachedError)
    assert error.type == "rate_limit_error"
    assert error.response.headers["retry-after"] == "1"  # whole seconds, rounded up
    assert error.response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert error.request_id and error.request_id.startswith("req_")


def test_a_429_may_come_without_retry_after(start_simulator: StartSimulator) -> None:
    server = start_simulator(rpm=60, burst_seconds=1, send_retry_after=False)
    client = sdk_client(server)
    client.messages.create(**classify_params(BILLING_TICKET))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**classify_params(BILLING_TICKET))
    assert "retry-after" not in caught.value.response.headers


def test_spend_cap_maps_to_its_subclass_and_has_no_retry_after(
    start_simulator: StartSimulator,
) -> None:
    server = start_simulator(spend_cap_after=1)
    client = sdk_client(server)
    client.messages.create(**classify_params(BILLING_TICKET))
    with pytest.raises(anthropic.EnforcedSpendLimitReachedError) as caught:
        client.messages.create(**classify_params(BILLING_TICKET))
    assert caught.value.error_code == "enforced_spend_limit_reached"
    assert "retry-after" not in caught.value.response.headers

    server.configure(spend_cap_after=None)  # the cap is lifted: requests pass again
    client.messages.create(**classify_params(BILLING_TICKET))


@pytest.mark.parametrize(
    ("config", "error_class", "not_class"),
    [
        ({"p529": 1.0}, anthropic.OverloadedError, None),
        ({"p500": 1.0}, anthropic.InternalServerError, anthropic.OverloadedError),
        ({"p_drop": 1.0}, anthropic.APIConnectionError, anthropic.APITimeoutError),
    ],
)
def test_injected_faults_map_to_sdk_exceptions(
    start_simulator: StartSimulator,
    config: dict[str, Any],
    error_class: type[Exception],
    not_class: type[Exception] | None,
) -> None:
    client = sdk_client(start_simulator(**config))
    with pytest.raises(error_class) as caught:
        client.messages.create(**classify_params(BILLING_TICKET))
    if not_class is not None:
        assert not isinstance(caught.value, not_class)


def test_the_first_n_messages_can_be_overloaded(start_simulator: StartSimulator) -> None:
    client = sdk_client(start_simulator(first_529s=2))
    for _ in range(2):
        with pytest.raises(anthropic.OverloadedError):
            client.messages.create(**classify_params(BILLING_TICKET))
    client.messages.create(**classify_params(BILLING_TICKET))  # the third passes


def test_a_slow_answer_times_the_client_out(start_simulator: StartSimulator) -> None:
    server = start_simulator(p_slow=1.0, slow_seconds=3)
    client = sdk_client(server, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(**classify_params(BILLING_TICKET))
    assert time.monotonic() - started < 2
    assert server.stats()["slow"] == 0  # still sleeping: the answer never reached anyone


def test_storm_window_answers_429_to_everything_then_stops(
    start_simulator: StartSimulator,
) -> None:
    server = start_simulator(storms=[StormWindow(start_s=0, duration_s=1.0)])
    client = sdk_client(server)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(**classify_params(BILLING_TICKET))
    assert int(caught.value.response.headers["retry-after"]) >= 1
    time.sleep(1.1)
    client.messages.create(**classify_params(BILLING_TICKET))


def test_api_key_is_checked_in_both_header_forms(start_simulator: StartSimulator) -> None:
    server = start_simulator(api_key="sk-right")
    with pytest.raises(anthropic.AuthenticationError):
        sdk_client(server, api_key="sk-wrong").messages.create(**classify_params(BILLING_TICKET))
    # SDK 2.10 sends `Authorization: Bearer`; older clients and curl users send x-api-key.
    sdk_client(server, api_key="sk-right").messages.create(**classify_params(BILLING_TICKET))
    raw = httpx2.post(
        f"{server.base_url}/v1/messages",
        json=classify_params(BILLING_TICKET),
        headers={"x-api-key": "sk-right", "anthropic-version": "2023-06-01"},
    )
    assert raw.status_code == 200
    missing = httpx2.post(f"{server.base_url}/v1/messages", json=classify_params(BILLING_TICKET))
    assert missing.status_code == 401
    assert missing.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    ("change", "error_class", "fragment"),
    [
        # Haiku 4.5 writes at most 64K tokens, so the context window is set below that.
        ({"max_tokens": 60_000}, anthropic.BadRequestError, "prompt is too long"),
        ({"max_tokens": 199_990}, anthropic.BadRequestError, "maximum allowed number of output"),
        ({"model": "claude-nonexistent-9"}, anthropic.NotFoundError, "model"),
        ({"messages": []}, anthropic.BadRequestError, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, anthropic.BadRequestError, "role"),
        (
            {"tool_choice": {"type": "tool", "name": "missing"}},
            anthropic.BadRequestError,
            "tool_choice",
        ),
        (
            {"tools": [{"name": "t", "input_schema": {"type": "array"}}], "tool_choice": None},
            anthropic.BadRequestError,
            "input_schema",
        ),
        ({"max_tokens": 0}, anthropic.BadRequestError, "max_tokens"),
    ],
)
def test_invalid_requests_are_refused_like_the_api(
    start_simulator: StartSimulator,
    change: dict[str, Any],
    error_class: type[anthropic.APIStatusError],
    fragment: str,
) -> None:
    client = sdk_client(start_simulator(context_window=60_000))
    params = {
        k: v for k, v in {**classify_params(BILLING_TICKET), **change}.items() if v is not None
    }
    with pytest.raises(error_class) as caught:
        client.messages.create(**params)
    assert fragment in str(caught.value.api_message)


def test_a_body_over_the_size_limit_is_413(start_simulator: StartSimulator) -> None:
    client = sdk_client(start_simulator(max_body_bytes=2_000))
    with pytest.raises(anthropic.ContentTooLargeError):
        client.messages.create(**summary_params("word " * 1_000))


def test_ratelimit_headers_are_present_and_consistent(start_simulator: StartSimulator) -> None:
    server = start_simulator(rpm=600, itpm=100_000, otpm=20_000, burst_seconds=60)
    client = sdk_client(server)
    remaining = []
    for _ in range(3):
        raw = client.messages.with_raw_response.create(**classify_params(BILLING_TICKET))
        headers = raw.headers
        assert headers["request-id"].startswith("req_")
        assert headers["anthropic-ratelimit-requests-limit"] == "600"
        assert headers["anthropic-ratelimit-input-tokens-limit"] == "100000"
        assert headers["anthropic-ratelimit-output-tokens-limit"] == "20000"
        for kind in ("input-tokens", "output-tokens", "tokens"):
            assert int(headers[f"anthropic-ratelimit-{kind}-remaining"]) % 1000 == 0
        # the combined view is the most restrictive of the two token limits
        assert headers["anthropic-ratelimit-tokens-limit"] == "20000"
        for kind in ("requests", "input-tokens", "output-tokens", "tokens"):
            reset = datetime.fromisoformat(headers[f"anthropic-ratelimit-{kind}-reset"])
            assert reset.tzinfo is not None
            assert reset >= datetime.now(UTC).replace(microsecond=0)
        remaining.append(int(headers["anthropic-ratelimit-requests-remaining"]))
    assert remaining[0] > remaining[1] > remaining[2]
    assert remaining[0] == 599


def test_ratelimit_headers_can_be_stripped_like_a_proxy_does(
    start_simulator: StartSimulator,
) -> None:
    server = start_simulator(rpm=600, send_ratelimit_headers=False)
    raw = sdk_client(server).messages.with_raw_response.create(**classify_params(BILLING_TICKET))
    assert not [h for h in raw.headers if h.startswith("anthropic-ratelimit")]
    assert raw.headers["request-id"]


def test_a_request_bucket_admits_its_rate_over_ten_seconds(
    start_simulator: StartSimulator,
) -> None:
    rpm, burst_seconds, duration = 1_200, 1.0, 10.0
    server = start_simulator(rpm=rpm, burst_seconds=burst_seconds)

    async def hammer() -> int:
        client = anthropic.AsyncAnthropic(
            base_url=server.base_url, api_key="k", max_retries=0, timeout=10
        )
        ok = 0
        deadline = time.monotonic() + duration

        async def worker() -> None:
            nonlocal ok
            while time.monotonic() < deadline:
                try:
                    await client.messages.create(**classify_params(BILLING_TICKET))
                    ok += 1
                except anthropic.RateLimitError:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(worker() for _ in range(16)))
        await client.close()
        return ok

    admitted = asyncio.run(hammer())
    burst = rpm * burst_seconds / 60
    expected = rpm / 60 * duration
    assert abs((admitted - burst) - expected) <= 0.05 * expected, admitted
    stats = server.stats()
    assert stats["by_status"]["200"] == admitted
    assert stats["by_status"]["429"] > 0


def test_count_tokens_matches_the_usage_of_the_same_prompt(simulator: SimulatorServer) -> None:
    client = sdk_client(simulator)
    params = classify_params(LOGIN_TICKET)
    counted = client.messages.count_tokens(
        model=params["model"],
        system=params["system"],
        messages=params["messages"],
        tools=params["tools"],
    )
    used = client.messages.create(**params).usage
    assert counted.input_tokens == used.input_tokens > 0
    assert simulator.stats()["count_tokens_requests"] == 1


def test_prompt_caching_writes_then_reads_the_shared_prefix(
    start_simulator: StartSimulator,
) -> None:
    server = start_simulator(cache_min_tokens=1024)
    client = sdk_client(server)
    instructions = "Label definitions: billing covers invoices and refunds. " * 120
    system = [{"type": "text", "text": instructions, "cache_control": {"type": "ephemeral"}}]

    def call(ticket: str) -> anthropic.types.Usage:
        params = {**classify_params(ticket), "system": system}
        usage: anthropic.types.Usage = client.messages.create(**params).usage
        return usage

    first, second, other = call(BILLING_TICKET), call(LOGIN_TICKET), call(BILLING_TICKET)
    assert first.cache_creation_input_tokens and first.cache_creation_input_tokens >= 1024
    assert first.cache_read_input_tokens == 0
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    assert second.input_tokens < first.cache_creation_input_tokens
    assert other.cache_read_input_tokens == first.cache_creation_input_tokens
    # a prefix shorter than the minimum is never cached
    short = [{"type": "text", "text": "Short.", "cache_control": {"type": "ephemeral"}}]
    usage = client.messages.create(**{**classify_params(BILLING_TICKET), "system": short}).usage
    assert usage.cache_creation_input_tokens == 0


def test_counters_track_in_flight_and_prompts_paid_twice(
    start_simulator: StartSimulator,
) -> None:
    server = start_simulator(latency_ms=200)

    async def send(n: int) -> None:
        client = anthropic.AsyncAnthropic(base_url=server.base_url, api_key="k", max_retries=0)
        tickets = [f"{BILLING_TICKET} Order {i}." for i in range(n)]
        await asyncio.gather(*(client.messages.create(**classify_params(t)) for t in tickets))
        await client.messages.create(**classify_params(tickets[0]))  # the same prompt again
        await client.close()

    asyncio.run(send(8))
    stats = server.stats()
    assert stats["max_in_flight"] == 8
    assert stats["in_flight"] == 0
    assert stats["prompts_paid_distinct"] == 8
    assert stats["prompts_paid_repeated"] == 1
    assert stats["by_status"] == {"200": 9}
    assert stats["input_tokens"] > 0 and stats["output_tokens"] > 0


def test_batches_round_trip_through_the_sdk(start_simulator: StartSimulator) -> None:
    server = start_simulator(batch_processing_seconds=0.5)
    client = sdk_client(server)
    requests = [
        {"custom_id": "t-1", "params": classify_params(BILLING_TICKET)},
        {"custom_id": "t-2", "params": classify_params(LOGIN_TICKET)},
        {"custom_id": "t-3", "params": {**classify_params(LOGIN_TICKET), "max_tokens": 0}},
    ]
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3 and batch.request_counts.succeeded == 0
    assert batch.results_url is None

    while (batch := client.messages.batches.retrieve(batch.id)).processing_status != "ended":
        time.sleep(0.1)
    assert batch.request_counts.succeeded == 2
    assert batch.request_counts.errored == 1
    assert batch.results_url and batch.results_url.startswith(server.base_url)

    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert set(results) == {"t-1", "t-2", "t-3"}
    first = results["t-1"]
    assert first.type == "succeeded"
    assert first.message.content[0].input == {"label": "billing"}  # type: ignore[union-attr]
    assert first.message.usage.service_tier == "batch"
    assert results["t-3"].type == "errored"

    listed = client.messages.batches.list(limit=10)
    assert [b.id for b in listed.data] == [batch.id]
    assert client.messages.batches.delete(batch.id).id == batch.id


def test_batch_cancel_and_expiry(start_simulator: StartSimulator) -> None:
    server = start_simulator(batch_processing_seconds=30)
    client = sdk_client(server)
    requests = [
        {"custom_id": f"id_{i}", "params": classify_params(BILLING_TICKET)} for i in range(4)
    ]
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    canceled = client.messages.batches.cancel(batch.id)
    assert canceled.processing_status in ("canceling", "ended")
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 4
    assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"canceled"}

    server.configure(batch_processing_seconds=0, batch_p_expired=1.0)
    expired = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert client.messages.batches.retrieve(expired.id).request_counts.expired == 4


@pytest.mark.parametrize(
    ("requests", "fragment"),
    [
        ([{"custom_id": "has space", "params": {}}], "custom_id"),
        ([{"custom_id": "x" * 65, "params": {}}], "custom_id"),
        ([{"custom_id": "a", "params": {}}, {"custom_id": "a", "params": {}}], "duplicate"),
        ([], "at least one"),
    ],
)
def test_batch_creation_validates_custom_ids(
    simulator: SimulatorServer, requests: list[dict[str, Any]], fragment: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        sdk_client(simulator).messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert fragment in str(caught.value.api_message)


def test_unknown_batch_is_404(simulator: SimulatorServer) -> None:
    with pytest.raises(anthropic.NotFoundError):
        sdk_client(simulator).messages.batches.retrieve("msgbatch_nope")
