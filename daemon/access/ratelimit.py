"""Per-key rate limits: requests per minute and tokens per minute, as token buckets.

A bucket holds up to one minute's allowance and refills continuously, so a key may burst to
its per-minute limit and then gets a steady rate. Requests are counted when admitted. Tokens
are only known once a request finished (prompt plus completion), so they are charged after
the fact: a request is admitted while the token bucket is not empty, and a large request may
take it below zero, which holds the key's next requests back until it has refilled. Refused
requests cost nothing. ``retry_after`` says when the refused request would be admitted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hfd.client.errors import RateLimited

Clock = Callable[[], float]


class TokenBucket:
    def __init__(self, per_minute: float, *, clock: Clock = time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError("a bucket needs a positive rate")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # units per second
        self._clock = clock
        self._level = self.capacity
        self._at = clock()

    @property
    def level(self) -> float:
        self._refill()
        return self._level

    def _refill(self) -> None:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self.rate)
        self._at = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now)."""
        self._refill()
        missing = amount - self._level
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float = 1.0) -> float:
        """Take ``amount`` if available and return 0, else take nothing and return the wait."""
        wait = self.wait_for(amount)
        if wait == 0.0:
            self._level -= amount
        return wait

    def debit(self, amount: float) -> None:
        """Take ``amount`` unconditionally; the level may go below zero."""
        self._refill()
        self._level -= amount


@dataclass(frozen=True)
class Limits:
    rpm: int = 0  # 0: unlimited
    tpm: int = 0


class RateLimiter:
    """The buckets of every key, by key id. Thread-safe (both doors share one)."""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, TokenBucket] = {}
        self._tokens: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, table: dict[str, TokenBucket], key_id: str, per_minute: int) -> TokenBucket | None:
        if per_minute <= 0:
            return None
        bucket = table.get(key_id)
        if bucket is None or bucket.capacity != per_minute:
            bucket = table[key_id] = TokenBucket(per_minute, clock=self._clock)
        return bucket

    def admit(self, key_id: str, limits: Limits) -> None:
        """Count one request for the key, or raise RateLimited with the seconds to wait."""
        with self._lock:
            tokens = self._bucket(self._tokens, key_id, limits.tpm)
            # A fraction of a token is enough: the bucket only has to be out of debt.
            token_wait = tokens.wait_for(1e-9) if tokens is not None else 0.0
            requests = self._bucket(self._requests, key_id, limits.rpm)
            request_wait = requests.wait_for(1.0) if requests is not None else 0.0
            wait = max(token_wait, request_wait)
            if wait > 0:
                which = "tokens" if token_wait >= request_wait else "requests"
                limit = limits.tpm if which == "tokens" else limits.rpm
                raise RateLimited(
                    f"rate limit of {limit} {which} per minute reached for this key; retry in {wait:.1f}s",
                    retry_after=round(wait, 3),
                    details={"limit": limit, "per": "minute", "unit": which},
                )
            if requests is not None:
                requests.take(1.0)

    def charge(self, key_id: str, limits: Limits, tokens: int) -> None:
        """Charge the tokens a finished request used."""
        if tokens <= 0:
            return
        with self._lock:
            bucket = self._bucket(self._tokens, key_id, limits.tpm)
            if bucket is not None:
                bucket.debit(tokens)
