"""What OpenVINO can compute on here: its CPU, Intel GPU and NPU plugins; and why not the others."""

from __future__ import annotations

import functools
import glob
import importlib
import sys
from typing import Any

from hfd.backends.hardware import (
    Device,
    EngineProbe,
    library_installed,
)

_OV_KINDS = ("intel_gpu", "npu", "cpu")


def ov_device_kind(device_id: str) -> str:
    base = device_id.split(".")[0].upper()
    return {"CPU": "cpu", "GPU": "intel_gpu", "NPU": "npu"}.get(base, base.lower())


def _ov_gpu_reason() -> str:
    if sys.platform.startswith("linux") and not glob.glob("/dev/dri/renderD*"):
        return "openvino: no GPU plugin device (no /dev/dri/renderD* node)"
    return "openvino: no GPU plugin device"


def _ov_npu_reason() -> str:
    if sys.platform.startswith("linux") and not glob.glob("/dev/accel/accel*"):
        return "openvino: no NPU plugin device (no /dev/accel/accel* node)"
    return "openvino: no NPU plugin device"


@functools.cache
def probe_openvino() -> EngineProbe:
    installed, version, reason = library_installed("openvino", "openvino")
    if not installed:
        return EngineProbe.missing("openvino", reason, kinds=_OV_KINDS)
    try:
        ov = importlib.import_module("openvino")
        core = ov.Core()
        ids = list(core.available_devices)
    except Exception as exc:
        why = f"openvino failed to start: {exc}"
        return EngineProbe.missing("openvino", why, version=version, kinds=_OV_KINDS)
    devices = []
    for device_id in ids:
        devices.append(_ov_device(core, device_id))
    unavailable: dict[str, str] = {}
    kinds = {d.kind for d in devices}
    if "intel_gpu" not in kinds:
        unavailable["intel_gpu"] = _ov_gpu_reason()
    if "npu" not in kinds:
        unavailable["npu"] = _ov_npu_reason()
    if "cpu" not in kinds:
        unavailable["cpu"] = "openvino: no CPU plugin (unsupported CPU)"
    return EngineProbe(
        name="openvino", installed=True, version=version, devices=tuple(devices), unavailable=unavailable
    )


def _ov_device(core: Any, device_id: str) -> Device:
    def prop(name: str) -> Any:
        try:
            return core.get_property(device_id, name)
        except Exception:
            return None

    full_name = prop("FULL_DEVICE_NAME") or device_id
    caps = prop("OPTIMIZATION_CAPABILITIES")
    memory = prop("GPU_DEVICE_TOTAL_MEM_SIZE") if device_id.startswith("GPU") else None
    properties: dict[str, Any] = {}
    device_type = prop("DEVICE_TYPE")
    if device_type is not None:
        properties["device_type"] = str(device_type).rsplit(".", 1)[-1].lower()
    return Device(
        engine="openvino",
        id=device_id,
        kind=ov_device_kind(device_id),
        name=str(full_name),
        memory_bytes=int(memory) if memory else None,
        capability=",".join(str(c) for c in caps) if caps else None,
        properties=properties,
    )
