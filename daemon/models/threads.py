"""How many threads a model engine gets, and why.

A model's own ``threads`` wins, then the daemon-wide ``threads`` setting; 0 means automatic.
Automatic never oversubscribes: it counts the physical cores this process may run on (its
affinity mask, SMT siblings counted once, further limited by a cgroup CPU quota in a container).
How many of them an engine gets depends on how its thread pool behaves when another program
takes a core (measured with ``scripts/bench`` on the 2-core AMD EPYC, AVX2, alone and with one
core held by a CPU-bound program; docs/batching.md and docs/benchmarks.md have the figures):

- OpenVINO and ONNX Runtime get every core. Their pools, as hfd sets them up
  (``hfd.backends.cpu_pools``: ONNX Runtime not spinning), ran 1.4-1.8x
  faster at two threads than at one on the idle AVX2 AMD box, and within about 10% of one thread
  with a core taken. On the 2-core AMD EPYC Zen 5 (AVX-512-BF16, no AMX), where OpenVINO computes
  in bf16, OpenVINO's two threads served 1.4-2.4x one thread (f32 there: the one-thread rule
  below) at 1 and 32 streams, 1.2-4.6x with a core busy, and embedded 1.2-2.2x at 64 clients;
  ONNX Runtime's embedded 1.1-1.6x at 64 clients and 1.2-1.4x at 1, but with a core busy only
  0.4-0.6x of one thread (unlike the AVX2 box; still every core, an open trade-off: one thread
  would give up the idle gain; docs/benchmarks.md, "Defaults on the AVX-512-BF16 AMD class").
  On the 2-core Intel Xeon (AMX) two threads are what OpenVINO needs anyway: bf16 compute
  crashed at one thread and served 2366 / 262 tokens/s at 32 / 1 streams at two
  (``hfd.backends.openvino_cpu`` keeps that floor for bf16 however threads are chosen).
- torch leaves one core (``RESERVED_CORES``) to the event loop, the doors and the applications
  on the box. Its OpenMP barriers wait for every thread of a parallel region, so when another
  thread takes one of the engine's cores, every operation waits for the descheduled one: two
  threads collapsed offline generation to 24-40 tokens/s in 3 of 4 loaded runs where one thread
  gave 232-421.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hfd.daemon.settings import ModelSpec, Settings

if TYPE_CHECKING:
    from hfd.backends.hardware import CpuInfo

# Cores left to the event loop and everything else when threads are automatic (torch).
RESERVED_CORES = 1
# Engines whose pools get every core when threads are automatic, and the figures why, per CPU
# class (``cpu_class``): each line cites what was measured on that class.
_ALL_CORES_WHY: dict[str, dict[str, str]] = {
    "openvino": {
        "avx2": "2 threads served 1.4-1.5x 1 thread on the 2-core AMD EPYC (AVX2), alike with a core busy",
        "avx512_bf16": "bf16 at 2 threads served 1.4-2.4x f32 at 1 thread (1 and 32 streams; 1.2-4.6x "
        "with a core busy) and embedded 1.2-2.2x at 64 clients on the 2-core AMD EPYC Zen 5 (AVX-512-BF16)",
        "amx": "bf16 at 2 threads served 2366 / 262 tokens/s at 32 / 1 streams on the 2-core AMX Xeon "
        "(torch: 298 / 57), where bf16 crashed at 1 thread",
    },
    "onnxruntime": {
        "avx2": "2 non-spinning threads embedded 1.8x 1 thread on the 2-core AMD EPYC (AVX2), alike with a core busy",
        "avx512_bf16": "2 non-spinning threads embedded 1.1-1.6x 1 thread at 64 clients, 1.2-1.4x at 1 (IPC), "
        "on the idle 2-core AMD EPYC Zen 5 (AVX-512-BF16); with a core busy there 0.4-0.6x",
    },
}
ALL_CORES_ENGINES = frozenset(_ALL_CORES_WHY)

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_SYS_CPU = Path("/sys/devices/system/cpu")


def allowed_cpus() -> set[int]:
    """Logical CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        return set(range(os.cpu_count() or 1))


