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
         Action.FAIL_ROW, Cause.REQUEST),
        (status_error(anthropic.NotFoundError, 404, "not_found_error"),
         Action.FAIL_ROW, Cause.REQUEST),
        (status_error(anthropic.ContentTooLargeError, 413, "request_too_large"),
         Action.FAIL_ROW, Cause.REQUEST),
        (status_error(anthropic.AuthenticationError, 401, "authentication_error"),
         Action.STOP_RUN, Cause.REFUSED),
        (status_error(anthropic.PermissionDeniedError, 403, "permission_error"),
         Action.STOP_RUN, Cause.REFUSED),
        (InvalidModelOutput("label 'x' is not one of a, b"), Action.FAIL_ROW, Cause.OUTPUT),
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
        Action.FAIL_ROW
    ]
    assert all(d.error_type == "truncated" and d.stop_reason == "max_tokens" for d in grows)
    assert all(d.delay_s == 0 and not d.congestion for d in grows)
    # A full context window is not mended by more max_tokens: truncated at once.
    window = policy.decide(Truncated("model_context_window_exceeded"), 0, rng)
    assert window.action is Action.FAIL_ROW and window.error_type == "truncated"
    assert window.stop_reason == "model_context_window_exceeded"


def test_a_refusal_fails_the_ticket_with_its_category_and_is_never_retried() -> None:
    decision = policy.decide(Refused("cyber", "declined"), 0, random.Random(1))
    assert decision.action is Action.FAIL_ROW and decision.error_type == "refusal"
    assert decision.stop_reason == "refusal" and "cyber" in decision.message


@pytest.mark.parametrize(
    ("cls", "status", "error_type", "cause"),
    [
        (anthropic.OverloadedError, 529, "overloaded_error", Cause.OVERLOADED),
        (anthropic.ServiceUnavailableError, 503, "api_error", Cause.OVERLOADED),
        (anthropic.InternalServerError, 500, "api_error", Cause.SERVER),
        (anthropic.RateLimitError, 429, "rate_limit_error", Cause.RATE_LIMITED),
    ],
)  # fmt: skip
def test_retry_after_is_honoured_on_every_status_that_carries_it(
    cls: type[anthropic.APIStatusError], status: int, error_type: str, cause: Cause
) -> None:
    """The SDK honours `retry-after` on every status: so do we (it was 0.3-0.5 s of backoff
    on a 529 that said 3 s)."""
    error = status_error(cls, status, error_type, {"retry-after": "3"})
    decision = policy.decide(error, attempt=0, rng=random.Random(1))
    assert decision.action is Action.RETRY_AFTER
    assert decision.cause is cause
    assert 3.0 <= decision.delay_s <= 3.0 * (1 + policy.RETRY_AFTER_JITTER)


def test_retry_after_ms_wins_and_an_http_date_is_read() -> None:
    both = {"retry-after-ms": "1500", "retry-after": "9"}
    error = status_error(anthropic.OverloadedError, 529, "overloaded_error", both)
    assert 1.5 <= policy.decide(error, 0, random.Random(2)).delay_s <= 1.5 * 1.25
    assert policy.server_wait_s({"retry-after": "Sun, 06 Dec 2026 10:00:07 GMT"},
                                now=1796551200.0) == pytest.approx(7.0)  # fmt: skip
    assert policy.server_wait_s({"retry-after": "soon"}) is None


def test_a_wait_past_a_minute_is_capped() -> None:
    error = status_error(anthropic.OverloadedError, 529, "overloaded_error", {"retry-after": "900"})
    assert policy.decide(error, 0, random.Random(3)).delay_s <= policy.RETRY_AFTER_MAX_S * 1.25


def test_x_should_retry_overrides_the_status() -> None:
    no = status_error(
        anthropic.OverloadedError, 529, "overloaded_error", {"x-should-retry": "false"}
    )
    decision = policy.decide(no, 0, random.Random(4))
    assert decision.action is Action.FAIL_ROW
    assert "not to retry" in decision.message
    yes = status_error(anthropic.ConflictError, 409, "api_error", {"x-should-retry": "true"})
    assert policy.decide(yes, 0, random.Random(4)).action is Action.BACKOFF
    bad = status_error(anthropic.BadRequestError, 400, "invalid_request_error",
                       {"x-should-retry": "true"})  # fmt: skip
    assert policy.decide(bad, 0, random.Random(4)).action is Action.BACKOFF


def test_a_429_without_retry_after_waits_for_the_exhausted_limits_reset() -> None:
    now = 1796551200.0  # 2026-12-06T10:00:00Z
    headers = {
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2026-12-06T10:00:04Z",
        "anthropic-ratelimit-tokens-remaining": "12000",
        "anthropic-ratelimit-tokens-reset": "2026-12-06T10:00:30Z",
    }
    assert policy.limit_reset_wait_s(headers, now=now) == pytest.approx(4.0)
    assert policy.limit_reset_wait_s({}, now=now) is None


@pytest.mark.parametrize(
    ("max_attempts", "caps"),
    [(6, [3, 4, 5, 6]), (4, [1, 2, 3, 4]), (1, [1, 1, 1, 1]), (2, [1, 2, 2, 2])],
)
def test_a_chunks_retries_share_the_rows_attempt_budget(max_attempts: int, caps: list[int]) -> None:
    """By the end of each run of its chunk (the first and three Prefect retries), a row has
    made at most this many attempts: never more than `max_attempts` in all."""
    assert [policy.attempt_cap(max_attempts, run, retries=3) for run in range(4)] == caps
    assert policy.attempt_cap(max_attempts, None) == max_attempts
