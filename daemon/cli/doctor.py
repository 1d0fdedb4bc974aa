"""``hfd doctor``: what this box can compute with, which engine each task would run on, and each
configured model's task with the engine that serves it (when a running daemon has it loaded) or
the engines it would be tried on."""

from __future__ import annotations

import argparse
import json
from typing import Any

from hfd._units import format_bytes
from hfd.backends import model_options, registry
from hfd.backends.cpu_pools import options as pool_options
from hfd.backends.hardware import EngineProbe, HardwareReport, detect, hardware_json
from hfd.daemon.models.threads import thread_choice
from hfd.daemon.settings import ModelSpec, Settings


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "doctor", help="show the detected hardware and engines, and the engine chosen per task"
    )
    p.add_argument("--json", action="store_true", dest="as_json", help="print the report as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    report = detect()
    data = hardware_json(report, pinned_engine=settings.engine, pinned_device=settings.device)
    add_thread_choices(data, settings, report)
    data["models"] = model_rows(settings, data)
    data["measured"] = measured_rows(settings)
    if getattr(args, "as_json", False):
        print(json.dumps(data, indent=2))
    else:
        print(format_report(report, data, pinned_engine=settings.engine))
    # Non-zero when some task cannot run here at all: scripts can gate on it.
    return 1 if any(not choices for choices in data["choices"].values()) else 0


def add_thread_choices(data: dict[str, Any], settings: Settings, report: HardwareReport) -> None:
    """Each engine's default CPU entry gets the threads a model with no ``threads`` would run on,
    why, and the options hfd sets on the engine's thread pool (``hfd.backends.cpu_pools``)."""
    for engine, defaults in data.get("defaults", {}).items():
        choice = thread_choice(settings, ModelSpec(ref="doctor"), engine, cpu=report.cpu)
        defaults["threads"], defaults["threads_why"] = choice.threads, choice.why
        defaults["pool_options"] = [
            {"name": o.name, "value": o.value, "why": o.why} for o in pool_options(engine)
        ]


def model_rows(
    settings: Settings, data: dict[str, Any], loaded: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Each configured model: its task (pinned, else read from its files in the store), and the
    engine serving it where a running daemon has it loaded, else the engines it would try."""
    from hfd.daemon.tasks import registry as tasks

    if loaded is None:
        loaded = _loaded(settings)
    store = None
    rows = []
    for spec in settings.models:
        task = spec.task
        if task is None:
            if store is None:
                store = _store(settings)
            task = _listed(spec, store)
        row: dict[str, Any] = {"name": spec.public_name, "ref": spec.ref, "task": task}
        running = loaded.get(spec.public_name)
        if running is not None:
            row.update(task=running.task, engine=running.engine, device=running.device, loaded=True,
                       why=running.engine_reason)  # fmt: skip
        elif task in tasks.TASKS:
            record = tasks.TASKS[task]
            pin = spec.engine or settings.engine
            # As a load tries them: an engine that does not read one of the model's options is skipped.
            row["engines"] = [c["engine"] for c in data["choices"].get(record.engine_task, [])
                              if record.runs_on(c["engine"]) and pin in (None, c["engine"])
                              and not model_options.unread(c["engine"], spec.options)]  # fmt: skip
        rows.append(row)
    return rows


def measured_rows(settings: Settings) -> list[dict[str, Any]]:
    """The engine orders measured on this machine and kept in the state dir (``engine_choice``)."""
    from hfd.daemon.models.engine_choice import EngineChoices, describe

    return [
        {"model": r.get("model"), "task": r.get("task"), "device": r.get("device"),
         "ranking": r.get("ranking"), "why": describe(r), "cpu": r.get("machine", {}).get("cpu")}
        for r in EngineChoices(settings.state_dir).records()
    ]  # fmt: skip


def _loaded(settings: Settings) -> dict[str, Any]:
    """The running daemon's loaded models by name; none when no daemon answers."""
    from hfd.client import Client

    try:
        with Client(settings.ipc_endpoint(), timeout=2.0) as client:
            return {m.name: m for m in client.ps()}
    except Exception:
        return {}


def _store(settings: Settings) -> Any:
    try:
        from hfd.daemon.store.model_store import ModelStore

        return ModelStore(settings)
    except Exception:
        return False


def _listed(spec: ModelSpec, store: Any) -> str | None:
    if not store:
        return None
    from hfd.daemon.tasks.listing import listed_task

    return listed_task(spec, store)


def _size(n: int | None) -> str:
    return "?" if not n else format_bytes(n)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _devices(probe: EngineProbe) -> str:
    if not probe.installed:
        return "-"
    parts = []
    for d in probe.devices:
        extra = [x for x in (_size(d.memory_bytes) if d.memory_bytes else "", d.capability or "") if x]
        label = d.id if d.name in (d.id, "") else f"{d.id} ({d.name})"
        parts.append(label + (f" [{', '.join(extra)}]" if extra else ""))
    return "; ".join(parts) or "none"


def _shown(report: HardwareReport, pinned_engine: str | None) -> list[EngineProbe]:
    """The probes of the engines the registry offers, and of the pinned one (the fake engine is
    shown only when pinned or offered)."""
    return [
        p
        for p in report.probes
        if p.name == pinned_engine or (p.name in registry.ENGINES and registry.ENGINES[p.name].offered)
    ]


def format_report(report: HardwareReport, data: dict[str, Any], pinned_engine: str | None = None) -> str:
    cpu, mem = report.cpu, report.memory
    probes = _shown(report, pinned_engine)
    lines = [
        "Hardware",
        *_table(
            [
                ["system", f"{report.system}, Python {report.python}"],
                ["cpu", f"{cpu.model} ({cpu.vendor}, {cpu.arch})"],
                [
                    "cores",
                    f"{cpu.physical_cores} physical, {cpu.logical_cores} logical, {cpu.usable_cores} usable",
                ],
                ["features", " ".join(cpu.features) or "none detected"],
                [
                    "memory",
                    f"{_size(mem.total_bytes)} total, {_size(mem.available_bytes)} available"
                    + (f", cgroup limit {_size(mem.limit_bytes)}" if mem.limit_bytes else ""),
                ],
            ]
        ),
        "",
        "Engines",
    ]
    rows = [["engine", "version", "devices"]]
    for probe in probes:
        status = (probe.version or "-") if probe.installed else f"not available: {probe.reason}"
        rows.append([probe.name, status, _devices(probe)])
    lines += _table(rows)
    if report.onnxruntime.providers:
        lines.append(f"  onnxruntime providers: {', '.join(report.onnxruntime.providers)}")
    unavailable = [
        [f"{probe.name}/{kind}", why] for probe in probes for kind, why in probe.unavailable.items()
    ]
    if unavailable:
        lines += ["", "Not available", *_table(unavailable)]
    lines += ["", "Engine per task (tried in this order)"]
    errors = data.get("choice_errors", {})
    for task, choices in data["choices"].items():
        if not choices:
            lines.append(f"  {task}: none: {errors.get(task, 'no engine')}")
            continue
        for i, c in enumerate(choices, 1):
            head = f"  {task}:" if i == 1 else " " * (len(task) + 3)
            lines.append(f"{head} {i}. {c['engine']} on {c['device']}: {c['reason']}")
    if data.get("models"):
        lines += ["", "Models (task; engine where loaded, else the engines it would try)"]
        rows = [["model", "task", "engine"]]
        for m in data["models"]:
            engine = (
                f"{m['engine']} on {m['device']} (loaded)"
                if m.get("loaded")
                else ", ".join(m.get("engines") or ["-"])
            )
            rows.append([m["name"], m["task"] or "unknown (not in the store)", engine])
        lines += _table(rows)
        lines += [f"  {m['name']} on {m['engine']}, {m['why']}" for m in data["models"] if m.get("why")]
    if data.get("measured"):
        lines += [
            "",
            "Engine order measured on this machine (kept in the state dir; hfd tune measures again)",
        ]
        lines += _table(
            [[str(m["model"]), f"{m['task']} on {m['device']}", m["why"]] for m in data["measured"]]
        )
    defaults = data.get("defaults") or {}
    if defaults:
        # Threads are the next table's, with their reason: here only the precision and its own.
        lines += ["", "Default compute on the CPU (a model's dtype option overrides)"]
        rows = [["engine", "precision", "why"]]
        for engine, d in defaults.items():
            rows.append([engine, str(d.get("precision")), str(d.get("why", ""))])
        lines += _table(rows)
        lines += ["", "Engine threads and thread-pool options on the CPU (why)"]
        lines += _table(pool_rows(defaults))
    return "\n".join(lines)


def pool_rows(defaults: dict[str, Any]) -> list[list[str]]:
    """One row per engine for its thread count, then one per option hfd sets on its pool."""
    rows = []
    for engine, d in defaults.items():
        if "threads" in d:
            rows.append([engine, f"threads {d['threads']}", str(d.get("threads_why", ""))])
        for o in d.get("pool_options", ()):
            rows.append([engine, f"{o['name']}={o['value']}", str(o["why"])])
    return rows or [["-", "-", "-"]]
