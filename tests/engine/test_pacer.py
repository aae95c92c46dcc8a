"""The pacer and the concurrency controller on a fake clock: deterministic and fast."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from aibatch.engine import policy
from aibatch.engine.inflight import InFlightLimiter
from aibatch.engine.looplag import LoopLagProbe
from aibatch.engine.pacer import (
    ConcurrencyController,
    InputEstimator,
    Pacer,
    StormGate,
    TokenBucket,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    yield FakeClock()


def headers(rpm: int, itpm: int, otpm: int, remaining: int = 5) -> dict[str, str]:
    return {
        "anthropic-ratelimit-requests-limit": str(rpm),
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-input-tokens-limit": str(itpm),
        "anthropic-ratelimit-output-tokens-limit": str(otpm),
    }


def test_an_untold_pacer_waits_for_nothing_until_it_learns(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    assert pacer.wait_s(1_000) == 0
    pacer.reserve(1_000)
    assert not pacer.limits_known


def test_limits_are_learned_from_headers_and_paced_smoothly(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.observe_headers(headers(rpm=600, itpm=60_000, otpm=12_000))
    assert pacer.limits_known and pacer.headers_seen
    assert pacer.requests is not None and pacer.requests.rate_per_s == 10
    # learned buckets start empty: the requests that taught the limit already used it
    assert pacer.wait_s(0) == pytest.approx(0.1)
    clock.advance(1.0)  # a second's worth is the most a bucket holds
    sent = 0
    while pacer.wait_s(0) == 0:
        pacer.reserve(0)
        sent += 1
    assert sent == 10
    clock.advance(0.35)
    assert pacer.wait_s(0) == 0 and pacer.requests.level == pytest.approx(3.5)


def test_given_limits_win_over_headers(clock: FakeClock) -> None:
    pacer = Pacer(rpm=120, clock=clock)
    pacer.observe_headers(headers(rpm=6_000, itpm=1_000_000, otpm=100_000))
    assert pacer.requests is not None and pacer.requests.limit_per_min == 120
    assert pacer.input_tokens is not None and pacer.input_tokens.limit_per_min == 1_000_000


def test_a_changed_limit_in_the_headers_resizes_the_bucket(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.observe_headers(headers(rpm=600, itpm=60_000, otpm=12_000))
    pacer.observe_headers(headers(rpm=1_200, itpm=60_000, otpm=12_000))
    assert pacer.requests is not None and pacer.requests.rate_per_s == 20


def test_an_empty_server_bucket_empties_ours(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.observe_headers(headers(rpm=600, itpm=60_000, otpm=12_000))
    clock.advance(5)
    pacer.observe_headers(headers(rpm=600, itpm=60_000, otpm=12_000, remaining=0))
    assert pacer.wait_s(0) == pytest.approx(0.1)


def test_what_the_server_says_is_left_caps_ours(clock: FakeClock) -> None:
    """Another client of the same key spent most of the server's bucket: ours follows."""
    pacer = Pacer(clock=clock)
    pacer.observe_headers(headers(rpm=600, itpm=60_000, otpm=12_000))
    clock.advance(5)  # our buckets are full: 10 requests, 1,000 input tokens
    left = {**headers(rpm=600, itpm=60_000, otpm=12_000, remaining=3),
            "anthropic-ratelimit-input-tokens-remaining": "0"}  # fmt: skip
    pacer.observe_headers(left)
    assert pacer.requests is not None and pacer.input_tokens is not None
    assert pacer.requests.level == pytest.approx(3)
    assert pacer.input_tokens.level == pytest.approx(999)  # rounded down to thousands: <1,000


