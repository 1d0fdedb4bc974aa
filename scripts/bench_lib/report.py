"""Ratios against targets, the console table, the JSON file and the plot."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

# What the served numbers should reach, reported (not asserted): (key, comparison, target, meaning).
TARGETS: tuple[tuple[str, str, float, str], ...] = (
    ("generation.http_vs_offline", ">=", 0.9, "generation over HTTP vs the offline batch"),
    ("generation.ipc_vs_offline", ">=", 0.9, "generation over IPC vs the offline batch"),
    ("generation.http_vs_one_at_a_time", ">=", 6.0, "generation over HTTP vs one request at a time"),
    ("generation.ipc_vs_one_at_a_time", ">=", 6.0, "generation over IPC vs one request at a time"),
    ("embeddings.http_vs_offline", ">=", 0.8, "embeddings over HTTP vs offline batches"),
    ("embeddings.ipc_vs_http", ">=", 1.0, "embeddings over IPC vs HTTP"),
    ("ttft.loaded_vs_unloaded", "<=", 2.0, "short request's TTFT under load vs unloaded"),
)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, op, target, meaning in TARGETS:
        section, name = key.split(".")
        ratios = results.get(section, {}).get("ratios", {})
        if name not in ratios:
            continue
        value = ratios[name]
        if value is None:  # the part ran but could not measure this ratio
            out.append(
                {"ratio": key, "value": None, "target": f"{op} {target}", "met": None, "meaning": meaning}
            )
            continue
        met = value >= target if op == ">=" else value <= target
        out.append({"ratio": key, "value": value, "target": f"{op} {target}", "met": met, "meaning": meaning})
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


def print_levels(title: str, levels: list[dict[str, Any]], unit: str) -> None:
    print(f"\n{title}")
    head = f"  {'door':5} {'conc':>5} {'reqs':>5} {'err':>4} {'req/s':>8} {unit + '/s':>10} {'ttft p50':>9} {'ttft p95':>9} {'lat p50':>9} {'lat p95':>9} {'own ms/u':>9}"
    print(head)
    for lv in levels:
        print(
            f"  {lv['door']:5} {lv['concurrency']:>5} {lv['requests']:>5} {lv['errors']:>4} {lv['requests_per_s']:>8.2f} "
            f"{lv[unit + '_per_s']:>10.1f} {_num(lv.get('ttft_p50_ms')):>9} {_num(lv.get('ttft_p95_ms')):>9} "
            f"{_num(lv['latency_p50_ms']):>9} {_num(lv['latency_p95_ms']):>9} {_num(lv.get('daemon_own_ms_per_unit')):>9}"
        )


def print_targets(rows: list[dict[str, Any]]) -> None:
    print("\nratios (served vs offline, within this run)")
    for row in rows:
        if row["value"] is None:
            print(
                f"  n/a  {row['ratio']:38} {'-':>7}  target {row['target']:7}  ({row['meaning']}: not measured)"
            )
            continue
        mark = "ok  " if row["met"] else "MISS"
        print(
            f"  {mark} {row['ratio']:38} {row['value']:>7.3f}  target {row['target']:7}  ({row['meaning']})"
        )


def print_cpu_ratios(section: str, ratios: dict[str, float | None]) -> None:
    """Work per CPU-second, served (the daemon's CPU) vs offline: steadier than wall time on a busy box."""
    shown = ", ".join(f"{k} {v:.3f}" for k, v in ratios.items() if v is not None)
    if shown:
        print(f"  {section} per CPU-second: {shown}")


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic: a crash never leaves half a results file that looks whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=False)
        fh.write("\n")
    _publish(tmp, path)


def _publish(tmp: str, path: Path) -> None:
    """Give the file the usual mode (mkstemp makes it owner-only), then move it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def plot(path: Path, results: dict[str, Any]) -> None:
    """Throughput and latency against concurrency, per door, with the offline bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    panels = (
        ("generation", "tokens", "generated tokens/s", axes[0][0], axes[0][1]),
        ("embeddings", "inputs", "sentences/s", axes[1][0], axes[1][1]),
    )
    for section, unit, label, ax_tp, ax_lat in panels:
        data = results.get(section)
        if not data:
            for ax in (ax_tp, ax_lat):
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{section}: not run", ha="center", va="center")
            continue
        for door, style in (("http", "o-"), ("ipc", "s-")):
            levels = [lv for lv in data["served"] if lv["door"] == door]
            if not levels:
                continue
            conc = [lv["concurrency"] for lv in levels]
            ax_tp.plot(conc, [lv[f"{unit}_per_s"] for lv in levels], style, label=door.upper())
            ax_lat.plot(
                conc, [lv["latency_p50_ms"] for lv in levels], style, label=f"{door.upper()} latency p50"
            )
            ax_lat.plot(
                conc,
                [lv["latency_p95_ms"] for lv in levels],
                style,
                alpha=0.4,
                label=f"{door.upper()} latency p95",
            )
            if any(lv.get("ttft_p50_ms") for lv in levels):
                ax_lat.plot(
                    conc,
                    [lv.get("ttft_p50_ms") for lv in levels],
                    style.replace("-", "--"),
                    label=f"{door.upper()} TTFT p50",
                )
        bounded = [lv for lv in data["served"] if lv["door"] == "http" and lv.get("bound_tokens_per_s")]
        if bounded:  # the machine's bound at each concurrency (bench_lib.bounds)
            ax_tp.plot([lv["concurrency"] for lv in bounded], [lv["bound_tokens_per_s"] for lv in bounded],
                       "k--", alpha=0.5, label="machine bound")  # fmt: skip
        offline = data.get("offline", {}).get(f"{unit}_per_s")
        if offline:
            ax_tp.axhline(offline, color="grey", linestyle=":", label=f"offline batch ({offline:.0f})")
        ax_tp.set_title(f"{section}: {data.get('model', '')}")
        ax_tp.set_ylabel(label)
        ax_lat.set_title(f"{section}: latency")
        ax_lat.set_ylabel("ms")
        for ax in (ax_tp, ax_lat):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent clients")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        ax_lat.set_yscale("log")
    meta = results.get("meta", {})
    fig.suptitle(
        f"hfd bench — engine {meta.get('engine')}, {meta.get('cores')} cores, threads {meta.get('threads')}, {meta.get('plan')}"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    _publish(tmp, path)
