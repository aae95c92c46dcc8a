"""Server-side buckets on a fake clock: refill, burst, output debt, header values."""

from __future__ import annotations

from aibatch.simulator.ratelimit import Bucket, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_holds_burst_seconds_of_the_minute_limit_and_refills_continuously() -> None:
    clock = FakeClock()
    bucket = Bucket(limit=600, burst_seconds=2, clock=clock)
    assert bucket.capacity == 20
    bucket.take(20)
    assert bucket.seconds_until(1) == 0.1  # 10 per second
    clock.now += 0.5
    assert bucket.refill() == 5
    clock.now += 100
    assert bucket.refill() == 20  # never above capacity


def test_limiter_refuses_with_the_wait_of_the_binding_limit() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, itpm=6_000, otpm=None, burst_seconds=60, clock=clock)
    assert limiter.admit(5_000).admitted
    refused = limiter.admit(2_000)  # 1,000 left, 100 per second
    assert not refused.admitted
    assert refused.limited_by == "input_tokens"
    assert refused.retry_after_s == 10
    clock.now += 10
    assert limiter.admit(2_000).admitted


def test_output_debt_blocks_new_requests_until_repaid() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, itpm=None, otpm=600, burst_seconds=60, clock=clock)
    assert limiter.admit(10).admitted
    limiter.charge_output(900)  # 300 tokens of debt at 10 per second
    refused = limiter.admit(10)
    assert not refused.admitted and refused.limited_by == "output_tokens"
    assert 30 <= refused.retry_after_s <= 30.2
    clock.now += 31
    assert limiter.admit(10).admitted


def test_a_request_larger_than_the_bucket_still_passes_when_the_bucket_is_full() -> None:
    limiter = RateLimiter(rpm=None, itpm=60_000, otpm=None, burst_seconds=1, clock=FakeClock())
    assert limiter.admit(5_000).admitted  # capacity is 1,000: it waits for full, not forever


def test_headers_report_remaining_rounded_tokens_and_reset() -> None:
    clock = FakeClock()
    limiter = RateLimiter(
        rpm=50,
        itpm=40_000,
        otpm=8_000,
        burst_seconds=60,
        clock=clock,
        wall_clock=lambda: 1_800_000_000.0,
    )
    limiter.admit(2_500)
    headers = limiter.headers()
    assert headers["anthropic-ratelimit-requests-remaining"] == "49"
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "37000"  # 37,500 rounded
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == "8000"
    assert headers["anthropic-ratelimit-tokens-limit"] == "8000"
    # 2,500 input tokens refill at 40,000/min: full again 3.75 s later, shown to the second
    assert headers["anthropic-ratelimit-input-tokens-reset"] == "2027-01-15T08:00:04Z"
    assert headers["anthropic-ratelimit-output-tokens-reset"] == "2027-01-15T08:00:00Z"


def test_a_sliding_window_admits_no_more_than_its_share_in_any_span() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, itpm=None, otpm=None, burst_seconds=2, clock=clock,
                          window="sliding")  # fmt: skip
    for _ in range(20):
        assert limiter.admit(0).admitted
    refused = limiter.admit(0)
    assert not refused.admitted and refused.retry_after_s == 2.0
    clock.now += 1.0  # a bucket would have refilled 10 by now; the window none
    assert not limiter.admit(0).admitted
    clock.now += 1.0
    assert limiter.admit(0).admitted  # the first twenty have left the window


def test_a_limit_changed_while_running_keeps_what_its_bucket_holds() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, itpm=None, otpm=None, burst_seconds=2, clock=clock)
    for _ in range(20):
        limiter.admit(0)
    assert limiter.set_limits(rpm=300, itpm=None, otpm=None)  # another client takes half
    assert not limiter.admit(0).admitted  # no fresh burst with the new limit
    clock.now += 0.2
    assert limiter.admit(0).admitted  # refilling at 5/s now: one after 0.2 s
    assert not limiter.set_limits(rpm=300, itpm=1_000, otpm=None)  # a new limit: rebuild


def test_another_client_of_the_key_lowers_what_remains_at_its_rate() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, itpm=60_000, otpm=None, burst_seconds=60, clock=clock)
    limiter.set_other_client(rpm=120, itpm=30_000)  # 2 requests and 500 tokens a second
    for _ in range(100):
        assert limiter.admit(300).admitted  # 100 requests, 30,000 tokens
    clock.now += 10
    headers = limiter.headers()
    # alone, 10 s at 10/s would have refilled the 100; the colleague took 20 of them
    assert headers["anthropic-ratelimit-requests-remaining"] == "580"
    # 30,000 + 10 s x (1,000 - 500) per second, where alone it would be 40,000
    assert headers["anthropic-ratelimit-input-tokens-remaining"] == "35000"


def test_a_greedy_other_client_takes_only_what_there_is_and_starves_ours() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, itpm=None, otpm=None, burst_seconds=60, clock=clock)
    limiter.set_other_client(rpm=120, itpm=None)  # twice the limit, refilled at 1/s
    clock.now += 20
    assert limiter.headers()["anthropic-ratelimit-requests-remaining"] == "40"
    clock.now += 600
    assert limiter.requests is not None and limiter.requests.refill() == 0  # never in debt
    refused = limiter.admit(0)
    assert not refused.admitted and refused.limited_by == "requests"
    limiter.set_other_client(rpm=None, itpm=None)  # the colleague stops
    clock.now += 1
    assert limiter.admit(0).admitted


def test_another_client_repays_no_debt_of_ours_and_a_same_rate_keeps_its_pace() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=None, itpm=60_000, otpm=None, burst_seconds=1, clock=clock)
    limiter.set_other_client(rpm=None, itpm=30_000)
    assert limiter.admit(3_000).admitted  # 2,000 tokens of debt on a 1,000 bucket
    clock.now += 2  # repaid at the full 1,000/s; only then does the colleague take
    limiter.set_other_client(rpm=None, itpm=30_000)  # unchanged: nothing restarts
    clock.now += 1
    assert limiter.input_tokens is not None and limiter.input_tokens.refill() == 500


def test_another_client_sends_into_a_sliding_window_too() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, itpm=None, otpm=None, burst_seconds=2, clock=clock,
                          window="sliding")  # fmt: skip
    limiter.set_other_client(rpm=300, itpm=None)  # 5 a second
    clock.now += 1
    admitted = 0
    while limiter.admit(0).admitted:
        admitted += 1
    assert admitted == 15  # the window holds 20; the colleague sent 5 in the last second
