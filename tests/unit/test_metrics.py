"""Metrics: recorded events show up in the Prometheus exposition with the right values,
model labels stay bounded, and breaker state is read from the real manager at scrape time."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from hfd.daemon.metrics import UNKNOWN_MODEL, Metrics
from hfd.daemon.models.manager import ModelManager
from hfd.daemon.service import Service
from hfd.daemon.settings import load_settings


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def service(tmp_path: Path) -> Service:
    settings = load_settings(
        cli={"state_dir": tmp_path, "runtime_dir": tmp_path / "run", "models": ["chat=/nonexistent/model"]},
        environ={},
    )
    return Service(settings, ModelManager(settings))


def test_recorded_events_are_exposed(tmp_path: Path) -> None:
    svc = service(tmp_path)
    m = Metrics()
    m.watch(svc.manager, svc.cache)
    for status in (200, 200, 429):
        m.record_request("http", "/v1/chat/completions", "chat", status, 0.2)
    m.record_request("ipc", "embeddings.create", "no-such-model", 200, 0.01)
    m.record_tokens("chat", 12, 30)
    m.record_ttft("http", "chat", 0.05)
    m.record_batch("chat", "generation", 8)
    m.record_fetch("ipfs", 1000)
    m.record_fetch("hub", 24)
    m.record_fetch("ipfs", 500)

    got = samples(m)
    req = "hfd_requests_total"
    labels = {"door": "http", "route": "/v1/chat/completions", "model": "chat"}
    assert got[(req, tuple(sorted({**labels, "status": "200"}.items())))] == 2
    assert got[(req, tuple(sorted({**labels, "status": "429"}.items())))] == 1
    # A model the daemon does not serve does not become a new label value.
    unknown = {"door": "ipc", "route": "embeddings.create", "model": UNKNOWN_MODEL, "status": "200"}
    assert got[(req, tuple(sorted(unknown.items())))] == 1
    assert got[("hfd_request_duration_seconds_count", tuple(sorted(labels.items())))] == 3
    assert got[("hfd_tokens_total", (("direction", "in"), ("model", "chat")))] == 12
    assert got[("hfd_tokens_total", (("direction", "out"), ("model", "chat")))] == 30
    assert got[("hfd_time_to_first_token_seconds_count", (("door", "http"), ("model", "chat")))] == 1
    assert got[("hfd_batch_size_sum", (("kind", "generation"), ("model", "chat")))] == 8
    assert got[("hfd_fetch_bytes_total", (("source", "ipfs"),))] == 1500
    assert got[("hfd_fetch_bytes_total", (("source", "hub"),))] == 24


def test_breaker_state_is_read_at_scrape_time(tmp_path: Path) -> None:
    svc = service(tmp_path)
    m = Metrics()
    m.watch(svc.manager, svc.cache)
    breaker = svc.manager.breakers.get("chat", "torch")
    key = ("hfd_breaker_state", (("engine", "torch"), ("model", "chat"), ("state", "open")))
    assert samples(m)[key] == 0
    for _ in range(svc.settings.breaker_failures):
        breaker.failure("boom")
    assert samples(m)[key] == 1
    # Nothing is loaded: no per-model gauges, but the families exist.
    text = m.exposition().decode()
    assert "# TYPE hfd_model_loaded gauge" in text and "hfd_model_loaded{" not in text


def test_pulled_bytes_are_counted_by_source() -> None:
    """The store's progress meter reports every chunk it counts to the daemon's metrics."""
    from hfd.daemon.metrics import METRICS
    from hfd.daemon.store.pull import ProgressMeter

    def fetched(source: str) -> float:
        return samples(METRICS).get(("hfd_fetch_bytes_total", (("source", source),)), 0.0)

    before = fetched("ipfs"), fetched("hub")
    meter = ProgressMeter("org/model", None)
    meter.plan("ipfs", files_total=1, total=300)
    meter.add(100)
    meter.add(200)
    meter.plan("hub", files_total=1, total=50)
    meter.add(50)
    assert (fetched("ipfs") - before[0], fetched("hub") - before[1]) == (300, 50)
