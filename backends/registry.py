"""Engines by name, imported lazily so that ``import hfd`` never imports torch or OpenVINO."""

from __future__ import annotations

import importlib
from functools import cache

from hfd.backends.base import Backend

# name -> "module:attribute" of a zero-argument factory returning a Backend.
ENGINES: dict[str, str] = {
    "torch": "hfd.backends.torch_backend:TorchBackend",
    "openvino": "hfd.backends.openvino_backend:OpenVINOBackend",
    "onnxruntime": "hfd.backends.onnx_backend:OnnxBackend",
}


@cache
def get_backend(name: str) -> Backend:
    try:
        target = ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(sorted(ENGINES))}") from None
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    factory = getattr(module, attr)
    backend: Backend = factory()
    return backend
