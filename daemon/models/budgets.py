"""Memory budgets: per memory pool (host RAM, or one GPU's memory), what the loaded and loading
models reserve. The manager asks whether a model fits and which pool a device draws from; this
never calls into an engine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from collections.abc import Mapping
from typing import Any

from hfd.daemon.models.memory import DEFAULT_GPU_SHARE, DEFAULT_RAM_SHARE, RAM

log = logging.getLogger(__name__)


class Budgets:
    """Reservations per memory pool. Not thread-safe: the manager calls it from the event loop."""

    def __init__(self, limits: Mapping[str, int], device_pools: Mapping[str, str] | None = None) -> None:
        # pool -> bytes the models may use; a device with no pool of its own draws from RAM.
        self.limits: dict[str, int] = dict(limits)
        self._device_pools = {k.lower(): v for k, v in (device_pools or {}).items()}
        self._reserved: dict[str, tuple[str, int]] = {}  # model name -> (pool, bytes)

    def pool(self, device: str) -> str:
        d = device.strip().lower()
        if d in ("", "cpu"):
            return RAM
        if d == "cuda":
            d = "cuda:0"
        return self._device_pools.get(d, RAM)

    def limit(self, pool: str) -> int:
        return self.limits.get(pool, self.limits[RAM])

    def used(self, pool: str, *, excluding: str | None = None) -> int:
        return sum(b for name, (p, b) in self._reserved.items() if p == pool and name != excluding)

    def fits_alone(self, pool: str, nbytes: int) -> bool:
        return nbytes <= self.limit(pool)

    def room(self, pool: str, *, excluding: str | None = None) -> int:
        return self.limit(pool) - self.used(pool, excluding=excluding)

    def reserve(self, name: str, pool: str, nbytes: int) -> None:
        self._reserved[name] = (pool, nbytes)

    def release(self, name: str) -> None:
        self._reserved.pop(name, None)

    def reserved(self, name: str) -> int:
        entry = self._reserved.get(name)
        return entry[1] if entry else 0

    def snapshot(self) -> dict[str, dict[str, Any]]:
        pools = set(self.limits) | {p for p, _ in self._reserved.values()}
        out: dict[str, dict[str, Any]] = {}
        for pool in sorted(pools):
            out[pool] = {
                "budget_bytes": self.limit(pool),
                "used_bytes": self.used(pool),
                "models": sorted(n for n, (p, _) in self._reserved.items() if p == pool),
            }
        return out


def default_budgets(ram_budget: int, gpu_budget: int, report: Any | None = None) -> Budgets:
    """Budgets from the settings, defaulting to a share of what hardware detection found.

    ``report`` is a ``hfd.backends.hardware.HardwareReport`` (detected when None). A GPU whose
    memory size is known gets a pool of its own; other devices (an integrated GPU, an NPU, MPS on
    unified memory) draw from RAM.
    """
    if report is None:
        from hfd.backends import hardware

        report = hardware.detect()
    mem = report.memory
    physical = mem.limit_bytes or mem.total_bytes
    limits: dict[str, int] = {RAM: ram_budget if ram_budget > 0 else int(physical * DEFAULT_RAM_SHARE)}
    pools: dict[str, str] = {}
    for probe in (report.torch, report.openvino, report.onnxruntime):
        for dev in probe.devices:
            integrated = str(dev.properties.get("device_type", "")).startswith("integrated")
            if dev.kind in ("cpu", "mps", "npu") or integrated or not dev.memory_bytes:
                continue
            key = dev.id.lower()
            pools[key] = key
            limits[key] = gpu_budget if gpu_budget > 0 else int(dev.memory_bytes * DEFAULT_GPU_SHARE)
    if limits[RAM] <= 0:
        # Detection found nothing (an unusual platform): do not refuse every model.
        log.warning("no memory size detected; the RAM budget is unlimited")
        limits[RAM] = 1 << 62
    return Budgets(limits, pools)


def release_to_os() -> None:
    """Collect garbage and ask the C allocator to return free pages (glibc ``malloc_trim``), so
    an unloaded model's memory leaves the process instead of staying as its high-water mark."""
    import gc

    gc.collect()
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        pass
