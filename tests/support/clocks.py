"""Stand-ins the model manager and the response cache take by injection: a clock the test moves,
and the local resolver counting how often each model is resolved (once per load)."""

from __future__ import annotations

from pathlib import Path

from hfd.daemon.models.refs import resolve_local
from hfd.daemon.settings import ModelSpec


class Clock:
    """Seconds that pass only when the test says so (``clock.now += 10``)."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class CountingResolver:
    """The real local resolver, counting the resolutions per model name."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    def __call__(self, spec: ModelSpec) -> Path:
        self.calls[spec.public_name] = self.calls.get(spec.public_name, 0) + 1
        return resolve_local(spec)
