"""Prometheus metrics (``GET /metrics``).

Two kinds:

- events, recorded as they happen through the ``record_*`` functions below (requests,
  latency, time to first token, tokens, batch sizes, bytes fetched by source).
  Any module may call them; they cost a dictionary lookup and an addition.
- state, read at scrape time from the model manager (loaded models and their memory, queue depth,
  running sequences, scheduler counters, breaker states, response cache hits), so nothing has
  to keep it current.

Model labels come from client input; to keep the number of series bounded, a name that is not
one of the daemon's models is recorded as ``"unknown"``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hfd.daemon.scheduler.base import EncoderStats, GenerationStats, Scheduler, SchedulerStats

if TYPE_CHECKING:
    from hfd.daemon.cache import ResponseCache
    from hfd.daemon.models.manager import ModelManager

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNKNOWN_MODEL = "unknown"

_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    float("inf"),
)
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, float("inf"))


class Metrics:
    """The daemon's metrics, in their own registry (not the process-global default one)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        count, hist = self._counter, self._histogram
        # fmt: off
        self.requests = count("hfd_requests", "Requests answered, by door, route, model and status.",
                              "door route model status")
        self.latency = hist("hfd_request_duration_seconds", "Time from request to the end of the reply.",
                            "door route model", _LATENCY_BUCKETS)
        self.ttft = hist("hfd_time_to_first_token_seconds",
                         "Streamed generation: time from request to the first token.", "door model", _TTFT_BUCKETS)
        self.tokens = count("hfd_tokens", "Tokens processed: direction=in (prompt/input) or out (generated).",
                            "model direction")
        self.batch_size = hist("hfd_batch_size", "Inputs per encoder batch or sequences per generation step.",
                               "model kind", _BATCH_BUCKETS)
        self._batch_children: dict[tuple[str, str], Any] = {}  # record_batch's, by (model, kind)
        self.fetched = count("hfd_fetch_bytes", "Model bytes fetched, by source (ipfs, hub, local).", "source")
        self.rate_limited = count("hfd_rate_limited", "Requests refused by a key's rate limit.", "door")
        self.auth_failures = count("hfd_auth_failures", "Requests refused: unauthorized (401) or forbidden (403).",
                                   "door reason")
        self.ipc_refused = count("hfd_ipc_connections_refused",
                                 "IPC/TCP connections refused by the peer check or CURVE.")
        self.usage_dropped = count("hfd_usage_records_dropped",
                                   "Usage records dropped because the usage queue was full.")
        self.in_flight = Gauge("hfd_requests_in_flight", "Requests being answered now.", ["door"],
                               registry=self.registry)
        # fmt: on
        self._known: Callable[[], Iterable[str]] | None = None
        self._state: _StateCollector | None = None

    def _counter(self, name: str, doc: str, labels: str = "") -> Counter:
        """A counter in this registry; ``labels`` separated by spaces."""
        return Counter(name, doc, labels.split(), registry=self.registry)

    def _histogram(self, name: str, doc: str, labels: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, doc, labels.split(), buckets=buckets, registry=self.registry)

    # ------------------------------------------------------------------ wiring

    def watch(self, manager: ModelManager, cache: ResponseCache | None) -> None:
        """Read model state from this manager and response cache at scrape time. Once per
        ``Metrics``: the composition root (``hfd.daemon.app``) calls it for the daemon's one
        manager, so a second caller is a wiring mistake, not a replacement."""
        if self._state is not None:
            raise RuntimeError("these metrics already watch a model manager")
        self._state = _StateCollector(manager, cache)
        self.registry.register(self._state)
        self._known = lambda: [s.public_name for s in manager.specs()]

    def model_label(self, model: str | None) -> str:
        if not model:
            return ""
        if self._known is None:
            return model
        try:
            known = set(self._known())
        except Exception:  # a failing model list must not fail the request being recorded
            return UNKNOWN_MODEL
        return model if model in known else UNKNOWN_MODEL

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    # ------------------------------------------------------------------ events

    def record_request(self, door: str, route: str, model: str | None, status: int, seconds: float) -> None:
        label = self.model_label(model)
        self.requests.labels(door, route, label, str(status)).inc()
        self.latency.labels(door, route, label).observe(seconds)

    def record_ttft(self, door: str, model: str | None, seconds: float) -> None:
        self.ttft.labels(door, self.model_label(model)).observe(seconds)

    def record_tokens(self, model: str | None, prompt: int, completion: int) -> None:
        label = self.model_label(model)
        if prompt:
            self.tokens.labels(label, "in").inc(prompt)
        if completion:
            self.tokens.labels(label, "out").inc(completion)

    def record_batch(self, model: str, kind: str, size: int) -> None:
        """Once per engine step or encoder batch, so its labelled child is kept: ``model`` is a
        scheduler's own (a configured model), never a client's, so it needs no ``model_label``
        and the children are as many as the configured models."""
        child = self._batch_children.get((model, kind))
        if child is None:
            child = self._batch_children[(model, kind)] = self.batch_size.labels(model, kind)
        child.observe(size)

    def record_fetch(self, source: str, nbytes: int) -> None:
        if nbytes > 0:
            self.fetched.labels(source).inc(nbytes)


