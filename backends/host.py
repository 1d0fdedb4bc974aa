"""The host itself: the CPU (vendor, model, cores this process may use, vector extensions) and memory.

Probes read ``/proc`` and cgroup files on Linux and ``sysctl`` on macOS; they never raise (an
unreadable source gives a conservative answer). ``hfd.backends.hardware`` puts them in its report.
"""

from __future__ import annotations

import functools
import glob
import logging
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

# Feature names as hfd reports them, from the Linux /proc/cpuinfo flag that carries each.
_X86_FLAGS: dict[str, str] = {
    "sse4_2": "sse4_2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx_vnni": "avx_vnni",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16",
    "amx_tile": "amx_tile",
    "amx_bf16": "amx_bf16",
    "amx_int8": "amx_int8",
}
_ARM_FLAGS: dict[str, str] = {
    "asimd": "neon",
    "neon": "neon",
    "asimddp": "dotprod",
    "sve": "sve",
    "sve2": "sve2",
    "bf16": "bf16",
    "i8mm": "i8mm",
    "fphp": "fp16",
}
# macOS sysctl keys (hw.optional.*) -> feature name.
_MACOS_SYSCTL: dict[str, str] = {
    "hw.optional.avx2_0": "avx2",
    "hw.optional.fma": "fma",
    "hw.optional.avx512f": "avx512f",
    "hw.optional.avx512bw": "avx512bw",
    "hw.optional.avx512vl": "avx512vl",
    "hw.optional.avx512vnni": "avx512_vnni",
    "hw.optional.neon": "neon",
    "hw.optional.arm.FEAT_DotProd": "dotprod",
    "hw.optional.arm.FEAT_BF16": "bf16",
    "hw.optional.arm.FEAT_I8MM": "i8mm",
    "hw.optional.arm.FEAT_FP16": "fp16",
    "hw.optional.arm.FEAT_SME": "sme",
}


@dataclass(frozen=True)
class CpuInfo:
    vendor: str
    model: str
    arch: str  # platform.machine(): "x86_64", "aarch64", "arm64" ...
    logical_cores: int
    physical_cores: int
    usable_cores: int  # what this process may run on (affinity mask, cgroup quota)
    features: tuple[str, ...]

    def has(self, feature: str) -> bool:
        return feature in self.features

    @property
    def is_x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i686", "i386")

    @property
    def is_arm(self) -> bool:
        return self.arch.lower() in ("aarch64", "arm64") or self.arch.lower().startswith("armv")


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int
    limit_bytes: int | None = None  # a cgroup memory limit below the physical total, when set


