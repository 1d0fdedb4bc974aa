"""The report of ``scripts/bench soak``: each request's outcome, the counts and latencies by door
and kind, the latency drift from the first window to the last, and the growth of the daemon's
and its children's resources (``bench_lib.soak`` runs the load)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench_lib import report
from bench_lib.load import ms, percentile

KINDS = ("chat", "completion", "embed")


@dataclass
class Outcome:
    door: str
    kind: str
    start: float  # seconds since the load began
    end: float
    latency: float
    ttft: float | None = None
    hung_up: bool = False
    error: str | None = None


def _stats(outcomes: list[Outcome]) -> dict[str, Any]:
    done = [o for o in outcomes if o.error is None and not o.hung_up]
    lat = [o.latency for o in done]
    ttft = [o.ttft for o in done if o.ttft is not None]
    out: dict[str, Any] = {
        "requests": len(done),
        "latency_p50_ms": ms(percentile(lat, 50)),
        "latency_p95_ms": ms(percentile(lat, 95)),
    }
    if ttft:
        out["ttft_p50_ms"] = ms(percentile(ttft, 50))
        out["ttft_p95_ms"] = ms(percentile(ttft, 95))
    return out


def _drift(outcomes: list[Outcome], elapsed: float) -> dict[str, Any]:
    window = min(60.0, elapsed / 3)
    out: dict[str, Any] = {"window_s": round(window, 2)}
    for kind in KINDS:
        mine = [o for o in outcomes if o.kind == kind]
        first = _stats([o for o in mine if o.end <= window])
        last = _stats([o for o in mine if o.start >= elapsed - window])
        entry = {"first": first, "last": last}
        for key in ("latency_p50_ms", "latency_p95_ms", "ttft_p50_ms"):
            if key in first and key in last:
                entry[f"{key.removesuffix('_ms')}_last_vs_first"] = report.ratio(last[key], first[key])
        out[kind] = entry
    return out


def _growth(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    def diff(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
        if a is None or b is None:
            return None
        return {
            "rss_mib": round(b["rss_mib"] - a["rss_mib"], 1),
            "fds": b["fds"] - a["fds"],
            "threads": b["threads"] - a["threads"],
        }

    before = {c["pid"]: c for c in start["children"]}
    after = {c["pid"]: c for c in end["children"]}
    return {
        "daemon": diff(start["daemon"], end["daemon"]),
        "children": {str(pid): diff(before[pid], after[pid]) for pid in before if pid in after},
        "children_started": sorted(set(after) - set(before)),
        "children_gone": sorted(set(before) - set(after)),
    }


def summary(
    outcomes: list[Outcome],
    elapsed: float,
    start: dict[str, Any],
    end: dict[str, Any],
    series: list[dict[str, Any]],
) -> dict[str, Any]:
    by: dict[str, Any] = {}
    for door in ("http", "ipc"):
        for kind in KINDS:
            mine = [o for o in outcomes if o.door == door and o.kind == kind]
            errors = [o.error for o in mine if o.error]
            by[f"{door}.{kind}"] = _stats(mine) | {
                "hung_up": sum(o.hung_up for o in mine),
                "errors": len(errors),
                **({"first_error": errors[0]} if errors else {}),
            }
    errors = [o for o in outcomes if o.error]
    return {
        "seconds": round(elapsed, 2),
        "requests": len(outcomes),
        "completed": sum(1 for o in outcomes if o.error is None and not o.hung_up),
        "hung_up": sum(o.hung_up for o in outcomes),
        "errors": len(errors),
        "errors_by_kind": {k: sum(1 for o in errors if o.kind == k) for k in KINDS},
        "by_door_and_kind": by,
        "drift": _drift(outcomes, elapsed),
        "resources": {"start": start, "end": end, "growth": _growth(start, end), "series": series},
    }


def print_summary(result: dict[str, Any]) -> None:
    print(
        f"\n== soak: {result['requests']} requests in {result['seconds']} s: {result['completed']} completed, "
        f"{result['hung_up']} hung up, {result['errors']} errors"
    )
    for name, s in result["by_door_and_kind"].items():
        print(
            f"  {name:16} {s['requests']:6} ok  {s['hung_up']:4} hung up  {s['errors']:4} errors  "
            f"p50 {s['latency_p50_ms']} ms  p95 {s['latency_p95_ms']} ms"
        )
        if s["errors"]:
            print(f"    first error: {s['first_error']}")
    d = result["drift"]
    print(f"  drift (first vs last {d['window_s']} s):")
    for kind in KINDS:
        f, lo = d[kind]["first"], d[kind]["last"]
        print(
            f"    {kind:10} p50 {f['latency_p50_ms']} -> {lo['latency_p50_ms']} ms, "
            f"p95 {f['latency_p95_ms']} -> {lo['latency_p95_ms']} ms"
        )
    r = result["resources"]
    for label, snap in (("start", r["start"]), ("end", r["end"])):
        dm = snap["daemon"] or {}
        kids = ", ".join(f"{c['name']} {c['rss_mib']} MiB/{c['fds']} fds" for c in snap["children"])
        print(
            f"  {label:5} daemon {dm.get('rss_mib')} MiB, {dm.get('fds')} fds" + (f"; {kids}" if kids else "")
        )
    a = result["after"]
    print(
        f"  after: /health {a['health_status']}, in flight {a['in_flight']}, daemon alive {a['daemon_alive']}"
    )
