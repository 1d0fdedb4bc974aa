"""What torch can compute on here: the CPU, NVIDIA and AMD GPUs (ROCm builds answer to
``cuda:N``), Apple's MPS; and why not the others.

torch is imported only when a GPU driver is present or on macOS (MPS): importing it costs
seconds and would only confirm what the missing driver already says.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any

from hfd.backends.hardware import (
    Device,
    EngineProbe,
    library_installed,
    nvidia_driver_reason,
    rocm_driver_reason,
)

_TORCH_KINDS = ("cuda", "rocm", "mps")


@functools.cache
def probe_torch() -> EngineProbe:
    installed, version, reason = library_installed("torch", "torch")
    if not installed:
        return EngineProbe.missing("torch", reason, kinds=_TORCH_KINDS)
    cpu = Device.on_host("torch")
    unavailable: dict[str, str] = {}
    nvidia = nvidia_driver_reason()
    rocm = rocm_driver_reason()
    want_mps = sys.platform == "darwin"
    if nvidia:
        unavailable["cuda"] = nvidia
    if rocm:
        unavailable["rocm"] = rocm
    if not want_mps:
        unavailable["mps"] = "MPS needs macOS on Apple silicon"
    if nvidia and rocm and not want_mps:
        return EngineProbe(
            name="torch", installed=True, version=version, devices=(cpu,), unavailable=unavailable
        )
    try:
        torch = importlib.import_module("torch")
    except Exception as exc:
        why = f"torch failed to import: {exc}"
        return EngineProbe.missing("torch", why, version=version, kinds=_TORCH_KINDS)
    devices = [cpu]
    if not (nvidia and rocm):
        devices.extend(_torch_gpus(torch, unavailable))
    if want_mps:
        try:
            if torch.backends.mps.is_available():
                devices.append(Device.on_host("torch", "mps", "mps"))
            elif not torch.backends.mps.is_built():
                unavailable["mps"] = "torch was built without MPS"
            else:
                unavailable["mps"] = "MPS not available (needs Apple silicon and macOS 12.3+)"
        except Exception as exc:
            unavailable["mps"] = f"MPS probe failed: {exc}"
    return EngineProbe(
        name="torch", installed=True, version=version, devices=tuple(devices), unavailable=unavailable
    )


def _torch_gpus(torch: Any, unavailable: dict[str, str]) -> list[Device]:
    hip = getattr(torch.version, "hip", None)
    kind = "rocm" if hip else "cuda"
    other = "cuda" if hip else "rocm"
    if not (hip or getattr(torch.version, "cuda", None)):
        why = "torch is a CPU-only build"
        unavailable.setdefault("cuda", why)
        unavailable.setdefault("rocm", why)
        return []
    unavailable.setdefault(other, f"torch is a {kind.upper()} build")
    try:
        if not torch.cuda.is_available():
            unavailable[kind] = f"torch sees no {kind.upper()} device"
            return []
        devices = []
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            capability = getattr(props, "gcnArchName", None) if hip else f"{props.major}.{props.minor}"
            devices.append(
                Device(
                    engine="torch",
                    id=f"cuda:{index}",
                    kind=kind,
                    name=str(props.name),
                    memory_bytes=int(props.total_memory),
                    capability=capability,
                    properties={"multiprocessors": int(getattr(props, "multi_processor_count", 0))},
                )
            )
        unavailable.pop(kind, None)
        return devices
    except Exception as exc:
        unavailable[kind] = f"{kind.upper()} probe failed: {exc}"
        return []
