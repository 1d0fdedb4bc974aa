"""What ONNX Runtime can compute on here: its execution providers, as devices."""

from __future__ import annotations

import functools
import importlib

from hfd.backends.hardware import (
    Device,
    EngineProbe,
    library_installed,
    nvidia_driver_reason,
    rocm_driver_reason,
)

# ONNX Runtime execution provider -> the device kind it drives.
_ORT_PROVIDER_KINDS: dict[str, str] = {
    "CUDAExecutionProvider": "cuda",
    "TensorrtExecutionProvider": "cuda",
    "ROCMExecutionProvider": "rocm",
    "MIGraphXExecutionProvider": "rocm",
    "CoreMLExecutionProvider": "coreml",
    "OpenVINOExecutionProvider": "openvino",
    "QNNExecutionProvider": "qnn",
    "DmlExecutionProvider": "directml",
    "CPUExecutionProvider": "cpu",
}


@functools.cache
def probe_onnxruntime() -> EngineProbe:
    installed, version, reason = library_installed("onnxruntime", "onnxruntime")
    if not installed:
        # GPU builds ship under other distribution names but import as the same module.
        return EngineProbe.missing("onnxruntime", reason)
    try:
        ort = importlib.import_module("onnxruntime")
        providers = tuple(ort.get_available_providers())
        version = version or getattr(ort, "__version__", None)
    except Exception as exc:
        return EngineProbe.missing("onnxruntime", f"onnxruntime failed to import: {exc}", version=version)
    devices = []
    for provider in providers:
        kind = _ORT_PROVIDER_KINDS.get(provider)
        if kind is None:  # e.g. AzureExecutionProvider: a remote endpoint, not a device
            continue
        if kind == "cpu":
            devices.append(Device.on_host("onnxruntime"))
        elif kind == "cuda" and nvidia_driver_reason() is None:
            if not any(d.kind == "cuda" for d in devices):
                devices.append(Device(engine="onnxruntime", id="cuda:0", kind="cuda", name=provider))
        elif kind == "rocm" and rocm_driver_reason() is None:
            if not any(d.kind == "rocm" for d in devices):
                devices.append(Device(engine="onnxruntime", id="cuda:0", kind="rocm", name=provider))
        elif kind not in ("cuda", "rocm"):  # CoreML, OpenVINO, QNN, DirectML: the provider is the device
            devices.append(Device(engine="onnxruntime", id=kind, kind=kind, name=provider))
    unavailable: dict[str, str] = {}
    if "CUDAExecutionProvider" not in providers:
        unavailable["cuda"] = "onnxruntime: no CUDAExecutionProvider (install onnxruntime-gpu)"
    elif nvidia_driver_reason():
        unavailable["cuda"] = f"onnxruntime: {nvidia_driver_reason()}"
    return EngineProbe(
        name="onnxruntime",
        installed=True,
        version=version,
        devices=tuple(devices),
        unavailable=unavailable,
        providers=providers,
    )
