"""The circuit breaker's states, driven by an injectable clock."""

from __future__ import annotations

import pytest
from support.clocks import Clock

from hfd.client.errors import ModelUnavailable
from hfd.daemon.models.breaker import Breakers, CircuitBreaker
from hfd.daemon.settings import SettingsError


def breaker(clock: Clock, threshold: int = 3, cooldown: float = 30.0) -> CircuitBreaker:
    return CircuitBreaker("m", "torch", threshold=threshold, cooldown=cooldown, clock=clock)


def test_opens_after_consecutive_failures_only() -> None:
    clock = Clock(1000.0)
    b = breaker(clock)
    b.failure("boom")
    b.failure("boom")
    b.success()  # a success in between resets the count
    b.failure("boom")
    b.failure("boom")
    assert b.state == "closed"
    assert b.check() is False
    b.failure("boom")
    assert b.state == "open"
    with pytest.raises(ModelUnavailable) as info:
        b.check()
    assert info.value.retry_after == pytest.approx(30.0)
    assert "boom" in info.value.message
    assert info.value.details["breaker"]["state"] == "open"


def test_retry_after_counts_down_and_half_open_lets_one_probe() -> None:
    clock = Clock(1000.0)
    b = breaker(clock, threshold=1, cooldown=10.0)
    b.failure("x")
    clock.now += 4.0
    assert b.retry_after() == pytest.approx(6.0)
    clock.now += 6.0
    assert b.state == "half_open"
    assert b.check() is True  # the probe
    with pytest.raises(ModelUnavailable) as info:  # others wait for the probe
        b.check()
    assert info.value.retry_after == pytest.approx(1.0)
    b.success()
    assert b.state == "closed" and b.failures == 0
    assert b.check() is False


def test_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = Clock(1000.0)
    b = breaker(clock, threshold=2, cooldown=10.0)
    b.failure("x")
    b.failure("x")
    clock.now += 10.0
    assert b.check() is True
    b.failure("still broken")
    assert b.state == "open"
    assert b.retry_after() == pytest.approx(10.0)
    assert b.last_error == "still broken"


def test_released_probe_lets_the_next_request_probe() -> None:
    clock = Clock(1000.0)
    b = breaker(clock, threshold=1, cooldown=1.0)
    b.failure("x")
    clock.now += 1.0
    assert b.check() is True
    b.release()  # e.g. the probe request was the client's mistake
    assert b.check() is True


def test_breakers_are_per_model_and_engine() -> None:
    clock = Clock(1000.0)
    reg = Breakers(threshold=1, cooldown=5.0, clock=clock)
    reg.get("a", "torch").failure("x")
    assert reg.get("a", "torch").state == "open"
    assert reg.get("a", "openvino").state == "closed"
    assert reg.get("b", "torch").state == "closed"
    # "a" still has a closed engine: not blocked as a whole.
    assert reg.blocked("a") is None
    reg.get("a", "openvino").failure("y")
    blocked = reg.blocked("a")
    assert blocked is not None and blocked.state == "open"
    assert reg.blocked("b") is None
    info = reg.info("a")
    assert info["state"] == "open"
    assert set(info["engines"]) == {"torch", "openvino"}
    assert reg.info("never-seen") == {"state": "closed", "engines": {}}


def test_bad_settings_are_refused() -> None:
    with pytest.raises(SettingsError, match="breaker_failures"):
        Breakers(threshold=0, cooldown=1.0)
    with pytest.raises(SettingsError, match="breaker_cooldown"):
        Breakers(threshold=1, cooldown=-1.0)
