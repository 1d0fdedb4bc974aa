"""How many threads a model engine gets.

A model's own ``threads`` wins, then the daemon-wide ``threads`` setting; 0 means automatic.
Automatic never oversubscribes: it counts the physical cores this process may run on (its
affinity mask, SMT siblings counted once, further limited by a cgroup CPU quota in a container)
and leaves one of them to the event loop, the transports and the applications the daemon serves
on the same box.

Why one core is left: an engine's intra-op parallel regions end in a barrier, so when any other
thread (the event loop, a client, another program) takes one of the engine's cores, the whole
operation waits for the descheduled thread. On the 2-core development box, with other work
running, two engine threads collapsed offline generation to 24–40 tokens/s in 3 of 4 runs where
one thread gave 232–421, and served runs collapsed at some concurrency levels; two threads won
(by 10–35%) only in runs where nothing else wanted a core. docs/batching.md has the numbers.

One exception, by engine and CPU: OpenVINO on a CPU that computes in bf16 (AVX-512-BF16 / AMX)
crashes at one thread and ran ~8x faster at two on the 2-core Intel box, so automatic threads
give it at least two there (``hfd.backends.openvino_cpu`` has the rule and the numbers).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from hfd.daemon.settings import ModelSpec, Settings

if TYPE_CHECKING:
    from hfd.backends.hardware import CpuInfo

# Cores left to the event loop and everything else when threads are automatic.
RESERVED_CORES = 1

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


def auto_threads(cores: int | None = None) -> int:
    cores = available_cores() if cores is None else cores
    return max(1, cores - RESERVED_CORES)


def engine_threads(
    settings: Settings,
    spec: ModelSpec,
    engine: str | None = None,
    device: str = "cpu",
    cpu: CpuInfo | None = None,
) -> int:
    """Threads for one model's engine: the model's setting, the daemon's, or automatic.

    An explicit number is used as given (several models sharing a box is the operator's call).
    Automatic depends on the engine and the CPU (``cpu``: the hardware report's, by default)
    where an engine needs it (OpenVINO with bf16 compute, see the module's doc)."""
    for asked in (spec.threads, settings.threads):
        if asked is not None and asked > 0:
            return asked
    auto = auto_threads()
    if engine == "openvino" and device.strip().lower() in ("cpu", ""):
        from hfd.backends import hardware, openvino_cpu

        cpu = cpu or hardware.probe_cpu()
        dtype = spec.options.get("dtype")
        try:
            return openvino_cpu.auto_threads(
                auto, cpu.usable_cores, cpu.features, str(dtype) if dtype else None
            )
        except ValueError:  # an unknown dtype: the engine refuses it at load, with its message
            return auto
    return auto