def test_tokens_are_reserved_from_estimates_and_settled_to_what_was_used(
    clock: FakeClock,
) -> None:
    pacer = Pacer(itpm=60_000, otpm=6_000, clock=clock)  # buckets of 1,000 and 100
    assert pacer.input_tokens is not None and pacer.output_tokens is not None
    first = pacer.reserve(400)
    assert first.output_tokens == 0  # no output seen yet: nothing reserved blindly
    assert pacer.input_tokens.level == 600
    pacer.settle(first, input_tokens=300, output_tokens=80)  # refund 100 input, charge 80
    assert pacer.input_tokens.level == 700
    assert pacer.output_tokens.level == 20
    assert pacer.output_estimate == 80
    second = pacer.reserve(300)
    assert second.output_tokens == 80  # reserved from what answers have been
    assert pacer.wait_s(0) > 0  # output is now the binding limit (20 - 80 < 0)
    pacer.release(second)  # an error: the reservation comes back
    assert pacer.output_tokens.level == 20


def send_at_the_rate(pacer: Pacer, clock: FakeClock, seconds: float) -> None:
    """Send as fast as the found rate allows, every answer clean, for `seconds`."""
    for _ in range(round(seconds / 0.01)):
        clock.advance(0.01)
        while pacer.wait_s(0) == 0:
            pacer.reserve(0)
        pacer.on_success()


def test_without_headers_a_429_sets_the_rate_just_under_what_got_through(
    clock: FakeClock,
) -> None:
    pacer = Pacer(clock=clock)
    sent = clock.now
    clock.advance(0.2)
    # The first 429, nothing known: 40/s got through, but that counts the burst an empty
    # window admits at the start, so half of it.
    pacer.on_rate_limited(observed_rps=40.0, sent_at=sent)
    assert pacer.aimd_rate == pytest.approx(20.0 * policy.AIMD_FIRST_CUT / 0.5)
    # Another 429 of a request sent before that cut: it says nothing about the new rate.
    pacer.on_rate_limited(observed_rps=12.0, sent_at=sent)
    assert pacer.aimd_rate == pytest.approx(20.0)
    clock.advance(0.3)
    pacer.on_success(sent_at=clock.now - 0.2)  # a clean answer: the start's burst drained
    pacer.on_rate_limited(observed_rps=19.5, sent_at=clock.now - 0.1)  # sent after it
    assert pacer.aimd_rate == pytest.approx(20 * 0.97)  # most got through: a step back
    clock.advance(0.3)
    pacer.on_rate_limited(observed_rps=10.0)  # allowed 19.4/s, but only 10/s got through
    assert pacer.aimd_rate == pytest.approx(9.7)
    clock.advance(0.3)
    pacer.on_rate_limited(observed_rps=0.0)  # nothing got through to measure: cut the rate
    assert pacer.aimd_rate == pytest.approx(9.7 * policy.AIMD_CUT)


