"""How many threads a model engine gets.

A model's own ``threads`` wins, then the daemon-wide ``threads`` setting; 0 means automatic.
Automatic never oversubscribes: it starts from the CPUs this process may run on (its affinity
mask, further limited by a cgroup CPU quota in a container) and gives the engine all of them.
On the 2-core development box, giving the engine both cores was measured faster than leaving
one to the event loop, for generation and for embeddings, over HTTP and IPC (the event loop
mostly waits while an engine computes, and the engines release the GIL); see
docs/batching.md for the numbers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from hfd.daemon.settings import ModelSpec, Settings

# Cores left to the event loop and transports when threads are automatic; chosen from the
# measurement described above.
RESERVED_FOR_LOOP = 0

_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cpus() -> int:
    """CPUs this process may use: the affinity mask, capped by a cgroup v2 CPU quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS and Windows have no affinity call
        count = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        count = min(count, quota)
    return max(1, count)


def _cgroup_quota(path: Path = _CGROUP_CPU_MAX) -> int | None:
    """The cgroup v2 quota in whole CPUs (rounded up), or None when unlimited or unknown."""
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


def auto_threads(cpus: int | None = None) -> int:
    cpus = available_cpus() if cpus is None else cpus
    return max(1, cpus - RESERVED_FOR_LOOP)


def engine_threads(settings: Settings, spec: ModelSpec) -> int:
    """Threads for one model's engine: the model's setting, the daemon's, or automatic.

    An explicit number is used as given (several models sharing a box is the operator's call)."""
    for asked in (spec.threads, settings.threads):
        if asked is not None and asked > 0:
            return asked
    return auto_threads()
