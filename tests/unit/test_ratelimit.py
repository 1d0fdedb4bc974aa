"""Token buckets under a driven clock: bursts up to the per-minute limit, refill, token debt."""

from __future__ import annotations

import pytest
from support.clocks import Clock

from hfd.client.errors import RateLimited
from hfd.daemon.access.ratelimit import Limits, RateLimiter, TokenBucket


def test_bucket_bursts_then_refills_at_the_rate() -> None:
    clock = Clock(1000.0)
    bucket = TokenBucket(60, clock=clock)  # one per second
    for _ in range(60):
        assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(1.0)
    clock.now += 0.5
    assert bucket.take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take() == 0.0
    clock.now += 3600
    assert bucket.level == 60  # never above one minute's allowance


def test_requests_per_minute() -> None:
    clock = Clock(1000.0)
    limiter = RateLimiter(clock=clock)
    limits = Limits(rpm=2)
    limiter.admit("k", limits)
    limiter.admit("k", limits)
    with pytest.raises(RateLimited) as info:
        limiter.admit("k", limits)
    assert info.value.retry_after == pytest.approx(30.0)
    assert info.value.status == 429 and info.value.details["unit"] == "requests"
    # Other keys have their own buckets; refused requests cost nothing.
    limiter.admit("other", limits)
    clock.now += 30
    limiter.admit("k", limits)
    with pytest.raises(RateLimited):
        limiter.admit("k", limits)


def test_tokens_per_minute_are_charged_after_the_fact() -> None:
    clock = Clock(1000.0)
    limiter = RateLimiter(clock=clock)
    limits = Limits(tpm=600)  # 10 per second
    limiter.admit("k", limits)
    limiter.charge("k", limits, 900)  # a big request takes the bucket 300 into debt
    with pytest.raises(RateLimited) as info:
        limiter.admit("k", limits)
    assert info.value.retry_after == pytest.approx(30.0, abs=0.01)
    assert info.value.details["unit"] == "tokens"
    clock.now += 30.01
    limiter.admit("k", limits)


def test_unlimited_keys_are_never_refused() -> None:
    limiter = RateLimiter(clock=Clock(1000.0))
    for _ in range(1000):
        limiter.admit("k", Limits())
    limiter.charge("k", Limits(), 10**9)
    limiter.admit("k", Limits())
