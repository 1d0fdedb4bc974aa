"""What this box can compute with: CPU and its vector extensions, memory, accelerators, engines.

``detect()`` returns a ``HardwareReport``. Every probe is cheap, cached for the life of the
process, and never raises: a probe that cannot see a device records *why* (a missing library, a
missing driver, a CPU-only build) so that ``hfd doctor`` and ``GET /api/hardware`` can tell the
user what to install.

This module holds the report's types and the GPU driver checks; the CPU and memory probes are
``hfd.backends.host``'s (re-exported here).
Each engine's probe lives next to its engine (``torch_probe``, ``openvino_probe``,
``onnx_probe``) and is named by the engine's record in ``hfd.backends.registry``; ``detect()``
runs every record's probe. Nothing here imports torch, OpenVINO or ONNX Runtime at module import
time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from hfd.backends.host import CpuInfo, MemoryInfo, parse_cpuinfo, probe_cpu, probe_memory

__all__ = ["CpuInfo", "MemoryInfo", "parse_cpuinfo", "probe_cpu", "probe_memory"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Device:
    """One accelerator (or the CPU) as one engine addresses it."""

    engine: str  # "torch" | "openvino" | "onnxruntime"
    id: str  # the device string the engine takes: "cuda:0", "mps", "GPU.0", "NPU", "CPU"
    kind: str  # "cpu" | "cuda" | "rocm" | "mps" | "intel_gpu" | "npu"
    name: str
    memory_bytes: int | None = None
    capability: str | None = None  # CUDA compute capability "8.9", ROCm gfx arch, OV optimisation caps
    properties: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def on_host(cls, engine: str, id: str = "cpu", kind: str = "cpu") -> Device:
        """The host's own processor as ``engine`` addresses it (the CPU; MPS on Apple silicon),
        named by the CPU's model."""
        return cls(engine=engine, id=id, kind=kind, name=probe_cpu().model)


@dataclass(frozen=True)
class EngineProbe:
    """Whether an engine's library is installed, which devices it sees, and why not others."""

    name: str
    installed: bool
    version: str | None = None
    reason: str = ""  # why it is not installed, or "" when it is
    devices: tuple[Device, ...] = ()
    # device kind -> why the engine cannot use it here ("no NVIDIA driver (libcuda.so.1 not found)").
    unavailable: dict[str, str] = field(default_factory=dict)
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers

    @classmethod
    def missing(
        cls, name: str, reason: str, *, version: str | None = None, kinds: tuple[str, ...] = ()
    ) -> EngineProbe:
        """An engine that cannot be used (not installed, or failed to start): ``reason`` says
        why, for the engine and for each device kind it would drive."""
        return cls(
            name=name,
            installed=False,
            version=version,
            reason=reason,
            unavailable=dict.fromkeys(kinds, reason),
        )

    def has_kind(self, kind: str) -> bool:
        return any(d.kind == kind for d in self.devices)

    def first(self, kind: str) -> Device | None:
        return next((d for d in self.devices if d.kind == kind), None)


@dataclass(frozen=True)
class HardwareReport:
    system: str  # platform.system(): "Linux", "Darwin", "Windows"
    python: str
    cpu: CpuInfo
    memory: MemoryInfo
    torch: EngineProbe
    openvino: EngineProbe
    onnxruntime: EngineProbe
    # Probes of the other registered engines (``hfd.backends.registry``), in the registry's order.
    others: tuple[EngineProbe, ...] = ()

    @property
    def probes(self) -> tuple[EngineProbe, ...]:
        """Every engine's probe."""
        return (self.torch, self.openvino, self.onnxruntime, *self.others)

    def engine(self, name: str) -> EngineProbe:
        for probe in self.probes:
            if probe.name == name:
                return probe
        raise ValueError(f"unknown engine {name!r}")

    @property
    def accelerators(self) -> list[Device]:
        """Every non-CPU device any engine sees."""
        out: list[Device] = []
        for probe in self.probes:
            out.extend(d for d in probe.devices if d.kind != "cpu")
        return out

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cpu"]["features"] = list(self.cpu.features)
        # One key per engine, as for the three that always have a field.
        for probe, probe_data in zip(self.others, data.pop("others"), strict=True):
            data[probe.name] = probe_data
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