# ----------------------------------------------------------------------------- CPU


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _sysctl(name: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=2.0, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _usable_cores(logical: int) -> int:
    usable = logical
    if hasattr(os, "sched_getaffinity"):
        try:
            usable = len(os.sched_getaffinity(0))
        except OSError:
            pass
    # A container's CPU quota (cgroup v2 "cpu.max": "<quota> <period>") caps what we really get.
    quota = _read_text("/sys/fs/cgroup/cpu.max")
    if quota:
        parts = quota.split()
        if len(parts) == 2 and parts[0] != "max":
            try:
                usable = min(usable, max(1, int(int(parts[0]) / int(parts[1]))))
            except ValueError:
                pass
    return usable


def _linux_physical_cores(cpuinfo: str) -> int | None:
    cores: set[tuple[str, str]] = set()
    for path in glob.glob("/sys/devices/system/cpu/cpu[0-9]*/topology/core_id"):
        core = _read_text(path)
        package = _read_text(path.replace("core_id", "physical_package_id"))
        if core is not None:
            cores.add(((package or "0").strip(), core.strip()))
    if cores:
        return len(cores)
    physical = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "physical id":
            physical = value.strip()
        elif key == "core id":
            cores.add((physical, value.strip()))
    return len(cores) or None


def parse_cpuinfo(text: str) -> tuple[str, str, set[str]]:
    """(vendor, model name, feature names) from Linux /proc/cpuinfo text (x86 or Arm)."""
    vendor = model = ""
    raw_flags: set[str] = set()
    implementer = part = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        value = value.strip()
        if key == "vendor_id" and not vendor:
            vendor = value
        elif key in ("model name", "hardware", "cpu model") and not model:
            model = value
        elif key in ("flags", "features") and not raw_flags:
            raw_flags = set(value.split())
        elif key == "cpu implementer" and not implementer:
            implementer = value
        elif key == "cpu part" and not part:
            part = value
    table = _X86_FLAGS if "avx" in raw_flags or "sse2" in raw_flags else _ARM_FLAGS
    features = {name for flag, name in table.items() if flag in raw_flags}
    if not vendor and implementer:
        vendor = {"0x41": "ARM", "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere"}.get(
            implementer.lower(), f"implementer {implementer}"
        )
    if not model and part:
        model = f"part {part}"
    return vendor, model, features


@functools.cache
def probe_cpu() -> CpuInfo:
    arch = platform.machine() or "unknown"
    logical = os.cpu_count() or 1
    vendor, model, physical = "", "", None
    features: set[str] = set()
    try:
        if sys.platform.startswith("linux"):
            text = _read_text("/proc/cpuinfo") or ""
            vendor, model, features = parse_cpuinfo(text)
            physical = _linux_physical_cores(text)
        elif sys.platform == "darwin":
            model = _sysctl("machdep.cpu.brand_string") or ""
            vendor = _sysctl("machdep.cpu.vendor") or ("Apple" if arch == "arm64" else "")
            physical = int(_sysctl("hw.physicalcpu") or 0) or None
            features = {name for key, name in _MACOS_SYSCTL.items() if _sysctl(key) == "1"}
            if arch == "arm64":
                features.add("neon")  # every Apple silicon core has it; older macOS lacks the key
        else:
            model = platform.processor()
    except Exception as exc:  # a probe never raises: report what we have
        log.warning("cpu probe failed", extra={"error": repr(exc)})
    return CpuInfo(
        vendor=vendor or "unknown",
        model=model or platform.processor() or "unknown",
        arch=arch,
        logical_cores=logical,
        physical_cores=physical or logical,
        usable_cores=_usable_cores(logical),
        features=tuple(sorted(features)),
    )


# ----------------------------------------------------------------------------- memory


def _meminfo_bytes(text: str, key: str) -> int | None:
    match = re.search(rf"^{key}:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def _cgroup_memory() -> tuple[int | None, int | None]:
    """(limit, current usage) of this process's cgroup, v2 then v1."""
    for limit_path, usage_path in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    ):
        limit = _read_text(limit_path)
        if limit and limit.strip().isdigit():
            usage = _read_text(usage_path)
            return int(limit.strip()), int(usage.strip()) if usage and usage.strip().isdigit() else None
    return None, None


@functools.cache
def probe_memory() -> MemoryInfo:
    total = available = 0
    limit: int | None = None
    try:
        if sys.platform.startswith("linux"):
            text = _read_text("/proc/meminfo") or ""
            total = _meminfo_bytes(text, "MemTotal") or 0
            available = _meminfo_bytes(text, "MemAvailable") or _meminfo_bytes(text, "MemFree") or 0
            cg_limit, cg_usage = _cgroup_memory()
            if cg_limit is not None and 0 < cg_limit < total:
                limit = cg_limit
                available = min(available, max(0, cg_limit - (cg_usage or 0)))
        elif sys.platform == "darwin":
            total = int(_sysctl("hw.memsize") or 0)
            available = _macos_available() or total
        elif hasattr(os, "sysconf"):
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            available = total
    except Exception as exc:
        log.warning("memory probe failed", extra={"error": repr(exc)})
    return MemoryInfo(total_bytes=total, available_bytes=available, limit_bytes=limit)


def _macos_available() -> int | None:
    try:
        out = subprocess.run(["vm_stat"], capture_output=True, text=True, timeout=2.0, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    page = re.search(r"page size of (\d+) bytes", out)
    pages = sum(int(m.group(1)) for m in re.finditer(r"Pages (?:free|inactive|speculative):\s+(\d+)", out))
    return pages * int(page.group(1)) if page else None