def physical_cores(cpus: Iterable[int], sys_cpu: Path = _SYS_CPU) -> int:
    """Distinct physical cores among ``cpus`` (SMT siblings count once); the CPU count when the
    topology cannot be read."""
    cpus = list(cpus)
    cores: set[tuple[str, str]] = set()
    try:
        for cpu in cpus:
            topology = sys_cpu / f"cpu{cpu}" / "topology"
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
            cores.add((package, core))
    except OSError:
        return max(1, len(cpus))
    return max(1, len(cores))


def cgroup_quota(path: Path = _CGROUP_CPU_MAX) -> int | None:
    """The cgroup v2 CPU quota in whole CPUs (rounded up), or None when unlimited or unknown."""
    try:
        quota, period = path.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cores() -> int:
    """Physical cores this process may use, capped by its cgroup's CPU quota."""
    cores = physical_cores(allowed_cpus())
    quota = cgroup_quota()
    return max(1, min(cores, quota) if quota is not None else cores)


def auto_threads(cores: int | None = None, engine: str | None = None) -> int:
    """Automatic threads for ``engine`` on ``cores`` physical cores (default: what this process
    may use); an unnamed engine gets torch's rule, the one that never collapses."""
    return auto_choice(engine, available_cores() if cores is None else cores).threads


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    why: str  # one line, for ``hfd doctor``


def cpu_class(features: Iterable[str]) -> str:
    """The CPU class the thread rules were measured on that ``features`` (the hardware report's
    flags) belong to: "amx" (AMX-BF16), "avx512_bf16" (native bf16 without AMX), else "avx2"."""
    flags = set(features)
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "avx2"


def auto_choice(engine: str | None, cores: int, features: Iterable[str] = ()) -> ThreadChoice:
    """The automatic thread count of ``engine`` on a box with ``cores`` usable physical cores;
    ``features`` (the CPU's flags) pick which measurement the reason cites, not the count."""
    cores = max(1, cores)
    if engine in ALL_CORES_ENGINES:
        measured = _ALL_CORES_WHY[engine]
        basis = measured.get(cpu_class(features)) or measured["avx2"]
        return ThreadChoice(cores, f"all {cores} usable physical cores: {basis}")
    threads = max(1, cores - RESERVED_CORES)
    why = (
        f"{cores} usable physical cores less {RESERVED_CORES} for the event loop and other programs: "
        "two OpenMP threads collapsed generation to a tenth when another program took a core "
        "(2-core AMD EPYC, AVX2)"
    )
    return ThreadChoice(threads, why if threads < cores else "the one usable physical core")


def engine_threads(
    settings: Settings,
    spec: ModelSpec,
    engine: str | None = None,
    device: str = "cpu",
    cpu: CpuInfo | None = None,
) -> int:
    """Threads for one model's engine: the model's setting, the daemon's, or automatic."""
    return thread_choice(settings, spec, engine, device=device, cpu=cpu).threads


def thread_choice(
    settings: Settings,
    spec: ModelSpec,
    engine: str | None,
    *,
    device: str = "cpu",
    cpu: CpuInfo | None = None,
) -> ThreadChoice:
    """Threads for one model's engine and why: the model's setting, the daemon's, or automatic.

    An explicit number is used as given (several models sharing a box is the operator's call).
    Automatic depends on the engine (see the module's doc) and, for OpenVINO, on the CPU
    (``cpu``: the hardware report's, by default): bf16 compute gets at least two threads."""
    if spec.threads is not None and spec.threads > 0:
        return ThreadChoice(spec.threads, "the model's threads setting")
    if settings.threads is not None and settings.threads > 0:
        return ThreadChoice(settings.threads, "the daemon's threads setting")
    on_cpu = device.strip().lower() in ("cpu", "")
    if on_cpu and engine in ALL_CORES_ENGINES and cpu is None:
        from hfd.backends import hardware

        cpu = hardware.probe_cpu()
    choice = auto_choice(engine, available_cores(), cpu.features if cpu is not None and on_cpu else ())
    if engine == "openvino" and on_cpu and cpu is not None:
        from hfd.backends import openvino_cpu

        dtype = spec.options.get("dtype")
        try:
            floor = openvino_cpu.auto_threads(
                choice.threads, cpu.usable_cores, cpu.features, str(dtype) if dtype else None
            )
        except ValueError:  # an unknown dtype: the engine refuses it at load, with its message
            return choice
        if floor > choice.threads:
            return ThreadChoice(floor, f"{floor}: {openvino_cpu.one_thread_bf16_why(cpu.features)}")
    return choice