class _StateCollector(Collector):
    """Model and scheduler state, read from the manager when Prometheus scrapes."""

    def __init__(self, manager: ModelManager, cache: ResponseCache | None) -> None:
        self.manager = manager
        self.cache = cache

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        manager = self.manager
        loaded = GaugeMetricFamily(
            "hfd_model_loaded", "1 for each loaded model.", labels=["model", "task", "engine", "device"]
        )
        memory = GaugeMetricFamily(
            "hfd_model_memory_bytes", "Memory a loaded model's weights use.", labels=["model", "device"]
        )
        in_use = GaugeMetricFamily("hfd_model_in_use", "Requests holding a model now.", labels=["model"])
        queue = GaugeMetricFamily(
            "hfd_queue_depth",
            "Requests (generation) or inputs (encoders) waiting per model.",
            labels=["model"],
        )
        running = GaugeMetricFamily(
            "hfd_running_sequences", "Generation: sequences in the running batch.", labels=["model"]
        )
        batches = CounterMetricFamily(
            "hfd_scheduler_batches", "Encoder batches or generation steps run.", labels=["model", "kind"]
        )
        rows = CounterMetricFamily(
            "hfd_scheduler_rows",
            "Inputs batched (encoders) or tokens generated (generation).",
            labels=["model", "kind"],
        )
        rejected = CounterMetricFamily(
            "hfd_scheduler_rejected", "Requests refused because the queue was full.", labels=["model"]
        )
        dropped = CounterMetricFamily(
            "hfd_scheduler_dropped",
            "Encoders: inputs of requests whose client went away, dropped before they were computed.",
            labels=["model"],
        )
        try:
            models = list(manager.loaded())
        except Exception:
            log.exception("metrics: cannot list loaded models")
            models = []
        for lm in models:
            name = str(lm.name)
            loaded.add_metric([name, str(lm.task), str(lm.engine), str(lm.device)], 1)
            in_use.add_metric([name], lm.in_use)
            try:
                memory.add_metric([name, str(lm.device)], float(lm.model.memory_bytes()))
            except Exception:
                pass
            stats = _stats(lm.scheduler)
            if isinstance(stats, GenerationStats):
                queue.add_metric([name], stats.waiting)
                running.add_metric([name], stats.running)
                batches.add_metric([name, stats.kind], stats.steps)
                rows.add_metric([name, stats.kind], stats.tokens_generated)
            elif isinstance(stats, EncoderStats):
                queue.add_metric([name], stats.pending_inputs)
                batches.add_metric([name, stats.kind], stats.batches)
                rows.add_metric([name, stats.kind], stats.inputs)
                dropped.add_metric([name], stats.dropped_items)
            if stats is not None:
                rejected.add_metric([name], stats.requests_rejected)
        yield from (loaded, memory, in_use, queue, running, batches, rows, rejected, dropped)
        yield from _breakers(manager)
        yield from _cache(self.cache)


def _stats(scheduler: Scheduler) -> SchedulerStats | None:
    """A scheduler's counters; None if it cannot tell (a scrape must not fail for it)."""
    try:
        return scheduler.stats()
    except Exception:
        return None


def _cache(cache: ResponseCache | None) -> Iterator[Metric]:
    """The response cache's own counters (it counts hits and misses as it answers)."""
    if cache is None:
        return
    try:
        stats = cache.stats()
    except Exception:
        return
    lookups = CounterMetricFamily(
        "hfd_cache_requests", "Response cache lookups by result (hit or miss).", labels=["result"]
    )
    lookups.add_metric(["hit"], stats.get("hits", 0))
    lookups.add_metric(["miss"], stats.get("misses", 0))
    size = GaugeMetricFamily("hfd_cache_bytes", "Bytes the response cache holds.")
    size.add_metric([], stats.get("bytes", 0))
    yield lookups
    yield size


_BREAKER_STATES = ("closed", "half_open", "open")


def _breakers(manager: ModelManager) -> Iterator[Metric]:
    """Circuit breaker per (model, engine) that has seen traffic: 1 for its current state."""
    breakers = manager.breakers
    family = GaugeMetricFamily(
        "hfd_breaker_state",
        "Circuit breaker per model and engine: 1 for its current state.",
        labels=["model", "engine", "state"],
    )
    try:
        for spec in manager.specs():
            for breaker in breakers.of(spec.public_name):
                for candidate in _BREAKER_STATES:
                    family.add_metric(
                        [spec.public_name, str(breaker.engine), candidate],
                        1 if breaker.state == candidate else 0,
                    )
    except Exception:
        log.exception("metrics: cannot read breaker states")
    yield family


# The daemon's one instance, and functions for the modules that record events.
METRICS = Metrics()


def record_request(door: str, route: str, model: str | None, status: int, seconds: float) -> None:
    METRICS.record_request(door, route, model, status, seconds)


def record_ttft(door: str, model: str | None, seconds: float) -> None:
    METRICS.record_ttft(door, model, seconds)


def record_tokens(model: str | None, prompt: int, completion: int) -> None:
    METRICS.record_tokens(model, prompt, completion)


def record_batch(model: str, kind: str, size: int) -> None:
    METRICS.record_batch(model, kind, size)


def record_fetch(source: str, nbytes: int) -> None:
    METRICS.record_fetch(source, nbytes)
