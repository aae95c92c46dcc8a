"""The retry policy's decision for every kind of error the API and the network produce."""

from __future__ import annotations

import random
from typing import Any

import anthropic
import httpx2
import pytest

from aibatch.engine import policy
from aibatch.engine.policy import Action, Cause
from aibatch.jobs.outputs import InvalidModelOutput, Refused, Truncated

REQUEST = httpx2.Request("POST", "http://127.0.0.1/v1/messages")


def status_error(
    cls: type[anthropic.APIStatusError],
    status: int,
    error_type: str,
    headers: dict[str, str] | None = None,
    details: dict[str, Any] | None = None,
) -> anthropic.APIStatusError:
    error: dict[str, Any] = {"type": error_type, "message": f"{error_type} happened"}
    if details:
        error["details"] = details
    body = {"type": "error", "error": error}
    response = httpx2.Response(status, json=body, headers=headers or {}, request=REQUEST)
    return cls(f"Error code: {status}", response=response, body=body)


@pytest.mark.parametrize(
    ("error", "action", "cause"),
    [
        (status_error(anthropic.RateLimitError, 429, "rate_limit_error", {"retry-after": "3"}),
         Action.RETRY_AFTER, Cause.RATE_LIMITED),
        (status_error(anthropic.RateLimitError, 429, "rate_limit_error"),
         Action.BACKOFF, Cause.RATE_LIMITED),
        (status_error(anthropic.EnforcedSpendLimitReachedError, 429, "rate_limit_error",
                      details={"error_code": "enforced_spend_limit_reached"}),
                       Action.STOP_RUN, Cause.REFUSED),
        (status_error(anthropic.OverloadedError, 529, "overloaded_error"),
         Action.BACKOFF, Cause.OVERLOADED),
        (status_error(anthropic.InternalServerError, 500, "api_error"),
         Action.BACKOFF, Cause.SERVER),
        (status_error(anthropic.GatewayTimeoutError, 504, "timeout_error"),
         Action.BACKOFF, Cause.SERVER),
        (anthropic.APIConnectionError(request=REQUEST), Action.BACKOFF, Cause.CONNECTION),
        (anthropic.APITimeoutError(request=REQUEST), Action.BACKOFF, Cause.CONNECTION),
        (status_error(anthropic.BadRequestError, 400, "invalid_request_error"),
         Action.FAIL_TICKET, Cause.REQUEST),
        (status_error(anthropic.NotFoundError, 404, "not_found_error"),
         Action.FAIL_TICKET, Cause.REQUEST),
        (status_error(anthropic.ContentTooLargeError, 413, "request_too_large"),
         Action.FAIL_TICKET, Cause.REQUEST),
        (status_error(anthropic.AuthenticationError, 401, "authentication_error"),
         Action.STOP_RUN, Cause.REFUSED),
        (status_error(anthropic.PermissionDeniedError, 403, "permission_error"),
         Action.STOP_RUN, Cause.REFUSED),
        (InvalidModelOutput("label 'x' is not one of a, b"), Action.FAIL_TICKET, Cause.OUTPUT),
    ],
)  # fmt: skip
def test_each_error_gets_its_action(error: BaseException, action: Action, cause: Cause) -> None:
    decision = policy.decide(error, attempt=0, rng=random.Random(1))
    assert decision.cause is cause
    assert decision.action is action
    assert decision.error_type == type(error).__name__
    assert decision.message


def test_retry_after_is_honoured_with_bounded_jitter() -> None:
    error = status_error(anthropic.RateLimitError, 429, "rate_limit_error", {"retry-after": "4"})
    delays = [policy.decide(error, 0, random.Random(seed)).delay_s for seed in range(200)]
    assert min(delays) >= 4.0
    assert max(delays) <= 4.0 * (1 + policy.RETRY_AFTER_JITTER)
    assert len({round(d, 3) for d in delays}) > 100  # spread out, not one thundering herd


def test_backoff_is_full_jitter_exponential_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(policy.BACKOFF_CAP_S, policy.BACKOFF_BASE_S * 2**attempt)
        delays = [policy.backoff_delay(attempt, rng) for _ in range(300)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # full jitter reaches up to the ceiling
        assert min(delays) < 0.2 * ceiling  # ... and down towards zero


def test_stop_messages_say_why() -> None:
    spend = status_error(
        anthropic.EnforcedSpendLimitReachedError,
        429,
        "rate_limit_error",
        details={"error_code": "enforced_spend_limit_reached"},
    )
    auth = status_error(anthropic.AuthenticationError, 401, "authentication_error")
    assert "spend limit" in policy.decide(spend, 0, random.Random()).message
    assert "refused the key" in policy.decide(auth, 0, random.Random()).message


def test_a_cut_short_answer_grows_a_bounded_number_of_times_then_is_truncated() -> None:
    rng = random.Random(1)
    cut = Truncated("max_tokens", 300)
    grows = [policy.decide(cut, attempt=g, rng=rng, grown=g) for g in range(3)]
    assert [d.action for d in grows] == [Action.GROW] * policy.TRUNCATION_RETRIES + [
        Action.FAIL_TICKET
    ]
    assert all(d.error_type == "truncated" and d.stop_reason == "max_tokens" for d in grows)
    assert all(d.delay_s == 0 and not d.congestion for d in grows)
    # A full context window is not mended by more max_tokens: truncated at once.
    window = policy.decide(Truncated("model_context_window_exceeded"), 0, rng)
    assert window.action is Action.FAIL_TICKET and window.error_type == "truncated"
    assert window.stop_reason == "model_context_window_exceeded"


def test_a_refusal_fails_the_ticket_with_its_category_and_is_never_retried() -> None:
    decision = policy.decide(Refused("cyber", "declined"), 0, random.Random(1))
    assert decision.action is Action.FAIL_TICKET and decision.error_type == "refusal"
    assert decision.stop_reason == "refusal" and "cyber" in decision.message
