"""One Prometheus endpoint for every replica: each replica pushes its registry's exposition to
a named Ray actor every few seconds; the ingress's ``GET /metrics`` answers the merged text,
each sample labelled with the ``replica`` it came from (a replica gone for longer than
``STALE_AFTER`` drops out). Ray's own metrics (``ray_serve_*``: requests, latencies, replica
counts per deployment) stay on Ray's per-node metrics port; docs/fleet.md says how to scrape both.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

HUB_NAME = "hfd-metrics-hub"
NAMESPACE = "hfd"
PUSH_INTERVAL = 5.0
STALE_AFTER = 30.0


class MetricsHub:
    """The collector (a Ray actor: ``ray.remote(MetricsHub)``)."""

    def __init__(self) -> None:
        self._texts: dict[str, tuple[float, str]] = {}

    def put(self, replica: str, text: str) -> None:
        self._texts[replica] = (time.monotonic(), text)

    def drop(self, replica: str) -> None:
        self._texts.pop(replica, None)

    def exposition(self) -> str:
        now = time.monotonic()
        live = {r: t for r, (at, t) in self._texts.items() if now - at <= STALE_AFTER}
        self._texts = {r: v for r, v in self._texts.items() if r in live}
        return merge(live)


def merge(texts: dict[str, str]) -> str:
    """Prometheus texts by replica, as one text with a ``replica`` label on every sample."""
    families: dict[str, tuple[str, str, list[str]]] = {}
    for replica, text in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            _, _, lines = families.setdefault(family.name, (family.documentation, family.type, []))
            for sample in family.samples:
                labels = {**sample.labels, "replica": replica}
                lines.append(f"{sample.name}{{{_labels(labels)}}} {_value(sample.value)}")
    out: list[str] = []
    for family_name, (doc, kind, lines) in families.items():
        # The parser strips a counter's ``_total``; its TYPE line names the samples' name again.
        name = family_name + "_total" if kind == "counter" else family_name
        out.append(f"# HELP {name} {_escape_help(doc)}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return "\n".join(out) + ("\n" if out else "")


def _labels(labels: dict[str, Any]) -> str:
    return ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n")


def _value(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))