def test_the_found_rate_is_probed_past_slowly_then_faster(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.aimd_rate = 10.0
    pacer.aimd_probe_per_s = policy.AIMD_PROBE_PER_S  # steady: probing at its slowest
    pacer.on_rate_limited(observed_rps=9.8)  # most got through: a step back
    send_at_the_rate(pacer, clock, 5.0)
    assert pacer.aimd_rate is not None
    # Just after the 429: within 3% of where it was set, under the limit it found.
    assert 9.7 < pacer.aimd_rate < 9.7 * 1.03 < 10
    # Clean for longer: the probe speeds up, so a limit that doubled is found in 20 s.
    send_at_the_rate(pacer, clock, 15.0)
    assert pacer.aimd_rate > 2 * 9.7


def test_a_long_calm_doubles_the_probe_twice_as_often(clock: FakeClock) -> None:
    """At a limit a 429 comes every few seconds; calm past AIMD_PROBE_QUIET_S says the
    limit rose or the key's other client left: the probe speeds up twice as fast."""
    pacer = Pacer(clock=clock)
    pacer.on_rate_limited(observed_rps=10.0)
    pacer.on_success(sent_at=clock.now + 0.01)  # drained
    clock.advance(0.5)
    pacer.on_rate_limited(observed_rps=10.0, sent_at=clock.now)  # a step back: at the limit
    start = pacer.probe_growth_per_s()
    clock.advance(policy.AIMD_PROBE_QUIET_S)
    calm = pacer.probe_growth_per_s()
    assert calm == pytest.approx(
        start * 2 ** (policy.AIMD_PROBE_QUIET_S / policy.AIMD_PROBE_DOUBLING_S)
    )
    clock.advance(policy.AIMD_PROBE_LATE_DOUBLING_S)
    assert pacer.probe_growth_per_s() == pytest.approx(2 * calm)


def test_after_a_fall_the_rate_climbs_back_faster_and_slows_with_each_step_back(
    clock: FakeClock,
) -> None:
    pacer = Pacer(clock=clock)
    pacer.aimd_rate = 20.0
    pacer.on_rate_limited(observed_rps=8.0)  # far less got through: the limit fell
    assert pacer.aimd_rate == pytest.approx(7.76)
    clock.advance(0.5)
    pacer.on_rate_limited(observed_rps=7.7)  # the fall's aftermath: a step back, as fast
    assert pacer.aimd_probe_per_s == pytest.approx(policy.AIMD_PROBE_AFTER_FALL_PER_S)
    send_at_the_rate(pacer, clock, 6.0)
    assert pacer.aimd_rate > 9.0  # 90% of a limit of 10 within 6.5 s
    # The first step back up there is past the last one: the probe keeps its speed; each
    # step back from about the same rate after it says the limit is there: it slows.
    expected = policy.AIMD_PROBE_AFTER_FALL_PER_S
    for _ in range(8):
        send_at_the_rate(pacer, clock, 1.0)
        pacer.on_rate_limited(observed_rps=pacer.aimd_rate)
        assert pacer.aimd_probe_per_s == pytest.approx(max(policy.AIMD_PROBE_PER_S, expected))
        expected /= 2
    assert pacer.aimd_probe_per_s == policy.AIMD_PROBE_PER_S


def test_falls_to_the_same_share_slow_the_probe_and_the_climb_back_is_steady(
    clock: FakeClock,
) -> None:
    """Another run of the key takes about half, again and again: each fall to about the
    same share is no new limit, so the probe slows; and climbing back to where it fell
    from, the probe does not speed up (two runs doing so overshoot together)."""
    pacer = Pacer(clock=clock)
    pacer.aimd_rate = 10.0
    pacer.on_rate_limited(observed_rps=5.0)  # a fall: 4.85/s, climbing back at 3%/s
    assert pacer.aimd_probe_per_s == pytest.approx(policy.AIMD_PROBE_AFTER_FALL_PER_S)
    send_at_the_rate(pacer, clock, 16.0)
    assert pacer.probe_growth_per_s() == pytest.approx(policy.AIMD_PROBE_AFTER_FALL_PER_S)
    assert pacer.aimd_rate is not None and pacer.aimd_rate < 4.85 * 1.03**16 * 1.01
    pacer.on_rate_limited(observed_rps=4.8)  # the same share again (of 7/s sent)
    assert pacer.aimd_probe_per_s == pytest.approx(policy.AIMD_PROBE_AFTER_FALL_PER_S / 2)


def test_a_step_back_past_the_last_one_keeps_the_probe_fast(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.on_rate_limited(observed_rps=10.0)  # the first 429: 9.7/s
    send_at_the_rate(pacer, clock, 1.0)
    pacer.on_rate_limited(observed_rps=9.7)
    assert pacer.aimd_probe_per_s == pytest.approx(policy.AIMD_PROBE_AFTER_FALL_PER_S)
    send_at_the_rate(pacer, clock, 1.0)
    pacer.on_rate_limited(observed_rps=9.5)  # the limit is where it was: slower
    assert pacer.aimd_probe_per_s == pytest.approx(policy.AIMD_PROBE_AFTER_FALL_PER_S / 2)
    send_at_the_rate(pacer, clock, 25.0)  # clean for long: it climbs, the limit rose
    assert pacer.aimd_rate is not None and pacer.aimd_rate > 1.5 * 9.5
    pacer.on_rate_limited(observed_rps=0.98 * pacer.send_rate())
    assert pacer.aimd_probe_per_s == pytest.approx(policy.AIMD_PROBE_AFTER_FALL_PER_S / 2)


def test_cuts_for_a_round_trip_with_no_clean_answer_pause_every_send(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    started = clock.now
    clock.advance(0.5)
    assert pacer.on_rate_limited(30.0, started, round_trip_s=0.2) == 0.0  # one cut
    clock.advance(0.01)
    pacer.on_success(sent_at=started)  # sent before the cut: says nothing about it
    # Requests sent after it refused as well, at first no sign: a clean answer would not
    # have had time to come back.
    for _ in range(3):
        clock.advance(0.05)
        assert pacer.on_rate_limited(29.0, clock.now - 0.01, round_trip_s=0.2) == 0.0
    clock.advance(0.05)  # a round trip of nothing but 429s: the server's window is full
    assert pacer.on_rate_limited(29.0, clock.now - 0.01, round_trip_s=0.2) == policy.AIMD_PAUSE_S
    paused = clock.now
    clock.advance(1.2)
    pacer.on_success(sent_at=paused + 1.0)  # sent after it, and clean
    clock.advance(0.5)
    assert pacer.on_rate_limited(25.0, clock.now - 0.1, round_trip_s=0.2) == 0.0
    clock.advance(0.3)
    pacer.on_success(sent_at=clock.now - 0.2)  # clean again: the next 429 starts afresh
    clock.advance(0.3)
    assert pacer.on_rate_limited(25.0, clock.now - 0.01, round_trip_s=0.2) == 0.0
    assert pacer.aimd_pauses == 1


def test_a_429_mid_climb_steps_back_from_what_was_sent_not_a_fall(clock: FakeClock) -> None:
    """Climbing, the answers lag what is sent: a 429 whose answers-per-second trail the
    rate it has reached is measured against what was sent, and is a step back."""
    pacer = Pacer(clock=clock)
    pacer.on_rate_limited(observed_rps=10.0)
    send_at_the_rate(pacer, clock, 2.0)
    sent = pacer.send_rate()
    pacer.aimd_rate = 1.2 * sent  # the probe has raised it past what the last 2 s sent
    pacer.on_rate_limited(observed_rps=0.9 * sent)
    assert pacer.aimd_rate == pytest.approx(policy.AIMD_MARGIN * sent)
    assert pacer.aimd_fell_from is None  # no fall: the probe goes on from here as usual


def test_a_request_or_two_short_at_a_few_per_second_is_no_fall(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.on_rate_limited(observed_rps=10.0)
    send_at_the_rate(pacer, clock, 2.0)
    sent = pacer.send_rate()
    pacer.on_rate_limited(observed_rps=sent - 1.0)  # two requests fewer over the 2 s
    assert pacer.aimd_fell_from is None
    pacer.on_rate_limited(observed_rps=sent / 2, sent_at=clock.now + 1)  # half: a fall
    assert pacer.aimd_fell_from is not None


def test_after_the_first_cut_refusals_until_a_clean_answer_only_pause(
    clock: FakeClock,
) -> None:
    """Nothing known, the first 429 cuts; the start's burst still fills the server's window,
    so what is refused until a clean answer comes back does not cut again (each would take
    3% off a rate that was never the problem); for a round trip of refusals, all pause."""
    pacer = Pacer(clock=clock)
    pacer.on_rate_limited(observed_rps=8.0, sent_at=clock.now - 0.1)
    first = pacer.aimd_rate
    assert first is not None and first == pytest.approx(policy.AIMD_FIRST_CUT * 8.0)
    clock.advance(0.1)
    assert pacer.on_rate_limited(observed_rps=8.0, sent_at=clock.now - 0.01, round_trip_s=0.2) == 0
    clock.advance(0.2)
    pause = pacer.on_rate_limited(observed_rps=8.0, sent_at=clock.now - 0.01, round_trip_s=0.2)
    assert pause == policy.AIMD_PAUSE_S and pacer.aimd_rate == first
    clock.advance(1.0)
    pacer.on_success(sent_at=clock.now - 0.2)  # sent after the cut, answered: it drained
    clock.advance(0.5)
    pacer.on_rate_limited(observed_rps=first, sent_at=clock.now - 0.01)  # now it counts
    assert pacer.aimd_rate is not None and pacer.aimd_rate < first


def test_after_the_first_cut_the_rate_climbs_back_fast_to_near_what_got_through(
    clock: FakeClock,
) -> None:
    """The first cut halves what got through, a guess for a bucket a burst emptied; under
    a sliding window what got through was the limit. So the climb back to most of it takes
    a few seconds, not the tens the probe would; past that point the probe is slow again."""
    pacer = Pacer(clock=clock)
    pacer.on_rate_limited(observed_rps=10.0, sent_at=clock.now - 0.1)
    assert pacer.aimd_rate == pytest.approx(policy.AIMD_FIRST_CUT * 10.0)
    target = policy.AIMD_FIRST_CLIMB_TO * 10.0
    pacer.on_success(sent_at=clock.now + 0.01)  # drained
    send_at_the_rate(pacer, clock, 2.0)
    assert pacer.aimd_rate is not None and 6.5 < pacer.aimd_rate < target
    send_at_the_rate(pacer, clock, 2.0)
    reached = pacer.aimd_rate
    assert reached is not None and target <= reached < 1.05 * target
    send_at_the_rate(pacer, clock, 1.0)  # probing past it: slowly again
    assert pacer.aimd_rate is not None and pacer.aimd_rate < 1.05 * reached
    # A later fall climbs back steadily, not fast: that rule is the first cut's alone.
    pacer.on_rate_limited(observed_rps=4.0, sent_at=clock.now + 1)
    fallen = pacer.aimd_rate
    send_at_the_rate(pacer, clock, 1.0)
    assert fallen is not None and pacer.aimd_rate is not None
    assert pacer.aimd_rate < 1.1 * fallen


def test_untold_sends_are_spread_at_the_ramp_rate_not_in_bursts(clock: FakeClock) -> None:
    """Nothing known, answers release bursts (slow start triples the slots each round
    trip); the ramp spreads them, so the first 429 is back before a window overflows."""
    pacer = Pacer(clock=clock)
    pacer.pace_ramp(None)  # no round trip seen yet: the first slots go at once
    assert pacer.wait_s(0) == 0
    pacer.pace_ramp(100.0)
    burst = 0
    while pacer.wait_s(0) == 0:
        pacer.reserve(0)
        burst += 1
    assert burst == policy.RAMP_BURST
    assert pacer.wait_s(0) == pytest.approx(0.01)
    pacer.on_rate_limited(observed_rps=8.0)  # a rate found: it paces, not the ramp
    pacer.pace_ramp(100.0)
    clock.advance(1.0)
    assert pacer.wait_s(0) == 0
    pacer.reserve(0)
    assert pacer.wait_s(0) == pytest.approx(1 / (policy.AIMD_FIRST_CUT * 8.0))


def test_the_found_rate_paces_smoothly_not_in_bursts(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.on_rate_limited(observed_rps=10.0)
    clock.advance(1.0)  # idle a second: a sliding window would refuse a second's burst
    sent = 0
    while pacer.wait_s(0) == 0:
        pacer.reserve(0)
        sent += 1
    assert sent <= 0.25 * 9.7 + 1


def test_aimd_rate_does_not_grow_while_it_goes_unused(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.on_rate_limited(observed_rps=40.0)
    for _ in range(200):  # 20 s of clean answers, sending 1/s: far below the allowed 20/s
        clock.advance(0.1)
        if round(clock.now * 10) % 10 == 0:
            pacer.reserve(0)
        pacer.on_success()
    assert pacer.aimd_rate == pytest.approx(20.0)


def test_a_429_lowers_the_rate_below_a_stated_limit(clock: FakeClock) -> None:
    """The stated limit is the key's: another run of the key takes half, so only half of
    ours gets through. The 429 teaches a rate under it, which the pacer then keeps to."""
    pacer = Pacer(clock=clock)
    pacer.observe_headers(headers(rpm=600, itpm=60_000, otpm=12_000, remaining=8))
    pacer.on_rate_limited(observed_rps=5.0)  # allowed 10/s by the header, 5/s got through
    assert pacer.aimd_rate == pytest.approx(4.85)
    clock.advance(10.0)
    sent = 0
    for _ in range(1000):  # ten seconds, sending whenever the pacer lets us
        clock.advance(0.01)
        while pacer.wait_s(0) == 0:
            pacer.reserve(0)
            sent += 1
    assert 45 <= sent <= 52  # 4.85/s, not the header's 10/s


def test_a_probe_back_at_the_stated_limit_hands_back_to_it(clock: FakeClock) -> None:
    """The other run finished: the probe climbs to the stated limit, which then governs."""
    pacer = Pacer(clock=clock)
    pacer.observe_headers(headers(rpm=600, itpm=60_000, otpm=12_000, remaining=8))
    pacer.on_rate_limited(observed_rps=5.0)
    send_at_the_rate(pacer, clock, 60.0)
    assert pacer.aimd_rate is None
    assert pacer.requests is not None and pacer.requests.rate_per_s == 10


def test_an_empty_server_bucket_holds_the_probe(clock: FakeClock) -> None:
    """`remaining` near zero: the key's limit is used up (by us and the others), so the
    found rate holds instead of climbing into the next 429."""
    pacer = Pacer(clock=clock)
    pacer.observe_headers(headers(rpm=1_200, itpm=600_000, otpm=120_000, remaining=15))
    pacer.on_rate_limited(observed_rps=9.0)
    held = pacer.aimd_rate
    for _ in range(300):  # 30 s of clean answers at our rate, the server's bucket empty
        clock.advance(0.1)
        while pacer.wait_s(0) == 0:
            pacer.reserve(0)
        pacer.observe_headers(headers(rpm=1_200, itpm=600_000, otpm=120_000, remaining=1))
        pacer.on_success()
    assert pacer.server_low
    assert pacer.aimd_rate == held
    pacer.observe_headers(headers(rpm=1_200, itpm=600_000, otpm=120_000, remaining=15))
    send_at_the_rate(pacer, clock, 5.0)  # room again: the probe climbs
    assert pacer.aimd_rate is not None and held is not None and pacer.aimd_rate > held


def test_a_raised_stated_limit_raises_the_found_share(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.observe_headers(headers(rpm=600, itpm=60_000, otpm=12_000))
    pacer.on_rate_limited(observed_rps=5.0)
    pacer.observe_headers(headers(rpm=1_200, itpm=60_000, otpm=12_000))
    assert pacer.aimd_rate == pytest.approx(9.7)


def tokens_only(limit: int, remaining: int) -> dict[str, str]:
    return {"anthropic-ratelimit-tokens-limit": str(limit),
            "anthropic-ratelimit-tokens-remaining": str(remaining)}  # fmt: skip


def test_a_gateways_combined_tokens_limit_paces_input_and_output(clock: FakeClock) -> None:
    """Only `anthropic-ratelimit-tokens-*` stated (a gateway): it may be either token
    limit, so a request's input and output both count against it."""
    pacer = Pacer(clock=clock)
    pacer.observe_headers(tokens_only(60_000, 50_000))  # 1,000 tokens/s
    assert pacer.tokens is not None and pacer.limits_known
    clock.advance(1.0)
    first = pacer.reserve(600)
    pacer.settle(first, input_tokens=600, output_tokens=300)
    assert pacer.tokens.level == pytest.approx(100)
    assert pacer.wait_s(600) == pytest.approx((600 + 300 - 100) / 1000)
    # Specific limits say more: the combined bucket gives way to them.
    pacer.observe_headers(headers(rpm=600, itpm=60_000, otpm=12_000))
    assert pacer.tokens is None and pacer.input_tokens is not None


def test_combined_tokens_remaining_caps_ours(clock: FakeClock) -> None:
    pacer = Pacer(clock=clock)
    pacer.observe_headers(tokens_only(600_000, 500_000))
    clock.advance(5.0)
    pacer.observe_headers(tokens_only(600_000, 0))
    assert pacer.tokens is not None and pacer.tokens.level == pytest.approx(999)


def test_concurrency_slow_starts_then_backs_off_and_recovers(clock: FakeClock) -> None:
    control = ConcurrencyController(clock=clock)
    assert control.current == policy.START_CONCURRENCY == 8
    for _ in range(8):  # one round trip at the limit triples it in slow start
        control.on_success(latency_s=0.2, in_flight=control.current, target_rate=None)
    assert control.current == 24
    control.on_congestion()
    assert control.current == 16  # 24 × 0.7
    control.on_congestion()  # same round trip: no second cut
    assert control.current == 16
    clock.advance(1.0)
    for _ in range(30):  # additive now: about +1 per round trip (+5% once above 20)
        control.on_success(latency_s=0.2, in_flight=control.current, target_rate=None)
    assert 17 <= control.current <= 21  # (a little more: a second has passed clean)


def test_after_slow_start_the_growth_speeds_up_while_it_stays_clean(clock: FakeClock) -> None:
    """Slow start ended early (a lag spike, say): +5% per round trip at first, then faster
    each clean round trip, so a short run still reaches what the server sustains."""
    control = ConcurrencyController(clock=clock)
    control.slow_start = False
    control.limit = 100.0
    sizes = []
    while control.current < 400:  # clean round trips of 0.2 s
        for _ in range(control.current):
            control.on_success(latency_s=0.2, in_flight=control.current, target_rate=None)
        clock.advance(0.2)
        sizes.append(control.current)
    assert sizes[0] <= 106  # +5%
    assert len(sizes) <= 12  # at +5% throughout: 29 round trips
    assert control.growth_per_round_trip() >= 0.25
    control.on_congestion()  # a 529: back to the careful start
    assert control.growth_per_round_trip() == pytest.approx(policy.CONGESTION_AVOIDANCE_GROWTH)


def test_concurrency_does_not_grow_when_it_is_not_the_limit(clock: FakeClock) -> None:
    control = ConcurrencyController(clock=clock)
    for _ in range(50):
        control.on_success(latency_s=0.2, in_flight=1, target_rate=None)
    assert control.current == policy.START_CONCURRENCY


def test_concurrency_stops_at_what_a_known_rate_needs(clock: FakeClock) -> None:
    control = ConcurrencyController(clock=clock)
    for _ in range(500):
        control.on_success(latency_s=0.2, in_flight=control.current, target_rate=10.0)
    assert control.current == 5  # 10/s × 0.2 s × 1.5 + 2


def test_concurrency_stops_growing_when_latency_shows_queueing(clock: FakeClock) -> None:
    control = ConcurrencyController(clock=clock)
    for _ in range(20):
        control.on_success(latency_s=0.1, in_flight=control.current, target_rate=None)
    grown = control.current
    for _ in range(200):
        control.on_success(latency_s=0.5, in_flight=control.current, target_rate=None)
    # The smoothed latency needs three answers to show it: no growth after that.
    assert control.current <= grown + 3 * policy.SLOW_START_GROWTH


def test_concurrency_holds_while_our_own_loop_lags(clock: FakeClock) -> None:
    control = ConcurrencyController(clock=clock)
    for _ in range(8):
        control.on_success(latency_s=0.2, in_flight=control.current, target_rate=None)
    grown = control.current
    for _ in range(100):  # answers are fine, but the client is short of CPU
        control.on_success(
            latency_s=0.2, in_flight=control.current, target_rate=None,
            loop_lag_s=0.2 * policy.LOOP_LAG_BUSY_SHARE * 2,
        )  # fmt: skip
    assert control.current == grown
    for _ in range(grown):  # free again: one more round trip, still in slow start
        control.on_success(latency_s=0.2, in_flight=control.current, target_rate=None)
    assert control.current == (1 + policy.SLOW_START_GROWTH) * grown


def test_one_429_closes_the_gate_to_nobody(clock: FakeClock) -> None:
    gate = StormGate(clock=clock)
    gate.on_rate_limited(3.0)
    clock.advance(0.5)
    gate.on_rate_limited(2.0)  # two 429s half a second apart: the pacer's business
    assert gate.wait_s() == 0 and not gate.enter()
    gate.on_answer()
    clock.advance(1.0)
    gate.on_rate_limited(1.0)  # a new run of 429s starts from the last answer
    assert gate.wait_s() == 0 and not gate.in_storm


def test_a_storm_closes_the_gate_for_the_whole_retry_after_then_lets_one_probe_go(
    clock: FakeClock,
) -> None:
    gate = StormGate(clock=clock)
    gate.on_rate_limited(5.0)
    clock.advance(policy.STORM_EVIDENT_S)
    gate.on_rate_limited(5.0)  # nothing but 429s for a second: a storm
    assert gate.in_storm and gate.storms == 1
    assert gate.wait_s() == pytest.approx(5.0)  # all of retry-after, for everyone
    clock.advance(2.0)
    gate.on_rate_limited(1.0)  # a shorter one meanwhile does not reopen it early
    assert gate.wait_s() == pytest.approx(3.0)
    clock.advance(3.0)
    assert gate.wait_s() == 0 and gate.enter()  # the probe
    assert gate.wait_s() > 0  # everyone else waits for its answer
    gate.leave()
    gate.on_rate_limited(5.0)  # the probe met the storm: closed again
    assert gate.wait_s() == pytest.approx(5.0) and gate.storms == 1
    clock.advance(5.0)
    assert gate.enter()
    gate.on_answer()  # the probe was answered: the storm is over
    gate.leave()
    assert gate.wait_s() == 0 and not gate.enter()


def test_a_pause_we_asked_for_closes_the_gate_and_is_no_evidence_of_a_storm(
    clock: FakeClock,
) -> None:
    gate = StormGate(clock=clock)
    gate.on_rate_limited(wait_s=1.0)  # a 429, then our pacer pauses everyone
    gate.pause(1.0)
    assert gate.wait_s() == pytest.approx(1.0)
    clock.advance(1.0)
    assert gate.wait_s() == 0.0
    clock.advance(0.1)
    gate.on_rate_limited(wait_s=1.0)  # no answer since the first 429, but we sent nothing
    assert not gate.in_storm
    clock.advance(policy.STORM_EVIDENT_S)
    gate.on_rate_limited(wait_s=1.0)  # a second of only 429s since the pause: a storm
    assert gate.in_storm


def test_loop_lag_probe_sees_a_blocked_loop_and_leaves_no_timer() -> None:
    async def scenario() -> tuple[float, float, bool]:
        probe = LoopLagProbe(interval_s=0.005)
        probe.start()
        await asyncio.sleep(0.05)
        calm = probe.lag_s
        for _ in range(5):
            time.sleep(0.03)  # the loop is busy: callbacks run late
            await asyncio.sleep(0)
            await asyncio.sleep(0.006)
        busy = probe.lag_s
        probe.stop()
        return calm, busy, probe._handle is None

    calm, busy, no_timer = asyncio.run(scenario())
    assert calm < 0.01 < busy
    assert no_timer


def test_fixed_concurrency_never_moves(clock: FakeClock) -> None:
    control = ConcurrencyController(fixed=7, clock=clock)
    control.on_congestion()
    control.on_success(latency_s=0.01, in_flight=7, target_rate=None)
    assert control.current == 7


def test_input_estimate_calibrates_to_the_count() -> None:
    estimator = InputEstimator()
    for _ in range(50):
        estimator.learn(raw=100.0, counted=130)
    assert estimator.estimate(200.0) == pytest.approx(260.0, rel=0.02)


def test_bucket_debt_is_repaid_at_the_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(600, clock)
    bucket.take(30)  # capacity 10: 20 in debt
    assert bucket.wait_s(1) == pytest.approx(2.1)


def test_in_flight_limit_can_grow_while_requests_wait() -> None:
    limit = {"n": 1}

    async def scenario() -> list[int]:
        limiter = InFlightLimiter(lambda: limit["n"])
        await limiter.acquire()
        waiters = [asyncio.ensure_future(limiter.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        admitted = [sum(w.done() for w in waiters)]
        limit["n"] = 3
        limiter.wake()
        await asyncio.sleep(0)
        admitted.append(sum(w.done() for w in waiters))
        limiter.release()
        await asyncio.sleep(0)
        admitted.append(sum(w.done() for w in waiters))
        return admitted

    assert asyncio.run(scenario()) == [0, 2, 3]