# ----------------------------------------------------------------------------- engines


def library_installed(module: str, dist: str) -> tuple[bool, str | None, str]:
    """(installed, version, why not) without importing the module."""
    try:
        # A module set to None in sys.modules is how Python marks "this import must fail".
        if module in sys.modules and sys.modules[module] is None:
            return False, None, f"{module} not installed"
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        return False, None, f"{module} not importable: {exc}"
    if spec is None:
        return False, None, f"{module} not installed"
    try:
        version: str | None = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return True, version, ""


def _can_load(names: tuple[str, ...]) -> bool:
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def nvidia_driver_reason() -> str | None:
    """None when an NVIDIA driver is present, else why not (cheap: no torch import)."""
    if sys.platform == "darwin":
        return "no NVIDIA driver on macOS"
    names = ("nvcuda.dll",) if sys.platform == "win32" else ("libcuda.so.1", "libcuda.so")
    if _can_load(names):
        return None
    return f"no NVIDIA driver ({names[0]} not found)"


def rocm_driver_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "ROCm needs Linux"
    if not os.path.exists("/dev/kfd"):
        return "no AMD ROCm driver (/dev/kfd not found)"
    return None


# The engine probes live next to their engines; these names are kept for existing callers.
_MOVED = {
    "probe_torch": "hfd.backends.torch_probe",
    "probe_openvino": "hfd.backends.openvino_probe",
    "ov_device_kind": "hfd.backends.openvino_probe",
    "probe_onnxruntime": "hfd.backends.onnx_probe",
}


def __getattr__(name: str) -> Any:
    # Lazily: the probe modules import this one.
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------- report


def detect(refresh: bool = False) -> HardwareReport:
    """The hardware report, probed once per process (``refresh=True`` probes again). Each engine
    is probed through its record in ``hfd.backends.registry``."""
    from hfd.backends import registry  # the registry names this module's probes

    if refresh:
        clear_cache()
    probes = {r.name: r.run_probe() for r in registry.RECORDS}
    return HardwareReport(
        system=platform.system(),
        python=platform.python_version(),
        cpu=probe_cpu(),
        memory=probe_memory(),
        torch=probes.pop("torch"),
        openvino=probes.pop("openvino"),
        onnxruntime=probes.pop("onnxruntime"),
        others=tuple(probes.values()),
    )


def clear_cache() -> None:
    from hfd.backends import registry

    probe_cpu.cache_clear()
    probe_memory.cache_clear()
    for r in registry.RECORDS:
        probe = registry.resolve(r.probe)
        if hasattr(probe, "cache_clear"):
            probe.cache_clear()


def hardware_json(
    report: HardwareReport | None = None,
    *,
    pinned_engine: str | None = None,
    pinned_device: str | None = None,
) -> dict[str, Any]:
    """The report plus the engines chosen per task: the body of ``GET /api/hardware`` and of
    the IPC ``hardware`` operation. A task no engine can run here gets an empty list and its
    reason under ``choice_errors``."""
    from hfd.backends.policy import TASKS, choose_engine  # policy imports this module
    from hfd.client.errors import HfdError

    report = report or detect()
    data = report.to_dict()
    data["choices"] = {}
    errors: dict[str, str] = {}
    for task in TASKS:
        try:
            choices = choose_engine(task, report, pinned_engine, pinned_device)
        except HfdError as exc:
            choices, errors[task] = [], exc.message
        data["choices"][task] = [c.to_dict() for c in choices]
    if errors:
        data["choice_errors"] = errors
    data["defaults"] = engine_defaults(report)
    return data


def engine_defaults(report: HardwareReport) -> dict[str, dict[str, Any]]:
    """What each installed engine computes in on this CPU when a model sets no ``dtype``, as
    its registry record says: OpenVINO in bf16 where the CPU has native bf16 (faster; greedy
    text may then differ from transformers' fp32), f32 elsewhere; torch and ONNX Runtime in f32."""
    from hfd.backends import registry

    out: dict[str, dict[str, Any]] = {}
    for r in registry.RECORDS:
        if r.cpu_precision is None or not report.engine(r.name).installed:
            continue
        precision, why = r.cpu_precision(report)
        out[r.name] = {"device": "cpu", "precision": precision, "why": why}
    return out
