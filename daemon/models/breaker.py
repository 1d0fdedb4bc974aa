"""Circuit breakers, one per (model, engine): a model that keeps failing answers at once.

    closed ──N consecutive failures──▶ open ──cool-down passed──▶ half-open
      ▲                                  ▲                            │
      └──────── the probe succeeds ──────┼──── the probe fails ───────┘

- closed: requests pass; a success resets the failure count.
- open: requests get ``ModelUnavailable`` (503) with ``retry_after`` = the cool-down left,
  without touching the engine.
- half-open: one request (the probe) passes; others get ``ModelUnavailable`` until it ends. A
  probe that ends with neither verdict (the client's own error, a cancel) frees the probe slot.

A failure is a model load that fails or an engine error during inference; a client's bad request
is no evidence either way. Time comes from an injectable clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from hfd.client.errors import ModelUnavailable
from hfd.daemon.settings import SettingsError

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
# How soon a caller turned away during a probe should try again.
_PROBE_RETRY_AFTER = 1.0


def _check_bounds(
    threshold: int, cooldown: float, error: type[Exception], threshold_name: str, cooldown_name: str
) -> None:
    if threshold < 1:
        raise error(f"{threshold_name} must be at least 1")
    if cooldown < 0:
        raise error(f"{cooldown_name} must not be negative")


class CircuitBreaker:
    def __init__(
        self,
        model: str,
        engine: str,
        *,
        threshold: int,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_bounds(threshold, cooldown, ValueError, "breaker threshold", "breaker cool-down")
        self.model = model
        self.engine = engine
        self.threshold, self.cooldown, self._clock = threshold, cooldown, clock
        self._state: State = "closed"
        self.failures = 0  # consecutive
        self.opened_at: float | None = None
        self.last_error: str | None = None
        self._probing = False

    @property
    def state(self) -> State:
        """The state now; an open breaker whose cool-down passed reads as half-open."""
        if self._state == "open" and self.retry_after() <= 0:
            return "half_open"
        return self._state

    def retry_after(self) -> float:
        if self._state == "half_open":
            return _PROBE_RETRY_AFTER if self._probing else 0.0
        if self._state != "open" or self.opened_at is None:
            return 0.0
        return max(0.0, self.opened_at + self.cooldown - self._clock())

    def allow(self) -> tuple[bool, bool]:
        """(may pass, is the probe). A caller that passes as the probe must report its outcome
        with ``success``, ``failure`` or ``release``."""
        state = self.state
        if state == "closed":
            return True, False
        if state == "open" or self._probing:
            return False, False
        self._state = "half_open"
        self._probing = True
        return True, True

    def check(self) -> bool:
        """Like ``allow`` but raises ``ModelUnavailable`` when the request may not pass;
        returns whether this caller is the probe."""
        ok, probe = self.allow()
        if not ok:
            raise self.unavailable()
        return probe

    def unavailable(self) -> ModelUnavailable:
        wait = max(self.retry_after(), 0.1)
        why = f": {self.last_error}" if self.last_error else ""
        return ModelUnavailable(
            f"model {self.model!r} on {self.engine} is failing ({self.failures} failures in a row{why}); "
            f"its circuit breaker is open, retry in {wait:.1f}s",
            retry_after=round(wait, 3),
            details={"breaker": self.info()},
        )

    def success(self) -> None:
        if self._state != "closed":
            log.info("circuit breaker closed", extra={"model": self.model, "engine": self.engine})
        self._state = "closed"
        self.failures = 0
        self.opened_at = None
        self._probing = False

    def failure(self, error: str | None = None) -> None:
        self.failures += 1
        self.last_error = error
        reopen = self._state == "half_open"
        self._probing = False
        if reopen or self.failures >= self.threshold:
            if self._state == "closed" or reopen:
                log.warning(
                    "circuit breaker opened",
                    extra={
                        "model": self.model,
                        "engine": self.engine,
                        "failures": self.failures,
                        "error": error,
                    },
                )
            self._state = "open"
            self.opened_at = self._clock()

    def release(self) -> None:
        """The probe ended with no verdict: let the next request probe."""
        self._probing = False

    def info(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "state": self.state,
            "failures": self.failures,
            "retry_after": round(self.retry_after(), 3),
            "last_error": self.last_error,
        }


class Breakers:
    """Every breaker of the daemon, created on first use."""

    def __init__(
        self, *, threshold: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        _check_bounds(threshold, cooldown, SettingsError, "breaker_failures", "breaker_cooldown")
        self.threshold, self.cooldown, self._clock = threshold, cooldown, clock
        self._by_key: dict[tuple[str, str], CircuitBreaker] = {}

    def get(self, model: str, engine: str) -> CircuitBreaker:
        key = (model, engine)
        breaker = self._by_key.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                model, engine, threshold=self.threshold, cooldown=self.cooldown, clock=self._clock
            )
            self._by_key[key] = breaker
        return breaker

    def of(self, model: str) -> list[CircuitBreaker]:
        return [b for (m, _), b in self._by_key.items() if m == model]

    def blocked(self, model: str, engines: list[str] | None = None) -> CircuitBreaker | None:
        """The breaker to report when every engine the model can use is open (None otherwise).
        ``engines`` limits the check to those; by default, every engine tried so far."""
        breakers = [self.get(model, e) for e in engines] if engines is not None else self.of(model)
        if not breakers or any(b.state != "open" for b in breakers):
            return None
        return min(breakers, key=lambda b: b.retry_after())

    def tripped(self) -> dict[str, dict[str, Any]]:
        """``info`` of every model with a breaker that is not closed (for ``service.stats()``:
        a model that never loads is not in ``hfd ps``)."""
        models = sorted({m for m, _ in self._by_key})
        return {m: info for m in models if (info := self.info(m))["state"] != "closed"}

    def info(self, model: str) -> dict[str, Any]:
        """For ``hfd ps``: the worst state across the model's engines, and each engine's."""
        breakers = self.of(model)
        order = {"closed": 0, "half_open": 1, "open": 2}
        worst: State = max((b.state for b in breakers), key=lambda s: order[s], default="closed")
        return {"state": worst, "engines": {b.engine: b.info() for b in breakers}}
